"""Step time and peak memory of attention-selective fine-tuning, side by side, in one run.

Configs: full fine-tuning (every parameter), full(QKV), full(QV), our LoRA(QV) r=8, and PEFT LoRA r=8
built directly with PEFT as a user would (``get_peft_model`` + AdamW over its trainable parameters).
Models: MiniLM (real weights; batch 32, length 128, median over 20 timed steps) and a GPT-2-small-shaped
random model (12 layers, 768 wide, GPT-2 vocabulary; batch 8, length 128, median over 10 timed steps).
For GPT-2 a PEFT user can only target the whole fused ``c_attn`` (PEFT cannot restrict LoRA to its
Q and V rows), so "PEFT LoRA(q,v)" there is LoRA on all of ``c_attn``; the JSON says so.

Step time: the five configs of a model live in one process and take their steps round-robin
(config 1 step, config 2 step, ..., repeat), so load from other jobs on this shared machine falls on all
configs alike and the ratios stay fair. A step = forward + backward + optimizer step + zero_grad on fixed
random tokens; warm-up rounds are not timed. Peak memory: each (model, config) also runs alone in a fresh
subprocess for a few steps so that its peak RSS (``ru_maxrss``) is its own.
Writes ``benchmarks/results/finetune_speed.json``.

    nice -n 5 flock /tmp/leantune-bench.lock .venv/bin/python benchmarks/finetune_speed.py
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "finetune_speed.json"
CONFIGS = ["full_ft", "full_qkv", "full_qv", "lora_qv", "peft_lora_qv"]
MODELS = {
    "minilm": {"batch": 32, "length": 128, "steps": 20, "warmup": 2},
    "gpt2-small-random": {"batch": 8, "length": 128, "steps": 10, "warmup": 1},
}
LR, RANK, ALPHA, DROPOUT = 1e-4, 8, 16.0, 0.05


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build_model(name: str):
    import torch
    import transformers as tf

    from leantune.models import load_model

    torch.manual_seed(0)
    if name == "minilm":
        return load_model("minilm", head="seq-cls", num_labels=2, dtype="float32"), 30522, ["query", "value"]
    config = tf.GPT2Config(n_layer=12, n_embd=768, n_head=12, n_positions=1024, vocab_size=50257, num_labels=2,
                           pad_token_id=50256)
    return tf.GPT2ForSequenceClassification(config), 50257, ["c_attn"]


def setup(model_name: str, config: str):
    """(model, optimizer, info) for one config, in train mode."""
    import torch

    from leantune.finetune.adapters import attach
    from leantune.finetune.config import FinetuneConfig
    from leantune.finetune.groups import param_groups

    model, vocab, peft_targets = build_model(model_name)
    info = {"vocab": vocab}
    if config == "peft_lora_qv":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=RANK, lora_alpha=ALPHA, lora_dropout=DROPOUT,
                                                 target_modules=peft_targets))
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LR)
        info["peft_target_modules"] = peft_targets
    else:
        targets, method = {"full_ft": ("all", "full"), "full_qkv": ("qkv", "full"), "full_qv": ("qv", "full"),
                           "lora_qv": ("qv", "lora")}[config]
        cfg = FinetuneConfig(targets=targets, method=method, rank=RANK, alpha=ALPHA, dropout=DROPOUT, lr=LR,
                             v_lr_ratio=4.0)
        ad = attach(model, targets, method, RANK, ALPHA, DROPOUT)
        opt = torch.optim.AdamW(param_groups(ad, cfg))
    info["trainable_params"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return model.train(), opt, info


def batch(model_name: str, vocab: int):
    import torch

    spec = MODELS[model_name]
    g = torch.Generator().manual_seed(0)
    x = torch.randint(1000, vocab - 1, (spec["batch"], spec["length"]), generator=g)
    return {"input_ids": x, "attention_mask": torch.ones_like(x), "labels": torch.randint(0, 2, (spec["batch"],),
                                                                                         generator=g)}


def step(model, opt, inputs) -> float:
    t0 = time.perf_counter()
    model(**inputs).loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


def memory_one(model_name: str, config: str, steps: int = 3) -> dict:
    """Run alone (fresh process): peak RSS after a few steps (optimizer state allocated by step 1)."""
    model, opt, info = setup(model_name, config)
    inputs = batch(model_name, info["vocab"])
    rss_setup = rss_mb()
    for _ in range(steps):
        step(model, opt, inputs)
    return {"rss_after_setup_mb": rss_setup, "peak_rss_mb": rss_mb(), "trainable_params": info["trainable_params"],
            **{k: v for k, v in info.items() if k == "peft_target_modules"}}


def time_interleaved(model_name: str, configs: list[str]) -> dict:
    import torch

    spec = MODELS[model_name]
    runs = {c: setup(model_name, c) for c in configs}
    inputs = batch(model_name, runs[configs[0]][2]["vocab"])
    times = {c: [] for c in configs}
    for r in range(spec["warmup"] + spec["steps"]):
        for c in configs:
            model, opt, _ = runs[c]
            t = step(model, opt, inputs)
            if r >= spec["warmup"]:
                times[c].append(t)
        print(f"    round {r + 1}/{spec['warmup'] + spec['steps']}: "
              + ", ".join(f"{c} {times[c][-1] if times[c] else t:.2f}s" for c in configs), flush=True)
    return {c: {"step_time_s_median": statistics.median(ts), "step_times_s": ts, "timed_steps": len(ts),
                "torch_threads": torch.get_num_threads()} for c, ts in times.items()}


def markdown(report: dict) -> str:
    lines = ["| model | config | trainable params | step time median (s) | timed steps | peak RSS (MB) |",
             "|---|---|---|---|---|---|"]
    for r in report["results"]:
        lines.append(f"| {r['model']} | {r['config']} | {r['trainable_params']:,} | {r['step_time_s_median']:.3f} | "
                     f"{r['timed_steps']} | {r['peak_rss_mb']:.0f} |")
    lines += ["", "| check | value | met |", "|---|---|---|"]
    lines += [f"| {k} | {v['value']:.3f} | {'yes' if v['met'] else 'NO'} |" for k, v in report["checks"].items()]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="*", default=list(MODELS))
    ap.add_argument("--configs", nargs="*", default=CONFIGS)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--summary-only", action="store_true", help="print the saved results as markdown")
    ap.add_argument("--child", nargs=2, metavar=("MODEL", "CONFIG"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        print("RESULT " + json.dumps(memory_one(*args.child)), flush=True)
        return
    if args.summary_only:
        print(markdown(json.loads(OUT.read_text(encoding="utf-8"))))
        return

    import peft
    import transformers

    results = []
    for model_name in args.models:
        mem = {}
        for config in args.configs:
            print(f"[{datetime.datetime.now():%H:%M:%S}] {model_name} {config}: peak memory alone ...", flush=True)
            threads = ["--threads", str(args.threads)] if args.threads else []
            proc = subprocess.run([sys.executable, __file__, "--child", model_name, config, *threads],
                                  capture_output=True,
                                  text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, cwd=ROOT)
            line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode != 0 or not line:
                raise SystemExit(f"{model_name} {config} failed:\n{proc.stderr[-3000:]}")
            mem[config] = json.loads(line[0][len("RESULT "):])
            print(f"    peak RSS {mem[config]['peak_rss_mb']:.0f} MB", flush=True)
        print(f"[{datetime.datetime.now():%H:%M:%S}] {model_name}: step times, configs interleaved ...", flush=True)
        timing = time_interleaved(model_name, args.configs)
        for config in args.configs:
            r = {"model": model_name, "config": config, "batch": MODELS[model_name]["batch"],
                 "length": MODELS[model_name]["length"], **timing[config], **mem[config],
                 "measured_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                 "command": "nice -n 5 flock /tmp/leantune-bench.lock .venv/bin/python benchmarks/finetune_speed.py "
                            + " ".join(sys.argv[1:])}
            print(f"    {config}: step {r['step_time_s_median']:.3f} s, peak RSS {r['peak_rss_mb']:.0f} MB, "
                  f"trainable {r['trainable_params']:,}", flush=True)
            results.append(r)

    # merge with earlier runs of other models (e.g. `--models minilm` now, `--models gpt2-small-random` later)
    if OUT.is_file():
        done = {(r["model"], r["config"]) for r in results}
        earlier = json.loads(OUT.read_text(encoding="utf-8")).get("results", [])
        results = [r for r in earlier if (r["model"], r["config"]) not in done] + results
    by = {(r["model"], r["config"]): r for r in results}
    checks = {}
    for m in sorted({r["model"] for r in results}):
        if (m, "full_qv") in by and (m, "full_ft") in by:
            ratio = by[m, "full_qv"]["step_time_s_median"] / by[m, "full_ft"]["step_time_s_median"]
            checks[f"{m}: full(QV) / full FT step time <= 0.8"] = {"value": ratio, "met": ratio <= 0.8}
        if (m, "lora_qv") in by and (m, "peft_lora_qv") in by:
            t = by[m, "lora_qv"]["step_time_s_median"] / by[m, "peft_lora_qv"]["step_time_s_median"]
            mem = by[m, "lora_qv"]["peak_rss_mb"] / by[m, "peft_lora_qv"]["peak_rss_mb"]
            checks[f"{m}: our LoRA(QV) / PEFT LoRA step time <= 1"] = {"value": t, "met": t <= 1.0}
            checks[f"{m}: our LoRA(QV) / PEFT LoRA peak RSS <= 1"] = {"value": mem, "met": mem <= 1.0}
    report = {
        "benchmark": "finetune_speed",
        "command": "nice -n 5 flock /tmp/leantune-bench.lock .venv/bin/python benchmarks/finetune_speed.py "
                   + " ".join(sys.argv[1:]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count(), "note": "2-core machine shared with another engineer's jobs"},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__},
        "settings": {"torch_threads": torch.get_num_threads(), "lr": LR, "rank": RANK, "alpha": ALPHA, "dropout": DROPOUT, "models": MODELS},
        "results": results, "checks": checks,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    for k, v in checks.items():
        print(f"{k}: {v['value']:.3f} {'met' if v['met'] else 'NOT met'}")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()

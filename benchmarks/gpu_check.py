"""A prepared GPU check (issue 13): half precision, search/apply, LoRA(QV) steps and speeds, one JSON file.

    .venv/bin/python benchmarks/gpu_check.py                      # on a GPU box: cuda, all models (< 8 min)
    .venv/bin/python benchmarks/gpu_check.py --device cpu --tiny  # CI / CPU: tiny models only (tests call this)

Models (random weights: real ones are too big to carry to a GPU box): the tiny llama / gpt2 / gpt_neox of
tests/tiny.py (4 layers), and without ``--tiny`` a GPT-2-small-shaped model (12 x 768) and a model with
SmolLM2-135M's config (Llama, hidden 576, 30 layers, 9 heads / 3 kv heads, intermediate 1536, tied
embeddings, rope_theta 100000). Every model gets the real GPT-2 tokenizer, so the SmolLM2-shaped model's
vocabulary is 50257 instead of 49152 (recorded under ``deviations``). Task: SST-2 from ../shared/data.

Per model and half dtype (bfloat16, float16):
* ``eval``: ICL accuracy vs float32, max/mean |log-prob difference|, prediction agreement; a non-finite
  float16 result is recorded as the LeantuneError leantune raises (never a NaN accuracy);
* ``search``: ``icl search --strategy grid`` on the last two layers (mlp, attn; rates 0, 0.5, 0.9; ``--tiny``:
  mlp, rates 0, 0.9), and the
  same search with a 1 KB ``--reuse-memory`` (states kept on the CPU): journals must be identical;
* ``apply``: the chosen edit (a fixed one if none was chosen) written dense and factorized in that dtype,
  max |logit difference| between the two, and the saved dtype;
* ``lora``: a few LoRA(QV) steps (float32 weights, autocast to the half dtype, a GradScaler for float16):
  losses finite, K rows bit-identical after merging.
Speeds (on the GPT-2-small-shaped model; the tiny gpt2 with ``--tiny``): our eval vs lm-evaluation-harness,
our grid search vs the seed loop (benchmarks/seed_baseline.py; a few candidates timed, extrapolated), our
LoRA(QV) train step vs PEFT's LoRA on the same model.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from common import RESULTS, machine  # noqa: E402  (also puts the repo on sys.path, sets offline mode)

HALF = ("bfloat16", "float16")


# --- models ---------------------------------------------------------------------------------------------
def _configs(tiny: bool) -> dict:
    import transformers as tf
    from tiny import TINY_CONFIGS

    out = {}
    for fam in ("llama", "gpt2", "gpt_neox"):
        cfg = TINY_CONFIGS[fam]()
        cfg.vocab_size = 50257
        if fam == "gpt2":
            cfg.n_positions, cfg.n_layer = 1024, 4
        else:
            cfg.max_position_embeddings, cfg.num_hidden_layers = 1024, 4
        out[f"tiny-{fam}"] = cfg
    if not tiny:
        out["gpt2-small-random"] = tf.GPT2Config(n_layer=12, n_embd=768, n_head=12, vocab_size=50257,
                                                 n_positions=1024)
        out["smollm2-135m-config-random"] = tf.LlamaConfig(
            hidden_size=576, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
            intermediate_size=1536, vocab_size=50257, tie_word_embeddings=True, rope_theta=100000.0,
            max_position_embeddings=8192, rms_norm_eps=1e-5, bos_token_id=0, eos_token_id=0, head_dim=64)
    return out


def save_model(name: str, cfg, root: Path) -> Path:
    import transformers as tf

    from leantune.models import gpt2_tokenizer_offline

    d = root / name
    torch.manual_seed(0)
    model = tf.AutoModelForCausalLM.from_config(cfg)
    if name.startswith("tiny-"):  # random biases, as in tests/tiny.py
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n.endswith("bias"):
                    p.normal_(0, 0.02)
    model.save_pretrained(d)
    gpt2_tokenizer_offline().save_pretrained(d)
    return d


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


# --- sections -------------------------------------------------------------------------------------------
def check_eval(model_dir: Path, device: str, n: int, shots: int) -> dict:
    from leantune.errors import LeantuneError
    from leantune.icl.evaluator import ICLEvaluator
    from leantune.icl.splits import make_icl_data
    from leantune.models import gpt2_tokenizer_offline, load_model
    from leantune.tasks import get_task

    task = get_task("sst2")
    data = make_icl_data(task, shots, None, n, 0)
    ev = ICLEvaluator(gpt2_tokenizer_offline(), task, data.demos, data.test, batch_size=16)
    res = {}
    for dtype in ("float32",) + HALF:
        model = load_model(str(model_dir), head="causal-lm", dtype=dtype, device=device)
        try:
            _sync(device)
            t0 = time.perf_counter()
            r = ev.evaluate(model)
            _sync(device)
            res[dtype] = {"accuracy": r.metrics["accuracy"], "seconds": time.perf_counter() - t0,
                          "logprobs": [p["logprobs"] for p in r.predictions],
                          "preds": [p["pred"] for p in r.predictions]}
        except LeantuneError as e:
            res[dtype] = {"error": str(e)}
        del model
    ref = res["float32"]
    out = {"n": n, "shots_per_class": shots, "float32": {"accuracy": ref["accuracy"], "seconds": ref["seconds"],
                                                          "predicted_classes": sorted(set(ref["preds"]))}}
    for dtype in HALF:
        r = res[dtype]
        if "error" in r:
            out[dtype] = r
            continue
        a, b = torch.tensor(ref["logprobs"]), torch.tensor(r["logprobs"])
        differ = [i for i, (p, q) in enumerate(zip(ref["preds"], r["preds"])) if p != q]
        margins = (a[:, 0] - a[:, 1]).abs() if a.shape[1] == 2 else None
        out[dtype] = {"accuracy": r["accuracy"], "seconds": r["seconds"],
                      "max_abs_logprob_diff": float((a - b).abs().max()),
                      "mean_abs_logprob_diff": float((a - b).abs().mean()),
                      "prediction_agreement": 1 - len(differ) / len(ref["preds"]),
                      "differing_examples_float32_margin": [float(margins[i]) for i in differ] if margins is not None
                      else None}
    return out


def _journal(d: Path) -> list:
    lines = (d / "candidates.jsonl").read_text().splitlines()
    return [(r["key"], r["val_correct"]) for r in map(json.loads, lines)]


def check_search_apply(model_dir: Path, device: str, dtype: str, n_val: int, work: Path, tiny: bool) -> dict:
    from leantune.arch import get_arch
    from leantune.errors import LeantuneError
    from leantune.models import load_model
    from leantune.svd.edits import Edit, edit_record
    from leantune.recipes.icl_apply import icl_apply
    from leantune.recipes.icl_search import icl_search

    common = dict(task="sst2", strategy="grid", layers="last2", modules="mlp" if tiny else "mlp,attn",
                  rates="0,0.9" if tiny else "0,0.5,0.9", shots=2,
                  n_val=n_val, n_test=n_val, seed=0, tokenizer="gpt2-offline", dtype=dtype, device=device,
                  progress=False)
    out = {}
    try:
        t0 = time.perf_counter()
        s = icl_search(str(model_dir), out=str(work / f"search-{dtype}"), **common)
        out["search"] = {"seconds": time.perf_counter() - t0, "chosen_edits": s["chosen_edits"],
                         "validation": s["validation"], "test": s["test"], "reuse_memory": s["memory"]["reuse"],
                         "candidates": s["candidates"]}
        if not tiny or dtype == "bfloat16":  # (CI: once is enough)
            b = icl_search(str(model_dir), out=str(work / f"search-{dtype}-budget"), reuse_memory="1KB",
                           reuse_overflow="cpu", **common)
            out["search_with_1KB_reuse_memory_identical"] = (
                _journal(work / f"search-{dtype}-budget") == _journal(work / f"search-{dtype}")
                and b["chosen_edits"] == s["chosen_edits"] and b["test"] == s["test"])
    except LeantuneError as e:
        out["search"] = {"error": str(e)}
        s = {"chosen_edits": []}
    edit = work / f"edit-{dtype}.json"
    base = load_model(str(model_dir), head="causal-lm", dtype=dtype, device=device)
    last = get_arch(base).num_layers - 1
    edits = [Edit(**e) for e in s["chosen_edits"]] or [Edit(last, "mlp", 0.9), Edit(last - 1, "v", 0.5)]
    edit.write_text(json.dumps(edit_record(base, str(model_dir), edits, "float32")))
    del base
    for kind in ("dense", "factorized"):
        icl_apply(str(model_dir), str(edit), str(work / f"{kind}-{dtype}"), factorize=kind == "factorized",
                  dtype=dtype, device=device, tokenizer="gpt2-offline")
    dense = load_model(str(work / f"dense-{dtype}"), head="causal-lm", device=device)
    fact = load_model(str(work / f"factorized-{dtype}"), head="causal-lm", device=device)
    x = torch.randint(1000, 50000, (4, 64), generator=torch.Generator().manual_seed(0)).to(device)
    with torch.no_grad():
        ld, lf = dense(x).logits.float(), fact(x).logits.float()
    out["apply"] = {"edits": [e.__dict__ for e in edits], "dense_dtype": str(dense.dtype), "factorized_dtype":
                    str(fact.dtype), "max_abs_logit_diff_factorized_vs_dense": float((ld - lf).abs().max()),
                    "max_abs_logit": float(ld.abs().max()),
                    "argmax_agreement": float((ld.argmax(-1) == lf.argmax(-1)).float().mean())}
    return out


def check_lora(model_dir: Path, device: str, dtype: str, steps: int) -> dict:
    from leantune.arch import get_arch
    from leantune.finetune.adapters import attach
    from leantune.finetune.config import FinetuneConfig
    from leantune.finetune.groups import param_groups
    from leantune.models import load_model

    model = load_model(str(model_dir), head="seq-cls", num_labels=2, dtype="float32", device=device)
    model.config.pad_token_id = 0
    arch = get_arch(model)
    k_before = [arch.matrix(i, "k").read() for i in range(arch.num_layers)]
    cfg = FinetuneConfig(targets="qv", method="lora", rank=8, alpha=16, dropout=0.0, lr=1e-3, v_lr_ratio=4)
    ad = attach(model, "qv", "lora", 8, 16, 0.0)
    opt = torch.optim.AdamW(param_groups(ad, cfg))
    scaler = torch.amp.GradScaler(device.split(":")[0]) if dtype == "float16" and device.startswith("cuda") else None
    g = torch.Generator().manual_seed(0)
    x = torch.randint(1000, 50000, (8, 64), generator=g).to(device)
    y = torch.randint(0, 2, (8,), generator=g).to(device)
    model.train()
    losses = []
    for _ in range(steps):
        with torch.autocast(device.split(":")[0], dtype=getattr(torch, dtype)):
            loss = model(input_ids=x, labels=y).loss
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss))
    ad.merge()
    arch = get_arch(model)
    k_same = all(torch.equal(arch.matrix(i, "k").read(), k) for i, k in enumerate(k_before))
    return {"steps": steps, "losses": losses, "losses_finite": all(map(lambda v: v == v and abs(v) != float("inf"),
                                                                        losses)),
            "k_rows_bit_identical_after_merge": k_same}


# --- speeds ---------------------------------------------------------------------------------------------
def speed_eval(model_dir: Path, device: str, n: int, shots: int, work: Path) -> dict:
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from leantune.icl.evaluator import ICLEvaluator
    from leantune.icl.lm_eval_task import write_lm_eval_task
    from leantune.icl.splits import make_icl_data
    from leantune.models import gpt2_tokenizer_offline, load_model
    from leantune.tasks import get_task

    task = get_task("sst2")
    data = make_icl_data(task, shots, None, n, 0)
    model = load_model(str(model_dir), head="causal-lm", dtype="float32", device=device)
    _sync(device)
    t0 = time.perf_counter()
    ev = ICLEvaluator(gpt2_tokenizer_offline(), task, data.demos, data.test, batch_size=16)
    res = ev.evaluate(model)
    _sync(device)
    ours = time.perf_counter() - t0
    del model
    tasks_dir = write_lm_eval_task(task, data.demos, data.test, work, name="gpucheck_sst2")
    t0 = time.perf_counter()
    le = simple_evaluate(model="hf", model_args=f"pretrained={model_dir},dtype=float32", tasks=["gpucheck_sst2"],
                         num_fewshot=2 * shots, batch_size=16, device=device,
                         task_manager=TaskManager(include_path=str(tasks_dir)))
    theirs = time.perf_counter() - t0
    return {"n": n, "leantune_s": ours, "lm_eval_s": theirs, "speedup": theirs / ours,
            "leantune_accuracy": res.metrics["accuracy"],
            "lm_eval_accuracy": le["results"]["gpucheck_sst2"]["acc,none"]}


def speed_search(model_dir: Path, device: str, n_val: int, seed_candidates: int, work: Path, tiny: bool) -> dict:
    from seed_baseline import seed_low_rank, seed_predict

    from leantune.arch import get_arch
    from leantune.icl.evaluator import build_prefix
    from leantune.icl.splits import make_icl_data
    from leantune.models import gpt2_tokenizer_offline, load_model
    from leantune.svd.edits import module_matrices
    from leantune.recipes.icl_search import icl_search
    from leantune.tasks import get_task

    rates = [0.9] if tiny else [0.5, 0.75, 0.9, 0.95]
    _sync(device)
    t0 = time.perf_counter()
    s = icl_search(str(model_dir), task="sst2", strategy="grid", layers="last2", modules="mlp,attn",
                   rates=[0.0] + rates, shots=2, n_val=n_val, n_test=8, seed=0, tokenizer="gpt2-offline",
                   device=device, dtype="float32", out=str(work / "speed-search"), progress=False)
    _sync(device)
    ours = s["seconds"]["search_this_run"]
    n_cand = s["candidates"]["total"]
    task = get_task("sst2")
    data = make_icl_data(task, 2, n_val, 8, 0)
    tok = gpt2_tokenizer_offline()
    model = load_model(str(model_dir), head="causal-lm", dtype="float32", device=device)
    arch = get_arch(model)
    prefix = build_prefix(task, data.demos)
    contexts = [task.render_context(r) for r in data.val]
    times = []
    for i in range(seed_candidates):  # the seed loop: svd_lowrank per candidate, batch 1, full forward
        layer, rate = arch.num_layers - 1, rates[i % len(rates)]
        mats = [arch.matrix(layer, n) for n in module_matrices(arch, "mlp")]
        saved = [m.read() for m in mats]
        _sync(device)
        t1 = time.perf_counter()
        for m in mats:
            m.write(seed_low_rank(m.read(), rate).to(m.weight.dtype))
        seed_predict(model, tok, prefix, contexts, list(task.label_words), device=device)
        _sync(device)
        times.append(time.perf_counter() - t1)
        for m, w in zip(mats, saved):
            m.write(w)
    per = statistics.mean(times)
    return {"n_val": n_val, "candidates": n_cand, "leantune_search_s": ours, "seed_loop_s_per_candidate": per,
            "seed_loop_candidates_timed": len(times), "seed_loop_extrapolated_s": per * n_cand,
            "speedup": per * n_cand / ours}


def speed_lora(model_dir: Path, device: str, steps: int) -> dict:
    import transformers as tf
    from peft import LoraConfig, get_peft_model

    from leantune.finetune.adapters import attach
    from leantune.finetune.config import FinetuneConfig
    from leantune.finetune.groups import param_groups
    from leantune.models import load_model

    g = torch.Generator().manual_seed(0)
    x = torch.randint(1000, 50000, (8, 128), generator=g).to(device)
    y = torch.randint(0, 2, (8,), generator=g).to(device)
    runs = {}
    for name in ("leantune_lora_qv", "peft_lora"):
        model = load_model(str(model_dir), head="seq-cls", num_labels=2, dtype="float32", device=device)
        model.config.pad_token_id = 0
        if name == "peft_lora":
            fused = isinstance(model, tf.GPT2PreTrainedModel)
            targets = ["c_attn"] if fused else ["q_proj", "v_proj"]  # PEFT cannot take Q and V of fused c_attn
            model = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=8, lora_alpha=16, lora_dropout=0.0,
                                                     target_modules=targets))
            opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
            runs[name] = (model.train(), opt, {"target_modules": targets})
        else:
            cfg = FinetuneConfig(targets="qv", method="lora", rank=8, alpha=16, dropout=0.0, lr=1e-4)
            ad = attach(model, "qv", "lora", 8, 16, 0.0)
            runs[name] = (model.train(), torch.optim.AdamW(param_groups(ad, cfg)), {})
    times = {k: [] for k in runs}
    for r in range(steps + 1):  # interleaved; the first round is warm-up
        for name, (model, opt, _) in runs.items():
            _sync(device)
            t0 = time.perf_counter()
            model(input_ids=x, labels=y).loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            _sync(device)
            if r:
                times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"batch": list(x.shape), "steps_timed": steps, **{f"{k}_step_s_median": v for k, v in med.items()},
            "peft_target_modules": runs["peft_lora"][2]["target_modules"],
            "ratio_leantune_over_peft": med["leantune_lora_qv"] / med["peft_lora"]}


# --- driver ---------------------------------------------------------------------------------------------
def _run(report: dict, key: tuple, fn, *args) -> None:
    t0 = time.perf_counter()
    node = report
    for k in key[:-1]:
        node = node.setdefault(k, {})
    try:
        node[key[-1]] = fn(*args)
    except Exception as e:  # recorded, not raised: one failing check must not hide the others
        node[key[-1]] = {"error": f"{type(e).__name__}: {e}"}
        report["errors"].append({"check": "/".join(key), "error": f"{type(e).__name__}: {e}",
                                 "traceback": traceback.format_exc()[-2000:]})
    print(f"[{time.perf_counter() - report['_t0']:6.1f}s] {'/'.join(key)} ({time.perf_counter() - t0:.1f}s)",
          flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="tiny models and sizes only (CPU / CI)")
    ap.add_argument("--out", default=str(RESULTS / "gpu_check.json"))
    args = ap.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device here; use --device cpu --tiny", file=sys.stderr)
        return 2
    n, n_val, steps, shots = (8, 8, 2, 1) if args.tiny else (200, 100, 10, 4)
    report = {"_t0": time.perf_counter(), "machine": machine(), "args": vars(args), "errors": [],
              "device_name": torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "cpu",
              "deviations": {"smollm2-135m-config-random": "vocab_size 50257 (GPT-2 tokenizer) instead of 49152"},
              "models": {}, "speed": {}}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name, cfg in _configs(args.tiny).items():
            d = save_model(name, cfg, root)
            _run(report, ("models", name, "eval"), check_eval, d, args.device, n, shots)
            families = ("tiny-gpt2", "gpt2-small-random", "smollm2-135m-config-random")
            if not args.tiny or name in families:
                for dtype in HALF:
                    work = root / f"{name}-work"
                    work.mkdir(exist_ok=True)
                    _run(report, ("models", name, dtype), check_search_apply, d, args.device, dtype, n_val, work,
                         args.tiny)
                    _run(report, ("models", name, dtype, "lora"), check_lora, d, args.device, dtype, steps)
        speed_model = "tiny-gpt2" if args.tiny else "gpt2-small-random"
        d = root / speed_model
        work = root / "speed"
        work.mkdir()
        _run(report, ("speed", "eval_vs_lm_eval"), speed_eval, d, args.device, n, shots, work)
        _run(report, ("speed", "search_vs_seed_loop"), speed_search, d, args.device, n_val, 1 if args.tiny else 3,
             work, args.tiny)
        _run(report, ("speed", "lora_qv_step_vs_peft"), speed_lora, d, args.device, steps)
    report["seconds"] = time.perf_counter() - report.pop("_t0")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1, default=str) + "\n")
    print(f"wrote {args.out} in {report['seconds']:.0f}s; {len(report['errors'])} error(s)")
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())

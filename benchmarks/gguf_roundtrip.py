"""GGUF round trip, checked with llama.cpp itself: SmolLM2's demo edit and a merged `--objective lm` QV LoRA
fine-tune are written back as GGUF by leantune, then llama.cpp (llama-cpp-python) scores the SST-2 label words
on the source file and on each written file.

Set-ups (fixed in advance, as in `leantune demo`): SST-2, the SVD paper's template, 200 examples of the dev
split drawn with seed 0.
* edit: 5 demonstrations per class (seed 0), the demo's chosen edit: layer 29 MLP, xi = 0.1;
* fine-tune: `finetune --objective lm` LoRA(QV) r=8 lambda=4 on SST-2 train, scored at 0 shots.
Each written file (`--gguf-type f32` and `keep`) is scored by llama.cpp and, reloaded through `--model`, by
leantune: agreement is per example (the same argmax label), on the same token ids (leantune's plan), so
only the two implementations differ. llama.cpp runs its own quantized kernels (Q4_1 / Q8_0 dot products
with activations quantized to 8 bits), leantune dequantized float32: the source file's agreement is the
floor to compare with. Speeds: llama.cpp's prompt throughput while scoring, and greedy generation of 64
tokens.

    .venv/bin/python benchmarks/gguf_roundtrip.py [--n 200] [--threads 1] [--ft-steps 10] [--skip-finetune]

needs `make llama` (llama-cpp-python); writes benchmarks/results/gguf_roundtrip.json.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import machine, save

from leantune.gguf_write import gguf_file_of
from leantune.icl.evaluator import ICLEvaluator
from leantune.icl.splits import make_icl_data
from leantune.models import load_model, load_tokenizer
from leantune.recipes.icl_apply import write_edit_gguf
from leantune.svd.api import apply_edit
from leantune.svd.edits import Edit, edit_record
from leantune.tasks import get_task

MODEL, TASK, SHOTS, SEED = "smollm2-135m", "sst2", 5, 0
SKIP_SOURCE = False
EDIT = [Edit(29, "mlp", 0.1)]  # the demo's choice on its validation split (README, `leantune demo`)


def llama_cpp_scores(path: Path, plan, threads: int) -> dict:
    """Per example, the summed log-probability of each choice's tokens, from llama.cpp's logits on exactly the
    token ids of leantune's plan (the demonstrations' KV state evaluated once and restored per row)."""
    from llama_cpp import Llama

    n_ctx = max(len(r) for r in plan.rows) + 8
    llm = Llama(model_path=str(path), n_ctx=n_ctx, n_batch=512, n_threads=threads, logits_all=True, verbose=False)
    prefix = list(plan.prefix_ids)
    llm.reset()
    if prefix:
        llm.eval(prefix)  # once: each row below starts from this KV state
    tokens, t0 = len(prefix), time.perf_counter()
    row_logprobs: dict[int, dict[int, np.ndarray]] = {}

    def row_scores(r: int) -> dict[int, np.ndarray]:  # position -> log-softmax, at the positions scored
        nonlocal tokens
        if r not in row_logprobs:
            llm.n_tokens = len(prefix)  # llama-cpp-python's eval drops the KV cells past n_tokens first
            rest = plan.rows[r][len(prefix):]
            llm.eval(rest)
            tokens += len(rest)
            row_logprobs[r] = {}
            for p in plan.needed[r]:
                z = np.asarray(llm.scores[p], dtype=np.float64)
                z = z - z.max()
                row_logprobs[r][p] = z - np.log(np.exp(z).sum())
        return row_logprobs[r]

    out = []
    for refs in plan.choices:
        out.append([float(sum(row_scores(c.row)[p][t] for p, t in zip(c.positions, c.targets))) for c in refs])
        row_logprobs.clear()  # rows are per example (the query differs): keep memory flat
    seconds = time.perf_counter() - t0
    return {"logprobs": out, "preds": [int(np.argmax(lp)) for lp in out], "prompt_tokens": tokens,
            "seconds": seconds, "prompt_tokens_per_s": tokens / seconds}


def llama_cpp_generation_speed(path: Path, prompt: list[int], threads: int, n: int = 64) -> float:
    """Greedy decoding tokens/s (the prompt evaluated first, not timed)."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), n_ctx=len(prompt) + n + 8, n_threads=threads, verbose=False)
    llm.reset()
    llm.eval(prompt)
    t0 = time.perf_counter()
    for _ in range(n):
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        llm.eval([token])
    return n / (time.perf_counter() - t0)


def leantune_scores(model, evaluator: ICLEvaluator) -> dict:
    r = evaluator.evaluate(model)
    return {"preds": [p["pred"] for p in r.predictions], "logprobs": [p["logprobs"] for p in r.predictions],
            "accuracy": r.metrics["accuracy"]}


def compare(name: str, path: Path, leantune: dict, llama: dict, labels: list[int], source_bytes: int) -> dict:
    agree = sum(a == b for a, b in zip(leantune["preds"], llama["preds"]))
    diff = np.abs(np.asarray(leantune["logprobs"]) - np.asarray(llama["logprobs"]))
    acc = sum(p == y for p, y in zip(llama["preds"], labels)) / len(labels)
    row = {"file": name, "bytes": path.stat().st_size, "size_vs_source": path.stat().st_size / source_bytes - 1,
           "agreement": agree / len(labels), "agree": agree, "n": len(labels),
           "accuracy_llama_cpp": acc, "accuracy_leantune": leantune["accuracy"],
           "logprob_abs_diff_median": float(np.median(diff)), "logprob_abs_diff_max": float(diff.max()),
           "llama_cpp_prompt_tokens_per_s": llama["prompt_tokens_per_s"], "llama_cpp_preds": llama["preds"]}
    print(f"  {name:28s} agree {agree}/{len(labels)}  acc llama.cpp {acc:.3f}  leantune {leantune['accuracy']:.3f}  "
          f"size {row['size_vs_source']:+.2%}  {llama['prompt_tokens_per_s']:.0f} prompt tok/s", flush=True)
    return row


def reload(path: Path, cache: Path):
    """The written file through --model (its own converted copy, in a cache removed at the end)."""
    old = os.environ.get("LEANTUNE_CACHE")
    os.environ["LEANTUNE_CACHE"] = str(cache)
    try:
        return load_model(str(path), head="causal-lm", dtype="float32")
    finally:
        if old is None:
            del os.environ["LEANTUNE_CACHE"]
        else:
            os.environ["LEANTUNE_CACHE"] = old


def run_setup(name, source, written, models, evaluator, labels, threads, cache) -> dict:
    """Scores of the source and each written file, by llama.cpp and leantune."""
    src_bytes = source.stat().st_size
    rows = [] if SKIP_SOURCE else [compare("source", source, leantune_scores(models["source"], evaluator),
                                           llama_cpp_scores(source, evaluator.plan, threads), labels, src_bytes)]
    for kind, path in written.items():
        lt = leantune_scores(reload(path, cache), evaluator)
        rows.append(compare(f"{name} --gguf-type {kind}", path, lt, llama_cpp_scores(path, evaluator.plan, threads),
                            labels, src_bytes))
    return {"rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)  # on a shared box 2 threads spin-wait: 5x slower
    ap.add_argument("--ft-steps", type=int, default=10)
    ap.add_argument("--ft-lr", type=float, default=5e-4)
    ap.add_argument("--skip-finetune", action="store_true")
    ap.add_argument("--skip-edit", action="store_true")
    ap.add_argument("--types", default="f32,keep", help="--gguf-type values to write and score")
    ap.add_argument("--name", default="gguf_roundtrip", help="results/NAME.json")
    ap.add_argument("--skip-source", action="store_true", help="score only the written files (a rerun)")
    args = ap.parse_args()
    global SKIP_SOURCE
    SKIP_SOURCE = args.skip_source
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        raise SystemExit("gguf_roundtrip needs llama-cpp-python: run `make llama` first") from None

    source = gguf_file_of(MODEL)  # the alias's installed .gguf
    work = Path(tempfile.mkdtemp(prefix="gguf-roundtrip-"))
    cache = work / "cache"
    task, tok = get_task(TASK), load_tokenizer(MODEL)
    result = {"what": "GGUF files written by leantune, scored by llama.cpp (llama-cpp-python) and by leantune",
              "model": MODEL, "source": source.name, "source_bytes": source.stat().st_size, "task": TASK,
              "n": args.n, "seed": SEED, "threads": args.threads, "machine": machine(),
              "command": "python benchmarks/gguf_roundtrip.py " + " ".join(sys.argv[1:])}
    try:
        import llama_cpp

        result["llama_cpp_python"] = llama_cpp.__version__
        base = load_model(MODEL, head="causal-lm", dtype="float32")

        types = args.types.split(",")
        data = make_icl_data(task, SHOTS, None, args.n, SEED)
        ev5 = ICLEvaluator(tok, task, data.demos, data.test)
        labels = [r["label"] for r in data.test]
        written = {}
        if not args.skip_edit:  # 1. the demo's SVD edit, 5 demonstrations per class
            run_edit(args, types, source, base, ev5, labels, written, result, work, cache)

        # 2. a merged --objective lm QV LoRA fine-tune, 0 shots
        if not args.skip_finetune:
            run_finetune(args, types, source, base, task, tok, result, work, cache)

        prompt = ev5.plan.rows[0][:256]
        result["generation_tokens_per_s"] = {
            "source": llama_cpp_generation_speed(source, prompt, args.threads),
            **{f"edit {k}": llama_cpp_generation_speed(p, prompt, args.threads) for k, p in written.items()}}
        print("greedy generation tok/s:", {k: round(v, 1) for k, v in result["generation_tokens_per_s"].items()})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("wrote", save(args.name, result))


def run_edit(args, types, source, base, ev5, labels, written, result, work, cache) -> None:
    record = edit_record(base, MODEL, EDIT, "float32")
    edited = load_model(MODEL, head="causal-lm", dtype="float32")
    apply_edit(edited, record)
    for kind in types:
        written[kind] = work / f"edit-{kind}.gguf"
        info = write_edit_gguf(edited, record, source, written[kind], kind)
        print(f"wrote {written[kind].name}: {[t['type'] for t in info['tensors']]}", flush=True)
    print("SVD edit (layer 29 mlp, xi 0.1), 5 shots per class:", flush=True)
    edit = run_setup("edit", source, written, {"source": base}, ev5, labels, args.threads, cache)
    in_memory = leantune_scores(edited, ev5)  # the edited model itself, never written
    edit["leantune_in_memory_edit"] = {"accuracy": in_memory["accuracy"]}
    f32 = next((r for r in edit["rows"] if r["file"].endswith(" f32")), None)
    if f32:
        edit["leantune_in_memory_edit"]["agreement_with_llama_cpp_f32"] = sum(
            a == b for a, b in zip(in_memory["preds"], f32["llama_cpp_preds"])) / len(labels)
    edit["prompt"] = {"shots_per_class": SHOTS, "edit": [vars(e) for e in EDIT]}
    result["edit"] = edit


def run_finetune(args, types, source, base, task, tok, result, work, cache) -> None:
    """A merged --objective lm QV LoRA fine-tune, scored at 0 shots."""
    from leantune.finetune.config import build_config
    from leantune.recipes.finetune import MergeConfig, finetune, merge

    cfg = build_config(model=MODEL, objective="lm", task=TASK, targets="qv", method="lora", rank=8, alpha=16,
                       lr=args.ft_lr, v_lr_ratio=4.0, max_steps=args.ft_steps, batch_size=8, max_length=64,
                       max_eval_samples=args.n, eval_every=args.ft_steps, icl_shots=SHOTS, seed=SEED,
                       out=str(work / "ft"), quiet=True, export_peft=False)
    t0 = time.perf_counter()
    metrics = finetune(cfg)
    ft_seconds = time.perf_counter() - t0
    ft_written = {}
    for kind in types:
        ft_written[kind] = work / f"ft-{kind}.gguf"
        merge(MergeConfig(adapter=str(work / "ft" / "adapter"), out_gguf=str(ft_written[kind]), gguf_type=kind))
    data0 = make_icl_data(task, 0, None, args.n, SEED)
    ev0 = ICLEvaluator(tok, task, [], data0.test)
    print(f"fine-tune ({args.ft_steps} steps, {ft_seconds:.0f} s), 0 shots:", flush=True)
    ft = run_setup("finetune", source, ft_written, {"source": base}, ev0, [r["label"] for r in data0.test],
                   args.threads, cache)
    ft["leantune_icl"] = metrics["icl"]  # before/after at 0 and 5 shots, on the adapted (unmerged) model
    ft["train"] = {"steps": metrics["train"]["steps"], "seconds": ft_seconds,
                   "train_loss": metrics["train"]["train_loss"], "lr_q": args.ft_lr, "lambda": 4.0,
                   "rank": 8, "batch_size": 8}
    result["finetune"] = ft


if __name__ == "__main__":
    main()

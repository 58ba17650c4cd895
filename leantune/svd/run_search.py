"""Recipe behind ``leantune icl search``: load, choose examples, search, test the winner, write it all.

Outputs in ``out``: ``run.json`` (the arguments; a different run in the same folder is refused),
``candidates.jsonl`` (journal), ``summary.json``, ``edit.json``, ``heatmap.png``,
``test_predictions.jsonl``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

from ..arch import get_arch
from ..errors import LeantuneError
from ..precision import model_dtype, parse_bytes
from ..runinfo import versions, write_json, write_jsonl
from .edits import edit_record, edited
from .journal import Journal
from .lowrank import SVDCache
from .search import BASELINE, Dist, Search, candidate_key
from .strategies import STRATEGIES, check_grid, parse_layers

PAPER_RATES = (0.0, 0.1, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995)

# Arguments that change what is computed: a rerun in the same folder must repeat them exactly.
SEMANTIC = ("model", "task", "strategy", "modules", "layers", "rates", "shots", "n_val", "n_test", "seed", "top_k",
            "svd_dtype", "evaluator", "calibrate", "tokenizer", "split", "dtype", "max_length")


def _dist() -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist()
    import torch.distributed as dist

    if not dist.is_initialized():
        if torch.cuda.is_available():  # one GPU per process: LOCAL_RANK -> cuda:LOCAL_RANK (see load_model)
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
        dist.init_process_group("gloo" if not torch.cuda.is_available() else "nccl")
    return Dist(dist.get_rank(), dist.get_world_size())


def _check_run_dir(out: Path, config: dict, rank: int) -> None:
    run_file = out / "run.json"
    wanted = {k: config[k] for k in SEMANTIC}
    if run_file.exists():
        had = json.loads(run_file.read_text())
        diff = sorted(k for k in SEMANTIC if had.get(k) != wanted.get(k))
        if diff:
            raise LeantuneError(f"{out} holds a search with different arguments ({', '.join(diff)}); "
                                "use a new --out folder or repeat the same arguments to resume")
    elif rank == 0:
        write_json(run_file, wanted)


def _evaluators(model_name, task, data, cfg, head):
    from ..icl.evaluator import ClassifierEvaluator, ICLEvaluator
    from ..icl.run_eval import tokenizer_for

    tok = tokenizer_for(model_name, cfg["tokenizer"], cfg["trust_remote_code"])
    if head == "seq-cls":
        return (ClassifierEvaluator(tok, task, data.val, cfg["batch_size"], cfg["max_length"]),
                ClassifierEvaluator(tok, task, data.test, cfg["batch_size"], cfg["max_length"]))
    return (ICLEvaluator(tok, task, data.demos, data.val, cfg["calibrate"], cfg["batch_size"]),
            ICLEvaluator(tok, task, data.demos, data.test, cfg["calibrate"], cfg["batch_size"]))


def icl_search(model: str, task: str, strategy: str = "paper", modules: str = "mlp,attn", layers: str = "all",
               rates: str | list = PAPER_RATES, shots: int = 4, n_val: int = 200, n_test: int | None = 500,
               seed: int = 0, top_k: int = 3, svd_dtype: str = "float32", evaluator: str = "icl",
               calibrate: bool = False, batch_size: int = 16, max_length: int = 128, tokenizer: str | None = None,
               split: str = "validation", data_dir: str | None = None, dtype: str = "auto", device: str | None = None,
               trust_remote_code: bool = False, out: str = "runs/search", dry_run: bool = False,
               progress: bool = True, device_map=None, max_memory=None, reuse_memory: str | int | None = None,
               reuse_overflow: str = "auto") -> dict:
    from ..icl.splits import make_icl_data
    from ..models import load_model
    from ..tasks import resolve_task

    rates = [float(r) for r in (rates.split(",") if isinstance(rates, str) else rates)]
    modules = [m.strip() for m in (modules.split(",") if isinstance(modules, str) else modules)]
    if strategy not in STRATEGIES:
        raise LeantuneError(f"unknown strategy '{strategy}'; choose one of {', '.join(STRATEGIES)}")
    if svd_dtype not in ("float32", "float64"):
        raise LeantuneError("--svd-dtype must be float32 or float64")
    if evaluator not in ("icl", "classifier"):
        raise LeantuneError("--evaluator must be icl (causal LM) or classifier (sequence classification)")
    if reuse_overflow not in ("auto", "cpu", "recompute"):
        raise LeantuneError("--reuse-overflow must be auto, cpu or recompute")
    budget = parse_bytes(reuse_memory)
    cfg = dict(model=model, task=task, strategy=strategy, modules=modules, layers=layers, rates=rates, shots=shots,
               n_val=n_val, n_test=n_test, seed=seed, top_k=top_k, svd_dtype=svd_dtype, evaluator=evaluator,
               calibrate=calibrate, batch_size=batch_size, max_length=max_length, tokenizer=tokenizer, split=split,
               data_dir=data_dir, dtype=dtype, device=device, trust_remote_code=trust_remote_code, out=out,
               device_map=device_map if not isinstance(device_map, dict) else "custom", max_memory=max_memory,
               reuse_memory=reuse_memory, reuse_overflow=reuse_overflow)
    head = "seq-cls" if evaluator == "classifier" else "causal-lm"
    lm = load_model(model, head=head, dtype=dtype, device=device, trust_remote_code=trust_remote_code,
                    device_map=device_map, max_memory=max_memory)
    arch = get_arch(lm)
    layer_list = parse_layers(layers, arch.num_layers)
    check_grid(arch, modules, rates)
    task_obj = resolve_task(task)
    data = make_icl_data(task_obj, shots if evaluator == "icl" else 0, n_val, n_test, seed, data_dir or "default",
                         test_split=split)
    val_eval, test_eval = _evaluators(model, task_obj, data, cfg, head)

    if dry_run:
        from .memory import search_memory

        mem = search_memory(lm, arch, val_eval, strategy, layer_list, modules, getattr(torch, svd_dtype).itemsize,
                            budget, reuse_overflow)
        return {**_dry_run(strategy, layer_list, modules, rates, arch.num_layers, val_eval, top_k), "memory": mem}

    dist = _dist()
    out_dir = Path(out)
    _check_run_dir(out_dir, cfg, dist.rank)
    cache = SVDCache(arch, getattr(torch, svd_dtype))
    search = Search(lm, arch, val_eval, cache, Journal(out_dir, dist.rank, dist.world), modules, dist, progress,
                    reuse_memory=budget, reuse_overflow=reuse_overflow)
    t0 = time.perf_counter()
    info = {}
    if strategy == "grid":
        chosen, cands = search.grid(layer_list, rates)
    elif strategy == "paper":
        chosen, cands, info = search.paper(layer_list, rates, top_k)
    else:
        chosen, cands = search.greedy(layer_list, rates)
    search_seconds = time.perf_counter() - t0
    if dist.rank != 0:
        return {}

    chosen = [e for e in chosen if e.rate > 0]
    results = search.state.results
    base_val = results[BASELINE]["val_accuracy"]
    best_val = results[candidate_key(chosen)]["val_accuracy"]
    test_before = test_eval.evaluate(lm, progress=progress)
    with edited(arch, chosen, cache):
        test_after = test_eval.evaluate(lm, progress=progress)
    record = edit_record(lm, model, chosen, svd_dtype)
    write_json(out_dir / "edit.json", record)
    write_jsonl(out_dir / "test_predictions.jsonl",
                [{**a, "pred_before": b["pred"], "correct_before": b["correct"]}
                 for a, b in zip(test_after.predictions, test_before.predictions)])
    from ..report import plot_search_heatmap

    plot_search_heatmap([results[candidate_key(c)] for c in cands if len(c) <= 1], modules, rates,
                        out_dir / "heatmap.png", title=f"{task_obj.name}: validation accuracy by layer and rate",
                        baseline=base_val)
    summary = {
        "task": task_obj.name, "model": model, "strategy": strategy, "chosen_edits": record["edits"],
        "chosen_matrices": record["matrices"],
        "validation": {"before": base_val, "after": best_val, "n": results[BASELINE]["n_val"]},
        "test": {"before": test_before.metrics["accuracy"], "after": test_after.metrics["accuracy"],
                 "n": test_after.metrics["n"]},
        "candidates": {"total": len({candidate_key(c) for c in cands}), "evaluated_this_run": search.state.evaluated_now},
        "seconds": {"search_this_run": search_seconds, "test": test_before.metrics["seconds"]
                    + test_after.metrics["seconds"]},
        "tokens_processed": {"search_this_run": search.state.tokens,
                             "test": test_before.metrics["tokens_processed"] + test_after.metrics["tokens_processed"]},
        "paper_layer_choice": info, "examples": data.manifest(), "config": cfg, "versions": versions(),
        "memory": {"reuse": search.runner.memory() if search.runner is not None else None,
                   "dtype": str(model_dtype(lm)).removeprefix("torch.")},
    }
    write_json(out_dir / "summary.json", summary)
    return summary


def _dry_run(strategy, layers, modules, rates, num_layers, val_eval, top_k) -> dict:
    plan = getattr(val_eval, "plan", None)
    per_eval = (len(plan.prefix_ids) + sum(len(r) - len(plan.prefix_ids) for r in plan.rows)) if plan else \
        sum(int(e["attention_mask"].sum()) for e in val_eval.encodings)
    live = [r for r in rates if r > 0]
    if strategy == "grid":
        cand_layers = [(l, m) for l in layers for m in modules for _ in live]
    elif strategy == "paper":
        cand_layers = [(max(layers), m) for m in modules for _ in live]  # layer chosen later; upper bound
    else:
        cand_layers = [(l, m) for l in layers for m in modules for _ in live]
    # a candidate at layer l runs layers l..L-1 (the reuse path), i.e. (L - l) / L of a full pass
    layer_tokens = sum(per_eval * (num_layers - l) / num_layers for l, _ in cand_layers) if plan else \
        per_eval * len(cand_layers)
    return {"dry_run": True, "strategy": strategy, "candidates": 1 + len(cand_layers) + (len(layers) * len(modules)
            if 0.0 in rates and strategy == "grid" else 0),
            "candidates_to_evaluate": 1 + len(cand_layers), "tokens_per_evaluation": per_eval,
            "estimated_tokens": int(per_eval + layer_tokens), "note": "paper: layer chosen by condition number "
            "at run time; greedy: an upper bound" if strategy != "grid" else ""}

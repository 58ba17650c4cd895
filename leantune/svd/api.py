"""The SVD engine as a library: search edits on a loaded model, apply an edit to a loaded model.

``leantune icl search`` / ``icl apply`` (``recipes/icl_search.py``, ``recipes/icl_apply.py``) load the model from a
name and call these.
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
from .edits import Edit, apply_edits, check_edit_fits, check_edit_schema, edit_record, edited, read_edit_file
from .journal import Journal, MemoryJournal
from .lowrank import SVDCache
from .search import BASELINE, Dist, Search, candidate_key
from .strategies import STRATEGIES, Strategy, check_grid, make_strategy, parse_layers

from . import PAPER_RATES  # re-exported: the paper rates are part of this API

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
    wanted = {k: config.get(k) for k in SEMANTIC}
    if run_file.exists():
        try:
            had = json.loads(run_file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise LeantuneError(f"{run_file} is damaged ({e}); use a new --out folder") from None
        if not isinstance(had, dict):
            raise LeantuneError(f"{run_file} is not a leantune search record; use a new --out folder")
        diff = sorted(k for k in SEMANTIC if had.get(k) != wanted.get(k))
        if diff:
            raise LeantuneError(f"{out} holds a search with different arguments ({', '.join(diff)}); "
                                "use a new --out folder or repeat the same arguments to resume")
    elif rank == 0:
        write_json(run_file, wanted)


def _evaluators(tok, task, data, evaluator: str, calibrate: bool, batch_size: int, max_length: int):
    from ..icl.evaluator import ClassifierEvaluator, ICLEvaluator

    if evaluator == "classifier":
        return (ClassifierEvaluator(tok, task, data.val, batch_size, max_length),
                ClassifierEvaluator(tok, task, data.test, batch_size, max_length))
    return (ICLEvaluator(tok, task, data.demos, data.val, calibrate, batch_size),
            ICLEvaluator(tok, task, data.demos, data.test, calibrate, batch_size))


def check_search_args(strategy, svd_dtype: str, evaluator: str, reuse_overflow: str = "auto") -> None:
    if not isinstance(strategy, Strategy) and strategy not in STRATEGIES:
        raise LeantuneError(f"unknown strategy '{strategy}'; choose one of {', '.join(STRATEGIES)}")
    if svd_dtype not in ("float32", "float64"):
        raise LeantuneError("--svd-dtype must be float32 or float64")
    if evaluator not in ("icl", "classifier"):
        raise LeantuneError("--evaluator must be icl (causal LM) or classifier (sequence classification)")
    if reuse_overflow not in ("auto", "cpu", "recompute"):
        raise LeantuneError("--reuse-overflow must be auto, cpu or recompute")


def search_svd(model, tokenizer, task, strategy: str | Strategy = "paper", modules="mlp,attn", layers="all",
               rates=PAPER_RATES, shots: int = 4, n_val: int = 200, n_test: int | None = 500, seed: int = 0,
               top_k: int = 3, svd_dtype: str = "float32", evaluator: str = "icl", calibrate: bool = False,
               batch_size: int = 16, max_length: int = 128, split: str = "validation", data_dir=None,
               out: str | Path | None = None, dry_run: bool = False, progress: bool = False,
               record: dict | None = None, source: dict | None = None, reuse_memory: str | int | None = None,
               reuse_overflow: str = "auto", svd_cache_memory: str | int | None = None) -> dict:
    """Search SVD edits of ``model`` (loaded, unedited) on a task's validation examples; test the winner.

    ``strategy``: a registered name (paper, grid, greedy, or your own) or a :class:`Strategy` instance.
    ``evaluator``: ``icl`` (causal LM, ``shots`` demonstrations per class) or ``classifier`` (a sequence
    classifier's accuracy). With ``out`` the search is journaled there (rerun to resume) and writes
    run.json, candidates.jsonl, summary.json, edit.json, heatmap.png, test_predictions.jsonl, exactly as
    ``leantune icl search``. The model's weights are the original ones again on return.

    Returns the summary (validation/test accuracy before and after, ``chosen_edits``, ...) plus ``edit``,
    the edit record that :func:`apply_edit` takes. ``record``: the run's arguments as written to run.json
    and summary.json (the CLI passes its flags; default: these arguments); ``source``: where the weights
    came from (``leantune.models.model_source(name)``; default: the model's ``name_or_path``).
    ``reuse_memory``: a budget ("2GB", bytes) for the hidden states recorded for layer reuse; states beyond
    it are kept on the CPU or recomputed from the nearest recorded layer (``reuse_overflow``: auto | cpu |
    recompute), with identical results. ``svd_cache_memory``: a budget for the SVD factors kept between
    candidates (default: no bound); factors beyond it are recomputed when needed, with identical results.
    """
    from ..icl.splits import make_icl_data
    from ..tasks import Task, resolve_task

    from ..model_fit import check_model

    check_model(model, "seq-cls" if evaluator == "classifier" else "causal-lm", "search_svd")
    strategy_name = strategy.name if isinstance(strategy, Strategy) else strategy
    rates = [float(r) for r in (rates.split(",") if isinstance(rates, str) else rates)]
    modules = [m.strip() for m in (modules.split(",") if isinstance(modules, str) else modules)]
    check_search_args(strategy, svd_dtype, evaluator, reuse_overflow)
    budget = parse_bytes(reuse_memory)
    factor_budget = parse_bytes(svd_cache_memory)  # read before anything is loaded or written
    task_obj = task if isinstance(task, Task) else resolve_task(task)
    cfg = record if record is not None else dict(
        model=getattr(model.config, "_name_or_path", ""), task=task_obj.name, strategy=strategy_name,
        modules=modules, layers=layers, rates=rates, shots=shots, n_val=n_val, n_test=n_test, seed=seed,
        top_k=top_k, svd_dtype=svd_dtype, evaluator=evaluator, calibrate=calibrate, batch_size=batch_size,
        max_length=max_length, tokenizer=getattr(tokenizer, "name_or_path", None), split=split,
        data_dir=None if data_dir is None else str(data_dir), out=None if out is None else str(out))
    arch = get_arch(model)
    layer_list = parse_layers(layers, arch.num_layers) if isinstance(layers, str) else \
        parse_layers(",".join(str(x) for x in layers), arch.num_layers)
    check_grid(arch, modules, rates)
    data = make_icl_data(task_obj, shots if evaluator == "icl" else 0, n_val, n_test, seed, data_dir or "default",
                         test_split=split)
    val_eval, test_eval = _evaluators(tokenizer, task_obj, data, evaluator, calibrate, batch_size, max_length)
    strat = strategy if isinstance(strategy, Strategy) else make_strategy(strategy, top_k=top_k, seed=seed)

    if dry_run:
        from .memory import search_memory

        mem = search_memory(model, arch, val_eval, strat.name, layer_list, modules, getattr(torch, svd_dtype).itemsize,
                            budget, reuse_overflow, factor_budget)
        return {**_dry_run(strat, layer_list, modules, rates, arch.num_layers, val_eval), "memory": mem}

    dist = _dist()
    out_dir = Path(out) if out is not None else None
    if out_dir is not None:
        _check_run_dir(out_dir, cfg, dist.rank)
        journal = Journal(out_dir, dist.rank, dist.world)
    else:
        journal = MemoryJournal()
    cache = SVDCache(arch, getattr(torch, svd_dtype), max_bytes=factor_budget)
    search = Search(model, arch, val_eval, cache, journal, modules, dist, progress, reuse_memory=budget,
                    reuse_overflow=reuse_overflow)
    t0 = time.perf_counter()
    outcome = search.run(strat, layer_list, rates)
    search_seconds = time.perf_counter() - t0
    if dist.rank != 0:
        return {}

    chosen = [e for e in outcome.chosen if e.rate > 0]
    cands = outcome.candidates
    results = search.state.results
    base_val = results[BASELINE]["val_accuracy"]
    best_val = results[candidate_key(chosen)]["val_accuracy"]
    test_before = test_eval.evaluate(model, progress=progress)
    with edited(arch, chosen, cache):
        test_after = test_eval.evaluate(model, progress=progress)
    edit = edit_record(model, cfg["model"], chosen, svd_dtype)
    if out_dir is not None:
        write_json(out_dir / "edit.json", edit)
        write_jsonl(out_dir / "test_predictions.jsonl",
                    [{**a, "pred_before": b["pred"], "correct_before": b["correct"]}
                     for a, b in zip(test_after.predictions, test_before.predictions)])
        from ..report import plot_search_heatmap

        plot_search_heatmap([results[candidate_key(c)] for c in cands if len(c) <= 1], modules, rates,
                            out_dir / "heatmap.png", title=f"{task_obj.name}: validation accuracy by layer and rate",
                            baseline=base_val)
    summary = {
        "task": task_obj.name, "model": cfg["model"], "strategy": strategy_name, "chosen_edits": edit["edits"],
        "chosen_matrices": edit["matrices"],
        "validation": {"before": base_val, "after": best_val, "n": results[BASELINE]["n_val"]},
        "test": {"before": test_before.metrics["accuracy"], "after": test_after.metrics["accuracy"],
                 "n": test_after.metrics["n"]},
        "candidates": {"total": len({candidate_key(c) for c in cands}), "evaluated_this_run": search.state.evaluated_now},
        "seconds": {"search_this_run": search_seconds, "test": test_before.metrics["seconds"]
                    + test_after.metrics["seconds"]},
        "tokens_processed": {"search_this_run": search.state.tokens,
                             "test": test_before.metrics["tokens_processed"] + test_after.metrics["tokens_processed"]},
        "paper_layer_choice": outcome.info, "examples": data.manifest(), "config": cfg,
        "model_source": source if source is not None else {"name": cfg["model"]}, "versions": versions(),
        "memory": {"reuse": search.reuse.memory() if search.reuse is not None else None,
                   "dtype": str(model_dtype(model)).removeprefix("torch.")},
    }
    if out_dir is not None:
        write_json(out_dir / "summary.json", summary)
    return {**summary, "edit": edit}


def _dry_run(strategy: Strategy, layers, modules, rates, num_layers, val_eval) -> dict:
    per_eval = val_eval.tokens_per_evaluation
    cand_layers = strategy.planned(layers, modules, rates)
    # with layer reuse a candidate at layer l runs layers l..L-1, i.e. (L - l) / L of a full pass
    layer_tokens = sum(per_eval * (num_layers - l) / num_layers for l, _ in cand_layers) if val_eval.reuses_layers \
        else per_eval * len(cand_layers)
    zero_rate = len(layers) * len(modules) if 0.0 in rates and strategy.name == "grid" else 0
    return {"dry_run": True, "strategy": strategy.name, "candidates": 1 + len(cand_layers) + zero_rate,
            "candidates_to_evaluate": 1 + len(cand_layers), "tokens_per_evaluation": per_eval,
            "estimated_tokens": int(per_eval + layer_tokens), "note": strategy.note}


def apply_edit(model, edit, svd_dtype: str | None = None) -> dict:
    """Apply an SVD edit to ``model`` in place (exact SVD of its current weights, truncated).

    ``edit``: the path of an ``edit.json``, an edit record (``search_svd(...)["edit"]``), or a list of
    :class:`~leantune.svd.edits.Edit` / ``{"layer", "module", "rate"}`` dicts (``summary["chosen_edits"]``).
    Returns what was done per logical matrix. ``svd_dtype`` defaults to the record's (else float32).
    """
    from ..model_fit import check_model

    check_model(model, "any", "apply_edit")
    where = "edit"
    if isinstance(edit, (str, Path)):
        where = str(edit)
        edit = read_edit_file(where)
    if isinstance(edit, dict):
        if edit.get("format") != "leantune-svd-edit/1":
            raise LeantuneError("an edit dict must be an edit record (format leantune-svd-edit/1), e.g. "
                                "search_svd(...)['edit'] or the content of edit.json")
        check_edit_schema(edit, where)
        check_edit_fits(model, edit, where)
        svd_dtype = svd_dtype or edit.get("svd_dtype", "float32")
        edits = edit["edits"]
    else:
        edits = list(edit)
    edits = [e if isinstance(e, Edit) else Edit(**e) for e in edits]
    arch = get_arch(model)
    done = apply_edits(arch, edits, SVDCache(arch, getattr(torch, svd_dtype or "float32")))
    listed = edit["edits"] if isinstance(edit, dict) else [vars(e) for e in edits]
    return {"file": where if where != "edit" else None, "edits": listed, "matrices": done}

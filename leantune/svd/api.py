"""The SVD engine as a library: search edits on a loaded model, apply an edit to a loaded model.

``leantune icl search`` / ``icl apply`` (``recipes/icl_search.py``, ``recipes/icl_apply.py``) load the model from a
name and call these.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from pathlib import Path

import torch

from ..arch import get_arch
from ..errors import LeantuneError
from ..outputs import check_out_folder, claim, disk_errors, files_under, foreign_files, read_manifest
from ..precision import model_dtype, parse_bytes
from ..runinfo import versions, write_json, write_jsonl
from .edits import Edit, apply_edits, check_edit_fits, check_edit_schema, edit_record, edited, read_edit_file
from .journal import Journal, MemoryJournal
from .lowrank import SVDCache
from .search import BASELINE, Dist, Search, candidate_key
from .selection import SelectionRule
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
        diff = sorted(k for k in SEMANTIC if had.get(k) != wanted.get(k)
                      and not (k == "model" and _same_model(had.get(k), wanted.get(k))))
        if diff:
            raise LeantuneError(f"{out} holds a search with different arguments ({', '.join(diff)}); "
                                "use a new --out folder or repeat the same arguments to resume")
    elif rank == 0:
        write_json(run_file, wanted)


def _same_model(recorded, given) -> bool:
    """A folder written before models were named portably recorded the resolved path (a GGUF cache folder, an
    alias's install path); the same weights named as a user would (``HuggingFaceTB/SmolLM2-135M-Instruct``)
    must still resume it."""
    from ..models import portable_name

    if not isinstance(recorded, str) or not isinstance(given, str):
        return False
    try:
        return portable_name(recorded) == portable_name(given)
    except LeantuneError:
        return False


def _evaluator(tok, task, data, examples, evaluator: str, calibrate: bool, batch_size: int, max_length: int):
    from ..icl.evaluator import ClassifierEvaluator, ICLEvaluator

    if evaluator == "classifier":
        return ClassifierEvaluator(tok, task, examples, batch_size, max_length)
    return ICLEvaluator(tok, task, data.demos, examples, calibrate, batch_size)


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
               reuse_overflow: str = "auto", svd_cache_memory: str | int | None = None,
               selection: SelectionRule | None = None, overwrite: bool = False) -> dict:
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

    ``selection``: a :class:`~leantune.svd.selection.SelectionRule` (default: guarded, ranked by accuracy).
    Its ``metric`` ranks the candidates (accuracy | balanced_accuracy | macro_f1). ``guard="on"`` adopts the
    winner only if it beats the unedited model on ``n_confirm`` held-out confirmation examples (one-sided exact
    test at ``confirm_alpha``; ``"auto"``: up to 200 from the train pool left after demonstrations and
    validation) and is not a label-prior shift; ``SelectionRule(guard="off")`` is the paper's plain selection. Either way the summary carries the statistics of validation, test and confirmation
    (``stats``: balanced accuracy, macro-F1, confusion matrices, the constant predictor; ``change``: gained /
    lost examples, McNemar's exact p, paired-bootstrap 95 % intervals), the decision (``selection``) and a
    calibration control (``calibration_control``: the unedited model with contextual calibration).
    ``overwrite``: allow an ``out`` that holds files leantune did not write (see :mod:`leantune.outputs`).
    """
    from ..icl.splits import make_icl_data
    from ..tasks import Task, resolve_task
    from ..validate import check_call, check_model_arg, check_tokenizer_arg

    check_model_arg("search_svd", model)  # arguments where they enter, with the command line's rules
    check_tokenizer_arg("search_svd", tokenizer)
    check_call("search_svd", shots=shots, n_val=n_val, n_test=n_test, seed=seed, top_k=top_k, batch_size=batch_size,
               max_length=max_length, rates=rates, layers=layers if isinstance(layers, str) else None,
               modules=modules if isinstance(modules, str) else None)
    from ..model_fit import check_model

    check_model(model, "seq-cls" if evaluator == "classifier" else "causal-lm", "search_svd")
    strategy_name = strategy.name if isinstance(strategy, Strategy) else strategy
    rates = [float(r) for r in (rates.split(",") if isinstance(rates, str) else rates)]
    modules = [m.strip() for m in (modules.split(",") if isinstance(modules, str) else modules)]
    check_search_args(strategy, svd_dtype, evaluator, reuse_overflow)
    rule = (selection or SelectionRule()).check()
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
                         test_split=split, n_confirm=rule.n_confirm if rule.guard == "on" else 0)

    def make_eval(examples):
        return _evaluator(tokenizer, task_obj, data, examples, evaluator, calibrate, batch_size, max_length)

    val_eval, test_eval = make_eval(data.val), make_eval(data.test)
    strat = strategy if isinstance(strategy, Strategy) else make_strategy(strategy, top_k=top_k, seed=seed)

    if dry_run:
        from .memory import search_memory

        mem = search_memory(model, arch, val_eval, strat.name, layer_list, modules, getattr(torch, svd_dtype).itemsize,
                            budget, reuse_overflow, factor_budget)
        return {**_dry_run(strat, layer_list, modules, rates, arch.num_layers, val_eval), "memory": mem}

    dist = _dist()
    out_dir = Path(out) if out is not None else None
    before: set[str] = set()
    if out_dir is not None:
        with disk_errors(f"--out {out_dir}"):
            if dist.rank == 0:  # a search writes in place (it resumes): the folder must be its own
                adopt_old_search_folder(out_dir)
                check_out_folder("--out", out_dir, "icl search", overwrite)
                before = set(foreign_files(out_dir, limit=10**9)) if overwrite and out_dir.is_dir() else set()
                if (out_dir / "run.json").exists():
                    _check_run_dir(out_dir, cfg, dist.rank)  # another search's folder: refused, nothing written
                claim(out_dir, "icl search", search_files(dist.world))
            _check_run_dir(out_dir, cfg, dist.rank)
        journal = Journal(out_dir, dist.rank, dist.world)
    else:
        journal = MemoryJournal()
    cache = SVDCache(arch, getattr(torch, svd_dtype), max_bytes=factor_budget)
    search = Search(model, arch, val_eval, cache, journal, modules, dist, progress, reuse_memory=budget,
                    reuse_overflow=reuse_overflow, select=rule.metric)
    t0 = time.perf_counter()
    with disk_errors(f"--out {out_dir}"):  # a full disk while journaling: one line; finished candidates are kept
        outcome = search.run(strat, layer_list, rates)
    search_seconds = time.perf_counter() - t0
    if dist.rank != 0:
        return {}

    winner = [e for e in outcome.chosen if e.rate > 0]
    cands = outcome.candidates
    results = search.state.results
    base_rec, win_rec = results[BASELINE], results[candidate_key(winner)]
    decision = _select(rule, model, arch, cache, val_eval, base_rec, win_rec, winner, data, make_eval, seed, progress)
    chosen = winner if decision["adopted"] else []

    test_before = test_eval.evaluate(model, progress=progress, desc="test: unedited")
    test_winner = None
    if winner:
        with edited(arch, winner, cache):
            test_winner = test_eval.evaluate(model, progress=progress, desc="test: winner")
    test_after = test_winner if chosen else test_before
    # calibration is set beside the strategy's winner, adopted or not: is the edit's gain more than a prior shift?
    control = _calibration_control(model, tokenizer, search, val_eval, test_eval, base_rec, test_before,
                                   test_winner or test_before, seed, calibrate)
    edit = edit_record(model, cfg["model"], chosen, svd_dtype)
    if out_dir is not None:
        from ..report import plot_search_heatmap

        rows = [{**a, "pred_before": b["pred"], "correct_before": b["correct"], "text": _example_text(task_obj, r)}
                for a, b, r in zip(test_after.predictions, test_before.predictions, data.test)]
        if winner and not chosen:  # the rejected winner's answers, for the report
            for row, w in zip(rows, test_winner.predictions):
                row["pred_winner"] = w["pred"]
        with disk_errors(f"--out {out_dir}"):
            write_json(out_dir / "edit.json", edit)
            write_jsonl(out_dir / "test_predictions.jsonl", rows)
            plot_search_heatmap([results[candidate_key(c)] for c in cands if len(c) <= 1], modules, rates,
                                out_dir / "heatmap.png",
                                title=f"{task_obj.name}: validation accuracy by layer and rate",
                                baseline=base_rec["val_accuracy"])
    gold_val, gold_test = val_eval.gold, test_eval.gold
    names = list(val_eval.label_names)
    val_after_rec = win_rec if chosen else base_rec
    tests = {"before": test_before.metrics["accuracy"], "after": test_after.metrics["accuracy"],
             "n": test_after.metrics["n"],
             "stats": _pair_stats(gold_test, [p["pred"] for p in test_before.predictions],
                                  [p["pred"] for p in test_after.predictions], names, seed)}
    if winner and not chosen:  # what the rejected winner would have scored: the guard's decision, checked
        tests["winner"] = {"accuracy": test_winner.metrics["accuracy"],
                           "stats": _pair_stats(gold_test, [p["pred"] for p in test_before.predictions],
                                                [p["pred"] for p in test_winner.predictions], names, seed)}
    selection_seconds = decision.pop("seconds")
    decision.update(winner=[asdict(e) for e in winner], winner_validation=win_rec["val_accuracy"])
    summary = {
        "task": task_obj.name, "model": cfg["model"], "strategy": strategy_name, "chosen_edits": edit["edits"],
        "chosen_matrices": edit["matrices"],
        "validation": {"before": base_rec["val_accuracy"], "after": val_after_rec["val_accuracy"],
                       "n": base_rec["n_val"],
                       "stats": _pair_stats(gold_val, base_rec["val_predictions"], val_after_rec["val_predictions"],
                                            names, seed)},
        "test": tests,
        "selection": decision,
        "calibration_control": control,
        "candidates": {"total": len({candidate_key(c) for c in cands}), "evaluated_this_run": search.state.evaluated_now},
        "seconds": {"search_this_run": search_seconds,
                    "test": test_before.metrics["seconds"] + (test_winner.metrics["seconds"] if test_winner else 0),
                    "selection": selection_seconds},
        "tokens_processed": {"search_this_run": search.state.tokens,
                             "test": test_before.metrics["tokens_processed"]
                             + (test_winner.metrics["tokens_processed"] if test_winner else 0)},
        "paper_layer_choice": outcome.info, "examples": data.manifest(), "config": cfg,
        "model_source": source if source is not None else {"name": cfg["model"]}, "versions": versions(),
        "memory": {"reuse": search.reuse.memory() if search.reuse is not None else None,
                   "dtype": str(model_dtype(model)).removeprefix("torch.")},
    }
    if out_dir is not None:
        from ..search_report import build_report

        with disk_errors(f"--out {out_dir}"):
            write_json(out_dir / "summary.json", summary)
            build_report(out_dir)  # from the files just written, exactly as `leantune report DIR` rebuilds it
            # whatever else this run wrote is listed too (the folder stays ours); files that were there before
            # an --overwrite run are not
            claim(out_dir, "icl search", [f for f in files_under(out_dir) if f not in before])
    return {**summary, "edit": edit}


def _example_text(task, record: dict) -> str:
    """The query as the model saw it after the demonstrations (for the report's gained/lost examples)."""
    return task.render_context(record)


def _pair_stats(gold, before, after, names, seed: int) -> dict:
    from ..stats import evaluation_stats, paired_change

    return {"before": evaluation_stats(gold, before, names), "after": evaluation_stats(gold, after, names),
            "change": paired_change(gold, before, after, seed=seed)}


def _select(rule: SelectionRule, model, arch, cache, val_eval, base_rec, win_rec, winner, data, make_eval, seed,
            progress) -> dict:
    """The selection rule applied to the strategy's winner (see :mod:`leantune.svd.selection`)."""
    from .selection import confirm, decide, label_shift

    t0 = time.perf_counter()
    names = list(val_eval.label_names)
    out = {"guard": rule.guard, "metric": rule.metric, "confirm_alpha": rule.confirm_alpha, "confirmation": None,
           "label_shift": None}
    if winner:
        shift_on, gold, before, after = "validation", val_eval.gold, base_rec["val_predictions"], win_rec["val_predictions"]
        if rule.guard == "on" and data.confirm:
            conf_eval = make_eval(data.confirm)
            conf_before = conf_eval.evaluate(model, progress=progress, desc="confirmation: unedited")
            with edited(arch, winner, cache):
                conf_after = conf_eval.evaluate(model, progress=progress, desc="confirmation: winner")
            gold = conf_eval.gold
            before, after = [p["pred"] for p in conf_before.predictions], [p["pred"] for p in conf_after.predictions]
            out["confirmation"] = confirm(gold, before, after, rule, seed)
            shift_on = "confirmation"
        out["label_shift"] = {**label_shift(gold, before, after, names), "split": shift_on}
    adopted, reason = decide(rule, not winner, out["label_shift"], out["confirmation"])
    return {**out, "adopted": adopted and bool(winner), "reason": reason, "seconds": time.perf_counter() - t0}


def _calibration_control(model, tokenizer, search, val_eval, test_eval, base_rec, test_before, test_after, seed,
                         calibrate: bool) -> dict:
    """The unedited model with contextual calibration on validation and test, next to the edit (``test_after``:
    the winner's test evaluation, whether the guard adopted it or not): an edit that is only a label-prior shift
    gets no more than calibration alone, with no edit at all."""
    if calibrate:
        return {"skipped": "the search itself uses contextual calibration (--calibrate)"}
    val_base = search.reuse.baseline if search.reuse is not None else None
    if val_base is None or not val_base.predictions or "logprobs" not in val_base.predictions[0]:
        val_base = val_eval.evaluate(model, desc="calibration control")  # a classifier, or a strategy that recorded no baseline
    val_cal = val_eval.calibration_control(model, tokenizer, val_base)
    test_cal = test_eval.calibration_control(model, tokenizer, test_before)
    if val_cal is None or test_cal is None:
        return {"skipped": "contextual calibration applies to prompted classification (not multiple choice, "
                           "not a classifier head)"}
    names = list(val_eval.label_names)
    gold = test_eval.gold
    cal_preds = [p["pred"] for p in test_cal.predictions]
    before = [p["pred"] for p in test_before.predictions]
    after = [p["pred"] for p in test_after.predictions]
    vs_unedited = _pair_stats(gold, before, cal_preds, names, seed)
    edit_gain = test_after.metrics["accuracy"] - test_before.metrics["accuracy"]
    cal_gain = test_cal.metrics["accuracy"] - test_before.metrics["accuracy"]
    return {"validation": {"accuracy": val_cal.metrics["accuracy"],
                           "balanced_accuracy": val_cal.metrics["balanced_accuracy"]},
            "test": {"accuracy": test_cal.metrics["accuracy"], "stats": vs_unedited},
            "content_free_probs": test_cal.metrics["content_free_probs"],
            "edit_vs_calibration": _pair_stats(gold, cal_preds, after, names, seed)["change"],
            "matches_edit_gain": bool(edit_gain > 0 and cal_gain >= edit_gain)}



def adopt_old_search_folder(out: Path) -> None:
    """A search folder written before manifests existed (run.json, journals, results; nothing else) is a
    search's own: list its files, so that it resumes as before. Any other file keeps it refused."""
    import re

    out = Path(out)
    if not (out / "run.json").is_file() or read_manifest(out) is not None:
        return
    known = set(search_files(1))
    entries = list(out.iterdir())
    if all(p.is_file() and (p.name in known or re.fullmatch(r"candidates\.rank\d+\.jsonl(\.tmp)?", p.name)
                            or p.name == "search.pid") for p in entries):
        claim(out, "icl search", [p.name for p in entries])


def search_files(world: int) -> list[str]:
    """What a search writes in its folder, listed before it is written (a killed run's folder stays ours)."""
    names = ["run.json", "candidates.jsonl", "summary.json", "edit.json", "heatmap.png", "test_predictions.jsonl"] \
        + ["report.html"] + [f"candidates.rank{r}.jsonl" for r in range(world)]
    return names + [n + ".tmp" for n in names if n.endswith((".json", ".jsonl", ".html"))]



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
    from ..validate import check_model_arg

    check_model_arg("apply_edit", model)
    if not isinstance(edit, (str, Path, dict, list, tuple)):
        raise LeantuneError(f"apply_edit() argument edit must be the path of an edit.json, an edit record or a list "
                            f"of edits, got {type(edit).__name__} {edit!r}")
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

"""Recipe of ``leantune icl search``: load, choose examples, search, test the winner, write it all.

Outputs in ``out``: ``run.json`` (the arguments; a different run in the same folder is refused),
``candidates.jsonl`` (journal), ``summary.json``, ``edit.json``, ``heatmap.png``,
``test_predictions.jsonl``. One search per folder at a time (a lock; ``wait_lock`` waits for the holder).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..options import build, option
from ..svd import PAPER_RATES
from .common import ICLCommon, Recipe, overwrite_option


@dataclass
class SearchConfig(ICLCommon):
    strategy: str = option("paper", "paper (Algorithm 1) | grid | greedy (default paper)")
    modules: str | list = option("mlp,attn", "comma list of attn, mlp, all or logical matrices "
                                             "(q, k, v, o, mlp_in, mlp_gate, mlp_out)")
    layers: str = option("all", "all | last4 | 8-11 | 8:12 | 0,3,-1")
    rates: str | list = option(",".join(f"{r:g}" for r in PAPER_RATES), "clipping rates xi in [0, 1)")
    top_k: int = option(3, "paper strategy: layers ranked by condition number")
    n_val: int = option(200, "validation examples carved from train")
    n_test: int | None = option(500, "test examples (seeded sample of --split)")
    split: str = option("validation", "split used as test (default validation)")
    svd_dtype: str = option("float32", "float32 | float64")
    evaluator: str = option("icl", "icl (causal LM) | classifier (sequence classification)")
    max_length: int = option(128, "classifier evaluator: truncation length")
    calibrate: bool = option(False, "contextual calibration in every evaluation")
    guard: str = option("on", "on: adopt the winner only if it is confirmed on held-out examples and is not a "
                              "label-prior shift; off: the paper's plain selection (default on)", choices=("on", "off"))
    select: str = option("accuracy", "validation metric that ranks candidates (default accuracy)",
                         choices=("accuracy", "balanced_accuracy", "macro_f1"))
    n_confirm: str | int = option("auto", "guard: confirmation examples carved from train apart from demonstrations, "
                                          "validation and test (default auto: up to 200 of what remains; 0: none, so "
                                          "the guard adopts nothing)", metavar="N|auto")
    confirm_alpha: float = option(0.05, "guard: the winner must beat the unedited model on the confirmation split "
                                        "at this one-sided level (default 0.05)")
    dry_run: bool = option(False, "print the candidate count, a token estimate and the expected peak memory",
                           recorded=False)
    reuse_memory: str | int | None = option(None, "budget for the recorded hidden states of the layer-reuse path on "
                                                  "the model's devices, e.g. 200MB or 2GiB (default: no bound); "
                                                  "identical results", metavar="SIZE")
    reuse_overflow: str = option("auto", "beyond --reuse-memory: cpu (keep them on the CPU) | recompute (from the "
                                         "nearest recorded layer) | auto (cpu on an accelerator, recompute on the CPU)")
    svd_cache_memory: str | int | None = option(None, "budget for the SVD factors kept between candidates, e.g. 500MB "
                                                "(default: no bound); factors beyond it are recomputed when "
                                                "needed, with identical results", metavar="SIZE")
    out: str = option("runs/search", "results; rerun to resume", metavar="DIR")
    overwrite: bool = overwrite_option()
    wait_lock: bool = option(False, "if another search holds --out, wait for it to finish instead of refusing",
                             recorded=False)


# run.json / summary's "config": this key order has been written since the first version (kept byte-stable)
RECORD = ("model", "task", "strategy", "modules", "layers", "rates", "shots", "n_val", "n_test", "seed", "top_k",
          "svd_dtype", "evaluator", "calibrate", "batch_size", "max_length", "tokenizer", "split", "data_dir", "dtype",
          "device", "trust_remote_code", "out", "device_map", "max_memory", "reuse_memory", "reuse_overflow",
          "svd_cache_memory", "guard", "select", "n_confirm", "confirm_alpha")


def parse_n_confirm(value) -> int | str:
    """``auto`` or a count >= 0, from the command line (text) or a config file / library call (int)."""
    from ..errors import LeantuneError

    if isinstance(value, int) and not isinstance(value, bool):
        n = value
    elif isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    elif isinstance(value, str) and value.strip().isdigit():
        n = int(value.strip())
    else:
        raise LeantuneError(f"--n-confirm must be auto or a count >= 0, not {value!r}")
    if n < 0:
        raise LeantuneError(f"--n-confirm must be auto or a count >= 0, not {value!r}")
    return n


def icl_search(model: str | SearchConfig | None = None, task: str | None = None, *, progress: bool = True,
               **options) -> dict:
    """Load ``model`` (a name) and its tokenizer, then :func:`~leantune.svd.api.search_svd` into ``out``.

    Call it with a :class:`SearchConfig`, or with its fields as keywords (``icl_search("smollm2-135m", "sst2",
    strategy="grid", layers="last4")``)."""
    if isinstance(model, SearchConfig):
        cfg = build(SearchConfig, model, **({"task": task} if task else {}), **options)
    else:
        cfg = build(SearchConfig, None, **{k: v for k, v in (("model", model), ("task", task)) if v is not None},
                    **options)
    if cfg.dry_run:  # writes nothing: no lock
        return _search(cfg, progress)
    from ..outputs import check_out_folder, claim, files_under, foreign_files
    from ..svd.runlock import search_lock

    # before the lock makes the folder: a folder of other files, or an input, is refused at once
    from ..svd.api import adopt_old_search_folder

    if int(os.environ.get("RANK", "0")) == 0:  # one process writes the manifest of a multi-process run
        adopt_old_search_folder(Path(cfg.out))
    check_out_folder("--out", cfg.out, "icl search", cfg.overwrite, _inputs(cfg))
    out = Path(cfg.out)
    before = set(foreign_files(out, limit=10**9)) if out.is_dir() else set()  # a user's files (--overwrite)

    rank = int(os.environ.get("RANK", "0"))  # torchrun / accelerate set it; the search's own Dist agrees
    with search_lock(out, rank, wait=cfg.wait_lock):
        summary = _search(cfg, progress)
        if rank == 0:  # everything this run wrote is the search's own, whichever step wrote it
            claim(out, "icl search", [f for f in files_under(out) if f not in before])
        return summary


def _inputs(cfg: SearchConfig) -> dict:
    from ..models import input_path

    return {"model": input_path(cfg.model), "task file": cfg.task, "data folder": cfg.data_dir,
            "tokenizer": cfg.tokenizer}


def _search(cfg: SearchConfig, progress: bool) -> dict:
    import time

    from ..model_fit import check_causal_lm, check_vocab_fits, fit_max_length
    from ..models import load_model, model_source, tokenizer_for
    from ..svd.api import check_search_args, search_svd
    from ..svd.selection import SelectionRule

    rates = [float(r) for r in (cfg.rates.split(",") if isinstance(cfg.rates, str) else cfg.rates)]
    modules = [m.strip() for m in (cfg.modules.split(",") if isinstance(cfg.modules, str) else cfg.modules)]
    check_search_args(cfg.strategy, cfg.svd_dtype, cfg.evaluator, cfg.reuse_overflow)
    t0 = time.perf_counter()
    record = {k: getattr(cfg, k) for k in RECORD}
    record.update(modules=modules, rates=rates)
    if isinstance(cfg.device_map, dict):
        record["device_map"] = "custom"
    head = "seq-cls" if cfg.evaluator == "classifier" else "causal-lm"
    lm = load_model(cfg.model, head=head, dtype=cfg.dtype, device=cfg.device, trust_remote_code=cfg.trust_remote_code,
                    device_map=cfg.device_map, max_memory=cfg.max_memory)
    tok = tokenizer_for(cfg.model, cfg.tokenizer, cfg.trust_remote_code)
    if cfg.evaluator == "icl":
        check_causal_lm(lm, cfg.model)
    check_vocab_fits(tok, lm, cfg.model, cfg.tokenizer)
    max_length = cfg.max_length
    if cfg.evaluator == "classifier":
        max_length = fit_max_length(max_length, lm)  # run.json keeps the value given, so reruns match
        if lm.config.pad_token_id is None:  # a causal LM loaded as a classifier: batches need a pad id
            lm.config.pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    summary = search_svd(lm, tok, cfg.task, strategy=cfg.strategy, modules=modules, layers=cfg.layers, rates=rates,
                         shots=cfg.shots, n_val=cfg.n_val, n_test=cfg.n_test, seed=cfg.seed, top_k=cfg.top_k,
                         svd_dtype=cfg.svd_dtype, evaluator=cfg.evaluator, calibrate=cfg.calibrate,
                         batch_size=cfg.batch_size, max_length=max_length, split=cfg.split, data_dir=cfg.data_dir,
                         out=None if cfg.dry_run else cfg.out, dry_run=cfg.dry_run, progress=progress, record=record,
                         source=None if cfg.dry_run else model_source(cfg.model), reuse_memory=cfg.reuse_memory,
                         reuse_overflow=cfg.reuse_overflow, svd_cache_memory=cfg.svd_cache_memory,
                         selection=SelectionRule(cfg.guard, cfg.select, cfg.confirm_alpha,
                                                 parse_n_confirm(cfg.n_confirm)), overwrite=cfg.overwrite)
    summary.pop("edit", None)  # the CLI's summary is summary.json's content; the edit is in edit.json
    if "seconds" in summary:
        summary["seconds"]["command"] = time.perf_counter() - t0  # loading, search, selection, test, report
    return summary


CONFIG = SearchConfig


def run(cfg: SearchConfig, progress: bool) -> dict:
    return icl_search(cfg, progress=progress)


def report(s: dict, cfg: SearchConfig) -> str:
    if not s:  # a non-zero rank of a multi-process run: rank 0 reports
        return ""
    if s.get("dry_run"):
        from ..svd.memory import describe

        return (f"dry run ({s['strategy']}): {s['candidates_to_evaluate']} evaluations "
                f"({s['candidates']} candidates incl. rate 0), {s['tokens_per_evaluation']} tokens per full "
                f"evaluation, about {s['estimated_tokens']:,} layer-weighted tokens in all. {s['note']}\n"
                + describe(s["memory"]))
    sec = s["seconds"]
    return "\n".join(result_lines(s) + [
        f"{s['candidates']['evaluated_this_run']} candidates evaluated in {sec['search_this_run']:.1f}s, selection "
        f"{sec.get('selection', 0):.1f}s, test {sec['test']:.1f}s; whole command {sec.get('command', 0):.1f}s",
        f"results: {cfg.out}/report.html (look here), summary.json, edit.json, heatmap.png, candidates.jsonl"])


def _edits(edits) -> str:
    return ", ".join(f"layer {e['layer']} {e['module']} xi={e['rate']:g}" for e in edits) or "none"


def result_lines(s: dict) -> list[str]:
    """The printed result of a search (also the demo's): the decision, then each split with its statistics."""
    from ..stats import describe_change

    sel = s.get("selection")
    if sel is None:  # a summary written before the selection rule existed
        return [f"chosen edit: {_edits(s['chosen_edits'])}",
                f"validation accuracy {s['validation']['before']:.4f} -> {s['validation']['after']:.4f}; "
                f"test accuracy {s['test']['before']:.4f} -> {s['test']['after']:.4f}"]
    if sel["adopted"]:
        lines = [f"chosen edit: {_edits(s['chosen_edits'])} (guard {sel['guard']}: {sel['reason']})"]
    elif sel["winner"]:
        lines = [f"no edit adopted (guard {sel['guard']}): best candidate {_edits(sel['winner'])} "
                 f"(validation {s['validation']['before']:.3f} -> {sel['winner_validation']:.3f}): {sel['reason']}"]
    else:
        lines = [f"no edit adopted: {sel['reason']}"]
    shift = sel.get("label_shift") or {}
    if shift.get("flagged"):
        lines.append(f"warning: label shift on the {shift['split']} split: " + "; ".join(shift["reasons"]))
    for split in ("validation", "test"):
        st = s[split]["stats"]
        lines.append(describe_change(split, st["before"], st["after"], st["change"]))
    if "winner" in s["test"]:
        st = s["test"]["winner"]["stats"]
        lines.append(describe_change("test, rejected winner", st["before"], st["after"], st["change"]))
    cal = s.get("calibration_control") or {}
    if "test" in cal:
        st = cal["test"]["stats"]
        line = "calibration alone (unedited, contextual calibration): " + describe_change(
            "test", st["before"], st["after"], st["change"])
        if cal["matches_edit_gain"]:
            line += "; it matches the best edit's gain: the edit may be only a label-prior shift"
        lines.append(line)
    elif cal:
        lines.append(f"calibration control: {cal['skipped']}")
    return lines


COMMANDS = {("icl", "search"): Recipe(SearchConfig, run, report,
                                      help="search SVD edits (layer, module, clipping rate) on validation")}

"""Recipe of ``leantune icl eval``: load, select examples, (edit), score, write results."""

from __future__ import annotations

from dataclasses import dataclass

from ..options import build, option
from .common import ICLCommon, Recipe, overwrite_option


@dataclass
class EvalConfig(ICLCommon):
    n_eval: int | None = option(None, "examples to evaluate (seeded sample; default: the whole split)")
    split: str = option("validation", "split to evaluate (default validation)")
    calibrate: bool = option(False, "contextual calibration (Zhao et al. 2021, 'N/A')")
    edit: str | None = option(None, "apply an SVD edit (from `leantune icl search`) first", metavar="edit.json")
    out: str | None = option(None, "write metrics.json and predictions.jsonl here", metavar="DIR")
    overwrite: bool = overwrite_option()


def icl_eval(model: str | EvalConfig | None = None, task: str | None = None, *, progress: bool = True,
             **options) -> dict:
    """ICL accuracy of a model given by name: one :class:`EvalConfig`, or its fields as keywords."""
    from ..model_fit import check_causal_lm, check_vocab_fits
    from ..models import input_path, load_model, model_source, tokenizer_for
    from ..runinfo import versions, write_json, write_jsonl
    from ..icl.api import PreparedICLEval
    from ..icl.splits import make_icl_data
    from ..tasks import resolve_task

    given = {k: v for k, v in (("task", task),) if v is not None}
    cfg = build(EvalConfig, model, **given, **options) if isinstance(model, EvalConfig) else \
        build(EvalConfig, None, **({"model": model} if model is not None else {}), **given, **options)
    record = {k: getattr(cfg, k) for k in ("model", "task", "shots", "n_eval", "seed", "calibrate", "edit",
                                            "batch_size", "out", "split", "tokenizer", "data_dir", "dtype", "device",
                                            "trust_remote_code", "device_map", "max_memory")}
    if isinstance(cfg.device_map, dict):
        record["device_map"] = "custom"
    folder = None
    if cfg.out:
        from ..outputs import OutputFolder

        folder = OutputFolder(cfg.out, "icl eval", overwrite=cfg.overwrite,
                              inputs={"model": input_path(cfg.model), "edit file": cfg.edit, "task file": cfg.task,
                                      "data folder": cfg.data_dir, "tokenizer": cfg.tokenizer})
    task_obj = resolve_task(cfg.task)
    data = make_icl_data(task_obj, cfg.shots, None, cfg.n_eval, cfg.seed, cfg.data_dir or "default",
                         test_split=cfg.split)
    tok = tokenizer_for(cfg.model, cfg.tokenizer, cfg.trust_remote_code)
    prepared = PreparedICLEval(tok, task_obj, cfg.shots, cfg.n_eval, cfg.seed, cfg.calibrate, cfg.batch_size,
                               cfg.split, cfg.data_dir, data=data)
    lm = load_model(cfg.model, head="causal-lm", dtype=cfg.dtype, device=cfg.device,
                    trust_remote_code=cfg.trust_remote_code, device_map=cfg.device_map, max_memory=cfg.max_memory)
    check_causal_lm(lm, cfg.model)
    check_vocab_fits(tok, lm, cfg.model, cfg.tokenizer)
    edit_info = None
    if cfg.edit:
        # a recipe step (the icl engine never edits): the svd engine applies the edit
        from ..svd.api import apply_edit

        edit_info = apply_edit(lm, cfg.edit)
    m = prepared.run(lm, progress=progress)
    predictions = m.pop("predictions")
    examples = m.pop("examples")
    metrics = {**m, "edit": edit_info, "examples": examples, "config": record,
               "model_source": model_source(cfg.model), "versions": versions()}
    if folder is not None:
        with folder as stage:  # both files or neither
            write_json(stage / "metrics.json", metrics)
            write_jsonl(stage / "predictions.jsonl", predictions)
    return metrics


CONFIG = EvalConfig


def run(cfg: EvalConfig, progress: bool) -> dict:
    return icl_eval(cfg, progress=progress)


def report(m: dict, cfg: EvalConfig) -> str:
    line = f"{m['task']} {cfg.shots}-shot/class: accuracy {m['accuracy']:.4f} ({m['correct']}/{m['n']}"
    if "accuracy_ci95" in m:
        lo, hi = m["accuracy_ci95"]
        line += (f", 95% CI [{lo:.3f}, {hi:.3f}]; balanced {m['balanced_accuracy']:.4f}, macro-F1 {m['macro_f1']:.4f};"
                 f" constant predictor {m['majority_rate']:.3f}; answers '{m['top_prediction']}' for "
                 f"{m['top_prediction_share']:.0%}")
    line += ")"
    if "acc_norm" in m:
        line += f", acc_norm {m['acc_norm']:.4f}"
    if "accuracy_uncalibrated" in m:
        line += f" (uncalibrated {m['accuracy_uncalibrated']:.4f})"
    line += f"; {m['tokens_processed']} tokens in {m['seconds']:.1f}s"
    if cfg.out:
        line += f"\nresults: {cfg.out}/metrics.json, {cfg.out}/predictions.jsonl"
    return line


COMMANDS = {("icl", "eval"): Recipe(EvalConfig, run, report,
                                    help="ICL accuracy with fixed demonstrations (batched, prefix-cached)")}

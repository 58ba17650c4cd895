"""``leantune icl ...`` subcommands: argument parsing only; the recipes live beside this file."""

from __future__ import annotations

import argparse


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="YAML/JSON with the same keys as these flags")
    p.add_argument("--model", help="(required) hub id, local directory or alias")
    p.add_argument("--task", help="(required) task name (sst2, rte, cb, copa, mrpc, emoc, agnews, boolq) "
                                                 "or a task file (.yaml/.json)")
    p.add_argument("--shots", type=int, default=4, help="demonstrations per class (default 4)")
    p.add_argument("--seed", type=int, default=0, help="fixes the demonstrations and the sampled examples")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--tokenizer", help="tokenizer to use (default: the model's); 'gpt2-offline' = real GPT-2 BPE")
    p.add_argument("--data-dir", help="local data (default $LEANTUNE_DATA_DIR, else ../shared/data, else hub)")
    p.add_argument("--dtype", default="auto", help="auto | float32 | bfloat16 | float16")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cpu)")
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _cmd_eval(args) -> int:
    from ..config import require
    from .run_eval import icl_eval

    require(args, "model", "task")
    m = icl_eval(model=args.model, task=args.task, shots=args.shots, n_eval=args.n_eval, seed=args.seed,
                 calibrate=args.calibrate, edit=args.edit, batch_size=args.batch_size, out=args.out,
                 split=args.split, tokenizer=args.tokenizer, data_dir=args.data_dir, dtype=args.dtype,
                 device=args.device, trust_remote_code=args.trust_remote_code, progress=not args.quiet)
    line = f"{m['task']} {args.shots}-shot/class: accuracy {m['accuracy']:.4f} ({m['correct']}/{m['n']})"
    if "acc_norm" in m:
        line += f", acc_norm {m['acc_norm']:.4f}"
    if "accuracy_uncalibrated" in m:
        line += f" (uncalibrated {m['accuracy_uncalibrated']:.4f})"
    print(line + f"; {m['tokens_processed']} tokens in {m['seconds']:.1f}s")
    if args.out:
        print(f"results: {args.out}/metrics.json, {args.out}/predictions.jsonl")
    return 0


def register(sub) -> None:
    icl = sub.add_parser("icl", help="in-context learning: evaluate, search SVD edits, apply them")
    icl_sub = icl.add_subparsers(dest="icl_command", required=True)
    ev = icl_sub.add_parser("eval", help="ICL accuracy with fixed demonstrations (batched, prefix-cached)")
    _common(ev)
    ev.add_argument("--n-eval", type=int, help="examples to evaluate (seeded sample; default: the whole split)")
    ev.add_argument("--split", default="validation", help="split to evaluate (default validation)")
    ev.add_argument("--calibrate", action="store_true", help="contextual calibration (Zhao et al. 2021, 'N/A')")
    ev.add_argument("--edit", metavar="edit.json", help="apply an SVD edit (from `leantune icl search`) first")
    ev.add_argument("--out", metavar="DIR", help="write metrics.json and predictions.jsonl here")
    ev.set_defaults(func=_cmd_eval, parser=ev)

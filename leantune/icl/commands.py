"""``leantune icl ...`` subcommands: argument parsing only; the recipes live beside this file."""

from __future__ import annotations

import argparse

from ..precision import add_placement_flags


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
    add_placement_flags(p)  # --dtype, --device, --device-map, --max-memory
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _cmd_eval(args) -> int:
    from ..config import require
    from .run_eval import icl_eval

    require(args, "model", "task")
    m = icl_eval(model=args.model, task=args.task, shots=args.shots, n_eval=args.n_eval, seed=args.seed,
                 calibrate=args.calibrate, edit=args.edit, batch_size=args.batch_size, out=args.out,
                 split=args.split, tokenizer=args.tokenizer, data_dir=args.data_dir, dtype=args.dtype,
                 device=args.device, trust_remote_code=args.trust_remote_code, progress=not args.quiet,
                 device_map=args.device_map, max_memory=args.max_memory)
    line = f"{m['task']} {args.shots}-shot/class: accuracy {m['accuracy']:.4f} ({m['correct']}/{m['n']})"
    if "acc_norm" in m:
        line += f", acc_norm {m['acc_norm']:.4f}"
    if "accuracy_uncalibrated" in m:
        line += f" (uncalibrated {m['accuracy_uncalibrated']:.4f})"
    print(line + f"; {m['tokens_processed']} tokens in {m['seconds']:.1f}s")
    if args.out:
        print(f"results: {args.out}/metrics.json, {args.out}/predictions.jsonl")
    return 0


def _cmd_search(args) -> int:
    from ..config import require
    from ..svd.run_search import icl_search

    require(args, "model", "task")
    s = icl_search(model=args.model, task=args.task, strategy=args.strategy, modules=args.modules, layers=args.layers,
                   rates=args.rates, shots=args.shots, n_val=args.n_val, n_test=args.n_test, seed=args.seed,
                   top_k=args.top_k, svd_dtype=args.svd_dtype, evaluator=args.evaluator, calibrate=args.calibrate,
                   batch_size=args.batch_size, max_length=args.max_length, tokenizer=args.tokenizer,
                   split=args.split, data_dir=args.data_dir, dtype=args.dtype, device=args.device,
                   trust_remote_code=args.trust_remote_code, out=args.out, dry_run=args.dry_run,
                   progress=not args.quiet, device_map=args.device_map, max_memory=args.max_memory,
                   reuse_memory=args.reuse_memory, reuse_overflow=args.reuse_overflow,
                   wait_lock=args.wait_lock)
    if not s:  # a non-zero rank of a multi-process run: rank 0 reports
        return 0
    if s.get("dry_run"):
        print(f"dry run ({s['strategy']}): {s['candidates_to_evaluate']} evaluations "
              f"({s['candidates']} candidates incl. rate 0), {s['tokens_per_evaluation']} tokens per full evaluation, "
              f"about {s['estimated_tokens']:,} layer-weighted tokens in all. {s['note']}")
        from ..svd.memory import describe

        print(describe(s["memory"]))
        return 0
    edits = ", ".join(f"layer {e['layer']} {e['module']} xi={e['rate']:g}" for e in s["chosen_edits"]) or "none"
    print(f"chosen edit: {edits}")
    print(f"validation accuracy {s['validation']['before']:.4f} -> {s['validation']['after']:.4f} "
          f"(n={s['validation']['n']}); test accuracy {s['test']['before']:.4f} -> {s['test']['after']:.4f} "
          f"(n={s['test']['n']})")
    print(f"{s['candidates']['evaluated_this_run']} candidates evaluated in {s['seconds']['search_this_run']:.1f}s; "
          f"results: {args.out}/summary.json, edit.json, heatmap.png, candidates.jsonl")
    return 0


def _cmd_apply(args) -> int:
    from ..config import require
    from ..svd.run_apply import icl_apply

    require(args, "model", "edit", "out")
    info = icl_apply(args.model, args.edit, args.out, factorize_=args.factorize, head=args.head,
                     tokenizer=args.tokenizer, dtype=args.dtype, trust_remote_code=args.trust_remote_code,
                     device=args.device, device_map=args.device_map, max_memory=args.max_memory)
    print(f"wrote {info['format']} model to {info['out']} ({info['safetensors_bytes']:,} bytes of safetensors)")
    if info["format"] == "factorized":
        print("load it with leantune (any command's --model, or leantune.models.load_model)")
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

    se = icl_sub.add_parser("search", help="search SVD edits (layer, module, clipping rate) on validation")
    _common(se)
    se.add_argument("--strategy", default="paper", help="paper (Algorithm 1) | grid | greedy (default paper)")
    se.add_argument("--modules", default="mlp,attn", help="comma list of attn, mlp, all or logical matrices "
                                                          "(q, k, v, o, mlp_in, mlp_gate, mlp_out)")
    se.add_argument("--layers", default="all", help="all | last4 | 8-11 | 8:12 | 0,3,-1")
    se.add_argument("--rates", default="0,0.1,0.5,0.75,0.9,0.95,0.99,0.995", help="clipping rates xi in [0, 1)")
    se.add_argument("--top-k", type=int, default=3, help="paper strategy: layers ranked by condition number")
    se.add_argument("--n-val", type=int, default=200, help="validation examples carved from train")
    se.add_argument("--n-test", type=int, default=500, help="test examples (seeded sample of --split)")
    se.add_argument("--split", default="validation", help="split used as test (default validation)")
    se.add_argument("--svd-dtype", default="float32", help="float32 | float64")
    se.add_argument("--evaluator", default="icl", help="icl (causal LM) | classifier (sequence classification)")
    se.add_argument("--max-length", type=int, default=128, help="classifier evaluator: truncation length")
    se.add_argument("--calibrate", action="store_true", help="contextual calibration in every evaluation")
    se.add_argument("--dry-run", action="store_true", help="print the candidate count, a token estimate and the "
                                                           "expected peak memory")
    se.add_argument("--reuse-memory", metavar="SIZE", help="budget for the recorded hidden states of the layer-reuse "
                                                          "path on the model's devices, e.g. 200MB or 2GiB "
                                                          "(default: no bound); identical results")
    se.add_argument("--reuse-overflow", default="auto", help="beyond --reuse-memory: cpu (keep them on the CPU) | "
                                                             "recompute (from the nearest recorded layer) | auto "
                                                             "(cpu on an accelerator, recompute on the CPU)")
    se.add_argument("--out", default="runs/search", metavar="DIR", help="results; rerun to resume")
    se.add_argument("--wait-lock", action="store_true", help="if another search holds --out, wait for it to "
                                                             "finish instead of refusing")
    se.set_defaults(func=_cmd_search, parser=se)

    ap = icl_sub.add_parser("apply", help="write the model with an edit applied (dense, or --factorize)")
    ap.add_argument("--config", metavar="FILE", help="YAML/JSON with the same keys as these flags")
    ap.add_argument("--model", help="(required) the model the edit was searched on")
    ap.add_argument("--edit", help="(required) edit.json from `leantune icl search`")
    ap.add_argument("--out", metavar="DIR", help="(required) output folder")
    ap.add_argument("--factorize", action="store_true", help="store edited matrices as two low-rank factors")
    ap.add_argument("--head", default="causal-lm", choices=("causal-lm", "seq-cls", "base"))
    ap.add_argument("--tokenizer", help="tokenizer to save beside the model (default: the model's)")
    add_placement_flags(ap)
    ap.add_argument("--trust-remote-code", action="store_true")
    ap.set_defaults(func=_cmd_apply, parser=ap)

"""``leantune finetune`` and ``leantune merge``: arguments, one library call, a short printout."""

from __future__ import annotations


from .config import METHODS, SCHEDULERS, TARGETS

# flag -> (type, help); every flag is also a --config key (dashes become underscores)
_FLAGS = {
    "model": (str, "hub id, local directory or alias (minilm); default minilm"),
    "task": (str, "sst2 | rte | cb | mrpc | cola | qnli | boolq | emoc | agnews, or a name for --train-file data"),
    "rank": (int, "LoRA/DoRA rank (default 8)"),
    "alpha": (float, "LoRA alpha; scale = alpha / rank (default 16)"),
    "dropout": (float, "LoRA dropout (default 0.05)"),
    "lr": (float, "learning rate of W_q (default 1e-4)"),
    "v-lr-ratio": (float, "lambda: lr of W_v = lambda * lr (default 4)"),
    "k-lr-ratio": (float, "lr of W_k = ratio * lr when k is targeted (default 1)"),
    "head-lr": (float, "lr of the task head (default: --lr)"),
    "loraplus-ratio": (float, "LoRA+: lr of B = ratio * lr of A (default 1)"),
    "weight-decay": (float, "AdamW weight decay of 2-D tensors (default 0)"),
    "warmup": (float, "warm-up fraction of the steps (default 0.06)"),
    "scheduler": (str, "learning-rate schedule (default linear)"),
    "max-steps": (int, "optimizer steps (or --epochs)"),
    "epochs": (float, "epochs (default 3 when --max-steps is not given)"),
    "batch-size": (int, "per-device train batch size (default 32)"),
    "eval-batch-size": (int, "per-device eval batch size (default 64)"),
    "max-length": (int, "max tokens per example (default 128)"),
    "seed": (int, "seed of data order, head and adapter init (default 0)"),
    "out": (str, "output directory (metrics.json, adapter/, curves.png)"),
    "eval-every": (int, "evaluate every N steps (default: 5 times per run)"),
    "log-every": (int, "log the train loss every N steps (default 10)"),
    "data-dir": (str, "local task data (default $LEANTUNE_DATA_DIR, else ../shared/data, else hub)"),
    "train-file": (str, "custom task: .jsonl/.json/.csv/.tsv"),
    "eval-file": (str, "custom task eval file (default: 10%% of --train-file, seed 0)"),
    "text-columns": (str, "custom task: text column(s), comma-separated (one text or a pair)"),
    "label-column": (str, "custom task: label column (default label)"),
    "metric": (str, "custom task metric (default accuracy)"),
    "max-train-samples": (int, "train on a seeded random subset of this size"),
    "max-eval-samples": (int, "evaluate on a fixed random subset of this size"),
    "tokenizer": (str, "tokenizer when the model directory has none (hub id, directory, gpt2-offline)"),
    "dtype": (str, "weights' dtype: float32 (default) | bfloat16 | float16 | auto (the checkpoint's)"),
    "device": (str, "cpu | cuda | cuda:N (default: the Trainer's; cuda:LOCAL_RANK under a launcher)"),
    "grad-accum": (int, "gradient accumulation steps (default 1)"),
}
_CHOICES = {"scheduler": SCHEDULERS, "metric": ("accuracy", "matthews", "f1")}


def _cmd_finetune(args) -> int:
    from .config import build_config
    from .train import finetune

    overrides = {name.replace("-", "_"): getattr(args, name.replace("-", "_")) for name in _FLAGS}
    overrides.update(targets=args.targets, method=args.method, bf16=args.bf16 or None, fp16=args.fp16 or None,
                     gradient_checkpointing=args.gradient_checkpointing or None,
                     trust_remote_code=args.trust_remote_code or None, quiet=args.quiet or None,
                     export_peft=args.export_peft)
    # cli.main has already folded --config FILE into args (the file's keys are these flags' dests, flags win)
    cfg = build_config(None, **overrides)
    m = finetune(cfg)
    if "adapter_dir" in m:  # rank 0 only
        ev = m["eval"]
        print(f"{m['task']}: {cfg.method}({cfg.targets}) on {cfg.model}, lambda={cfg.v_lr_ratio}, "
              f"{m['train']['steps']} steps")
        print(f"eval {ev['metric']} = {ev['score']:.4f} (accuracy {ev['accuracy']:.4f}, loss {ev['loss']:.4f})")
        print(f"trainable params {m['trainable_params']:,} of {m['total_params']:,}; "
              f"adapter {m['artifact_bytes']:,} bytes; step time median {m['train']['step_time_s_median']:.3f} s; "
              f"peak RSS {m['train']['peak_rss_mb']:.0f} MB")
        print(f"metrics: {cfg.out}/metrics.json  adapter: {m['adapter_dir']}  curves: {m['curves_png']}")
        if "peft_adapter_dir" in m:
            print(f"peft adapter: {m['peft_adapter_dir']}")
    return 0


def _cmd_merge(args) -> int:
    from .artifacts import merge_adapter

    out = merge_adapter(args.adapter, args.out, base_model=args.base_model, dtype=args.dtype, device=args.device)
    print(f"merged model written to {out}")
    return 0


def register(sub) -> None:
    ft = sub.add_parser(
        "finetune", help="fine-tune only W_q/W_v (or other attention targets) with lr_V = lambda * lr_Q",
        description="Attention-selective fine-tuning (Yao et al., arXiv 2410.02247) for sequence classification: "
                    "train the chosen attention matrices (fused slices included) and the task head, with "
                    "per-matrix learning rates. Runs on the HF Trainer: use `accelerate launch -m leantune "
                    "finetune ...` or torchrun for data parallelism.")
    ft.add_argument("--config", metavar="FILE", help="YAML/JSON with the same keys (v_lr_ratio, ...); flags override")
    ft.add_argument("--targets", choices=TARGETS, default=None, help="which matrices train (default qv)")
    ft.add_argument("--method", choices=METHODS, default=None, help="full | lora | dora (default lora)")
    for name, (typ, hlp) in _FLAGS.items():
        ft.add_argument(f"--{name}", type=typ, default=None, help=hlp, choices=_CHOICES.get(name))
    ft.add_argument("--bf16", action="store_true", help="bfloat16 mixed precision (the Trainer's autocast)")
    ft.add_argument("--fp16", action="store_true", help="float16 mixed precision with loss scaling (CUDA only)")
    ft.add_argument("--gradient-checkpointing", action="store_true",
                    help="recompute activations in backward: less memory, more time")
    ft.add_argument("--trust-remote-code", action="store_true")
    ft.add_argument("--quiet", action="store_true", help="no progress bar")
    ft.add_argument("--no-peft-export", dest="export_peft", action="store_false", default=None,
                    help="skip the PEFT-format copy of a LoRA adapter (config key: export_peft: false)")
    ft.set_defaults(func=_cmd_finetune, parser=ft)

    mg = sub.add_parser("merge", help="fold a leantune adapter into its base model; write a dense model",
                        description="Load the base model named in ADAPTER/leantune_adapter.json, apply the adapter, "
                                    "merge it into the weights and save_pretrained the result (safetensors).")
    mg.add_argument("--adapter", required=True, metavar="DIR", help="the adapter/ directory of a finetune run")
    mg.add_argument("--out", required=True, metavar="DIR2")
    mg.add_argument("--base-model", help="override the base model path recorded in the adapter")
    mg.add_argument("--dtype", default="auto", help="auto (the base model's own: merging keeps it) | float32 | "
                                                    "bfloat16 | float16")
    mg.add_argument("--device", help="cpu, cuda, cuda:1 ... where the merge is computed (default cpu)")
    mg.set_defaults(func=_cmd_merge, parser=mg)

"""The fine-tuning configuration: one dataclass, filled from defaults, then a YAML/JSON file, then CLI flags.

Every key of a ``--config`` file is a field name below (``v_lr_ratio``, not ``--v-lr-ratio``); unknown
keys are an error rather than silently ignored, so a typo never trains with a default.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ..errors import LeantuneError
from ..options import option
from ..outputs import OVERWRITE_HELP

TARGETS = ("qv", "qkv", "qk", "q", "v", "k", "attn", "all")


def _method_names() -> tuple[str, ...]:
    from .methods import METHODS as registry  # full, lora, dora, and any method registered there

    return tuple(registry)


METHODS = _method_names()
OBJECTIVES = ("classify", "lm")  # finetune/objectives/: one class each
# HF schedulers that need no extra arguments (reduce_lr_on_plateau, cosine_with_min_lr, ... need more)
SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
              "inverse_sqrt")


@dataclass
class AdapterConfig:
    """What :func:`leantune.attach_adapters` attaches. The CLI's ``finetune`` uses these same defaults."""

    targets: str | tuple[str, ...] = "qv"
    """A preset (qv, qkv, qk, q, v, k, attn, all) or logical matrix names, e.g. ("q", "v")."""
    method: str = "lora"
    """full (the chosen matrices / fused slices themselves) | lora | dora (see finetune/methods/)."""
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.05
    """LoRA dropout on the adapter input (the paper's LoRA+ code uses 0.05)."""
    train_head: bool = True
    """Also train the task head (classifier / score) when the model has one."""

    def check(self) -> "AdapterConfig":
        if isinstance(self.targets, list):
            self.targets = tuple(self.targets)
        if isinstance(self.targets, str) and self.targets not in TARGETS:
            raise LeantuneError(f"unknown targets '{self.targets}'; choose one of {', '.join(TARGETS)}")
        if self.method not in _method_names():
            raise LeantuneError(f"unknown method '{self.method}'; choose one of {', '.join(_method_names())}")
        if self.targets == "all" and self.method != "full":
            raise LeantuneError("targets 'all' is plain full fine-tuning; use method 'full' (or pick attention targets)")
        if self.rank <= 0:
            raise LeantuneError(f"rank must be positive, got {self.rank}")
        if not 0 <= self.dropout < 1:
            raise LeantuneError(f"dropout must be in [0, 1), got {self.dropout}")
        return self


@dataclass
class FinetuneConfig:
    """One fine-tuning run: the fields are the flags of ``leantune finetune`` and the keys of its ``--config``."""

    model: str = option("minilm", "hub id, local directory or alias (minilm); default minilm")
    # built-in task (sst2, rte, ...; default sst2), or a name for --train-file data (default: the file's stem)
    task: str | None = option(None, "sst2 | rte | cb | mrpc | cola | qnli | boolq | emoc | agnews, or a name for "
                                    "--train-file data")
    objective: str = option("classify", "classify (a new sequence-classification head; default) | lm (a causal LM "
                                        "fine-tuned on the task's ICL prompt, loss on the label word's tokens only)",
                            choices=OBJECTIVES)
    icl_shots: int = option(4, "--objective lm: besides 0 shots, evaluate with this many demonstrations per class "
                               "(the ICL scorer of `icl eval`, before and after training; default 4)")
    targets: str = option(AdapterConfig.targets, "which matrices train (default qv): qv | qkv | qk | q | v | k | "
                                                 "attn (q,k,v,o) | all (plain full fine-tuning)", choices=TARGETS)
    method: str = option(AdapterConfig.method, "full | lora | dora (default lora); full = the chosen matrices or "
                                               "fused slices themselves", choices=METHODS)
    rank: int = option(AdapterConfig.rank, "LoRA/DoRA rank (default 8)")
    alpha: float = option(AdapterConfig.alpha, "LoRA alpha; scale = alpha / rank (default 16)")
    dropout: float = option(AdapterConfig.dropout, "LoRA dropout (default 0.05, as the paper's LoRA+ code)")
    lr: float = option(1e-4, "learning rate of W_q (and of the LoRA A matrices of W_q) (default 1e-4)")
    v_lr_ratio: float = option(4.0, "lambda: lr of W_v = lambda * lr (default 4, the paper's GLUE setting)")
    k_lr_ratio: float = option(1.0, "lr of W_k = ratio * lr when k is targeted (default 1)")
    head_lr: float | None = option(None, "lr of the task head (default: --lr)")
    loraplus_ratio: float = option(1.0, "LoRA+: lr of B = ratio * lr of A (default 1; composes with lambda)")
    weight_decay: float = option(0.0, "AdamW weight decay of 2-D tensors (default 0); biases, norms and DoRA "
                                      "magnitudes never decay")
    warmup: float = option(0.06, "warm-up fraction of the steps (default 0.06)")
    scheduler: str = option("linear", "learning-rate schedule (default linear)", choices=SCHEDULERS)
    max_steps: int | None = option(None, "optimizer steps (or --epochs)")
    epochs: float | None = option(None, "epochs (default 3 when --max-steps is not given)")
    batch_size: int = option(32, "per-device train batch size (default 32; per process under accelerate launch)")
    eval_batch_size: int = option(64, "per-device eval batch size (default 64)")
    max_length: int = option(128, "max tokens per example (default 128)")
    seed: int = option(0, "seed of data order, head and adapter init (default 0)")
    out: str | None = option(None, "output directory (metrics.json, adapter/, curves.png)")
    eval_every: int | None = option(None, "evaluate every N steps (default: up to 5 evaluations, as many as keep "
                                          "evaluation near 20%% of the run's time; a short run evaluates once, at "
                                          "its end)")
    log_every: int = option(10, "log the train loss every N steps (default 10)")
    data_dir: str | None = option(None, "local task data (default $LEANTUNE_DATA_DIR, else ../shared/data, else hub)")
    train_file: str | None = option(None, "custom task: .jsonl/.json/.csv/.tsv")
    eval_file: str | None = option(None, "custom task eval file (default: 10%% of --train-file, seed 0)")
    text_columns: list[str] = option(help="custom task: text column(s), comma-separated (one text or a pair)",
                                     factory=list)
    label_column: str = option("label", "custom task: label column (default label)")
    metric: str | None = option(None, "custom task metric (default accuracy); built-in tasks use their own",
                                choices=("accuracy", "matthews", "f1"))
    max_train_samples: int | None = option(None, "train on a seeded random subset of this size")
    max_eval_samples: int | None = option(None, "evaluate on a fixed random subset of this size")
    tokenizer: str | None = option(None, "tokenizer when the model directory has none (hub id, directory, "
                                         "gpt2-offline)")
    bf16: bool = option(False, "bfloat16 mixed precision (the Trainer's autocast; weights stay in --dtype)")
    fp16: bool = option(False, "float16 mixed precision with loss scaling (CUDA only; needs float32 weights)")
    dtype: str = option("float32", "weights' dtype: float32 (default) | bfloat16 | float16 | auto (the "
                                   "checkpoint's)")
    device: str | None = option(None, "cpu | cuda | cuda:N (default: the Trainer's; cuda:LOCAL_RANK under a "
                                      "launcher)")
    gradient_checkpointing: bool = option(False, "recompute activations in backward: less memory, more time "
                                                 "(non-reentrant)")
    grad_accum: int = option(1, "gradient accumulation steps (default 1): the effective batch is batch-size x "
                                "grad-accum x processes")
    trust_remote_code: bool = option(False, "allow the model repo's own Python code (transformers' trust_remote_code)")
    quiet: bool = option(False, "no progress bar")
    overwrite: bool = option(False, OVERWRITE_HELP, recorded=False)
    export_peft: bool = option(True, "skip the PEFT-format copy of a LoRA adapter (config key: export_peft: false)",
                               off_flag="--no-peft-export")

    def check(self) -> "FinetuneConfig":
        if self.targets not in TARGETS:
            raise LeantuneError(f"unknown targets '{self.targets}'; choose one of {', '.join(TARGETS)}")
        if self.method not in _method_names():
            raise LeantuneError(f"unknown method '{self.method}'; choose one of {', '.join(_method_names())}")
        if self.targets == "all" and self.method != "full":
            raise LeantuneError("targets 'all' is plain full fine-tuning; use --method full (or pick attention targets)")
        if self.objective not in OBJECTIVES:
            raise LeantuneError(f"unknown objective '{self.objective}'; choose one of {', '.join(OBJECTIVES)}")
        if self.icl_shots < 0:
            raise LeantuneError(f"--icl-shots must be >= 0, got {self.icl_shots}")
        if self.scheduler not in SCHEDULERS:
            raise LeantuneError(f"unknown scheduler '{self.scheduler}'; choose one of {', '.join(SCHEDULERS)}")
        if self.max_steps is not None and self.epochs is not None:
            raise LeantuneError("give either --max-steps or --epochs, not both")
        if self.bf16 and self.fp16:
            raise LeantuneError("give either --bf16 or --fp16, not both")
        import torch

        from ..models import DTYPES

        if self.dtype not in DTYPES:
            raise LeantuneError(f"unknown dtype '{self.dtype}'; choose one of {', '.join(DTYPES)}")
        if self.fp16 and DTYPES[self.dtype] in ("auto", torch.float16):
            raise LeantuneError("--fp16 mixed precision needs float32 weights (--dtype float32): the Trainer's "
                                "loss scaler cannot unscale float16 gradients")
        from ..validate import check_values  # the same range/finiteness table as the command line

        check_values(asdict(self), "finetune")
        if isinstance(self.text_columns, str):
            self.text_columns = [c.strip() for c in self.text_columns.split(",") if c.strip()]
        return self

    @property
    def head_lr_value(self) -> float:
        return self.lr if self.head_lr is None else self.head_lr

    def to_dict(self) -> dict:
        return asdict(self)

    def adapter_config(self) -> AdapterConfig:
        return AdapterConfig(self.targets, self.method, self.rank, self.alpha, self.dropout)


FIELD_NAMES = tuple(f.name for f in fields(FinetuneConfig))


def build_config(file: str | Path | None = None, **overrides) -> FinetuneConfig:
    """Defaults < config file < overrides (None values in overrides mean 'not given')."""
    from ..config import config_values  # the one YAML/JSON reader of every command

    values = config_values(str(file), FIELD_NAMES) if file else {}
    values.update({k: v for k, v in overrides.items() if v is not None})
    unknown = sorted(set(values) - set(FIELD_NAMES))
    if unknown:
        raise LeantuneError(f"unknown fine-tuning option(s): {', '.join(unknown)}")
    from ..validate import check_types

    check_types(FinetuneConfig, values)  # the command line's type check, for the file and the keywords
    try:
        cfg = FinetuneConfig(**values)
    except TypeError as e:
        raise LeantuneError(f"bad fine-tuning configuration: {e}") from None
    return cfg.check()

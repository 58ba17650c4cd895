"""The fine-tuning configuration: one dataclass, filled from defaults, then a YAML/JSON file, then CLI flags.

Every key of a ``--config`` file is a field name below (``v_lr_ratio``, not ``--v-lr-ratio``); unknown
keys are an error rather than silently ignored, so a typo never trains with a default.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..errors import LeantuneError

TARGETS = ("qv", "qkv", "qk", "q", "v", "k", "attn", "all")


def _method_names() -> tuple[str, ...]:
    from .methods import METHODS as registry  # full, lora, dora, and any method registered there

    return tuple(registry)


METHODS = _method_names()
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
    model: str = "minilm"
    """Hub id, local directory saved with save_pretrained, or alias (minilm)."""
    task: str | None = None
    """Built-in task (sst2, rte, cb, mrpc, cola, qnli, boolq, emoc, agnews; default sst2), or a name for
    --train-file data (default: the file's stem)."""
    targets: str = AdapterConfig.targets
    """Which attention matrices train: qv | qkv | q | v | k | attn (q,k,v,o) | all (plain full fine-tuning)."""
    method: str = AdapterConfig.method
    """full (the chosen matrices / fused slices themselves) | lora | dora."""
    rank: int = AdapterConfig.rank
    alpha: float = AdapterConfig.alpha
    dropout: float = AdapterConfig.dropout
    """LoRA dropout on the adapter input (the paper's LoRA+ code uses 0.05)."""
    lr: float = 1e-4
    """Learning rate of W_q (and of LoRA A matrices of W_q)."""
    v_lr_ratio: float = 4.0
    """lambda: lr of W_v = v_lr_ratio * lr (the paper's GLUE setting is 4)."""
    k_lr_ratio: float = 1.0
    """lr of W_k = k_lr_ratio * lr when k is targeted."""
    head_lr: float | None = None
    """lr of the task head; default: lr."""
    loraplus_ratio: float = 1.0
    """LoRA+: lr of every B matrix = loraplus_ratio * lr of its A matrix (composes with lambda)."""
    weight_decay: float = 0.0
    """AdamW weight decay of 2-D tensors; biases, norms and DoRA magnitudes never decay."""
    warmup: float = 0.06
    """Linear warm-up, as a fraction of the training steps."""
    scheduler: str = "linear"
    max_steps: int | None = None
    epochs: float | None = None
    """Either max_steps or epochs; neither -> 3 epochs."""
    batch_size: int = 32
    """Per device (per process under accelerate launch / torchrun)."""
    eval_batch_size: int = 64
    max_length: int = 128
    seed: int = 0
    out: str | None = None
    eval_every: int | None = None
    """Evaluate every N steps; default: 5 evaluations over the run (plus the final one)."""
    log_every: int = 10
    data_dir: str | None = None
    """Local data in the formats of ../shared/data; default $LEANTUNE_DATA_DIR, else ../shared/data, else hub."""
    train_file: str | None = None
    """Custom task: .jsonl/.json/.csv/.tsv with --text-columns and --label-column."""
    eval_file: str | None = None
    """Custom task eval file; default: 10% of train_file carved with seed 0."""
    text_columns: list[str] = field(default_factory=list)
    label_column: str = "label"
    metric: str | None = None
    """Custom task metric: accuracy | matthews | f1; built-in tasks use the task's own."""
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    tokenizer: str | None = None
    """Tokenizer to use when the model directory has none (hub id, local dir, or 'gpt2-offline')."""
    bf16: bool = False
    """bfloat16 mixed precision through the Trainer (weights stay in --dtype, float32 by default)."""
    fp16: bool = False
    """float16 mixed precision with loss scaling through the Trainer (needs a CUDA device)."""
    dtype: str = "float32"
    """dtype the model's weights load in: float32 | bfloat16 | float16 | auto (the checkpoint's own)."""
    device: str | None = None
    """cpu | cuda | cuda:N; default: the Trainer's choice (cuda:LOCAL_RANK under a launcher, else cuda, else cpu)."""
    gradient_checkpointing: bool = False
    """Recompute activations in backward (non-reentrant): less memory, about a third more time."""
    grad_accum: int = 1
    """Gradient accumulation steps: the effective batch is batch_size x grad_accum x processes."""
    trust_remote_code: bool = False
    quiet: bool = False
    export_peft: bool = True
    """Also write a PEFT-format adapter (unfused LoRA only)."""

    def check(self) -> "FinetuneConfig":
        if self.targets not in TARGETS:
            raise LeantuneError(f"unknown targets '{self.targets}'; choose one of {', '.join(TARGETS)}")
        if self.method not in _method_names():
            raise LeantuneError(f"unknown method '{self.method}'; choose one of {', '.join(_method_names())}")
        if self.targets == "all" and self.method != "full":
            raise LeantuneError("targets 'all' is plain full fine-tuning; use --method full (or pick attention targets)")
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


def read_config_file(path: str | Path) -> dict:
    """A YAML or JSON mapping of FinetuneConfig keys (dashes allowed: ``v-lr-ratio``)."""
    from ..config import read_config_file as read_mapping  # the one YAML/JSON reader of every command

    out = {str(k).replace("-", "_"): v for k, v in read_mapping(str(path)).items()}
    unknown = sorted(set(out) - set(FIELD_NAMES))
    if unknown:
        raise LeantuneError(f"config file {path}: unknown key(s) {', '.join(unknown)}; "
                            f"known keys: {', '.join(FIELD_NAMES)}")
    return out


def build_config(file: str | Path | None = None, **overrides) -> FinetuneConfig:
    """Defaults < config file < overrides (None values in overrides mean 'not given')."""
    values = read_config_file(file) if file else {}
    values.update({k: v for k, v in overrides.items() if v is not None})
    unknown = sorted(set(values) - set(FIELD_NAMES))
    if unknown:
        raise LeantuneError(f"unknown fine-tuning option(s): {', '.join(unknown)}")
    try:
        cfg = FinetuneConfig(**values)
    except TypeError as e:
        raise LeantuneError(f"bad fine-tuning configuration: {e}") from None
    return cfg.check()

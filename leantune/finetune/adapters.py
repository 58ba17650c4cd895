"""Trainable parts on chosen logical matrices: full updates, LoRA or DoRA, fused weights included.

One interface for every family: :func:`attach` freezes the model and makes exactly the chosen logical
matrices (``arch.matrix(layer, "q")`` ...) trainable, whether each is a whole ``nn.Linear`` / ``Conv1D``
or a slice of a fused QKV projection. This is where leantune goes beyond PEFT, whose LoRA wraps whole
modules: PEFT can neither restrict an update to the Q and V rows of GPT-2's ``c_attn`` /
NeoX's ``query_key_value`` nor give Q and V different learning rates.

How each method is realised:

* ``full`` on an unfused matrix: its own weight (and bias) gets ``requires_grad``. No overhead.
* ``full`` on a fused slice: a ``torch.nn.utils.parametrize`` parametrization holds trainable copies of
  the chosen rows and rebuilds the fused weight with ``index_copy`` on every forward; the stored fused
  weight stays frozen (so the K rows are bit-identical by construction). Memory overhead: one extra
  copy of the chosen rows (e.g. 2/3 of ``c_attn`` for Q+V) plus one transient fused weight per layer
  kept for backward; compute is the same single GEMM as the original layer.
* ``lora`` / ``dora``: a small module ``leantune_lora`` attached to the projection, whose ``forward`` it
  takes over: ``out = x W^T + b`` as one fresh 2-D tensor, then ``out += scale * dropout(x) A^T B^T`` in
  place (``addmm_``). The module object, its parameter names and the arch map's references stay as they
  were. On a fused projection B is zero-padded to all fused rows, so untargeted rows (K) get exactly 0.
  DoRA also rescales the targeted rows by ``magnitude / ||W + scale*B@A||`` (norm detached, as PEFT and
  the DoRA paper do). Biases stay frozen, as with PEFT's ``bias="none"``. For LoRA a step does PEFT's
  work minus two output-sized temporaries (PEFT materialises ``B(A(x))``, then ``* scaling``, then the sum).

Each method (``full``, ``lora``, ``dora``) is a class in ``methods/``; this file attaches whichever is named.
"""

from __future__ import annotations

import torch
from torch import nn

from ..arch import ArchMap, LogicalMatrix, get_arch, head_parameters
from ..errors import LeantuneError
from .config import AdapterConfig
from .methods import Trained, get_method
from .methods.full import FusedRows  # noqa: F401  (re-exported: where these lived before the method registry)
from .methods.lora import LoraRows, _lora_forward  # noqa: F401
from .targets import by_module, target_matrices


# --- attaching ----------------------------------------------------------------------------------------------
class Adapted:
    """A model with trainable parts attached; knows every trained tensor and how to fold them in."""

    def __init__(self, model: nn.Module, arch: ArchMap, targets: str, method: str, rank: int, alpha: float,
                 dropout: float):
        self.model, self.arch = model, arch
        self.targets, self.method, self.rank, self.alpha, self.dropout = targets, method, rank, alpha, dropout
        self.trained: list[Trained] = []
        self._lora_paths: list[str] = []  # modules whose forward runs through their LoraRows
        self._fused_params: dict[str, list[str]] = {}  # module path -> parametrized tensor names
        self._parts: dict[str, list[LogicalMatrix]] = {}  # module path -> its targeted logical matrices
        self.merged = False

    @property
    def num_trainable(self) -> int:
        return sum(t.param.numel() for t in self.trained)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Only the trained tensors, matrices as [out, in], contiguous, on CPU."""
        out = {}
        for t in self.trained:
            v = t.param.detach()
            if t.transposed:
                v = v.T
            out[t.key] = v.contiguous().cpu().clone()
        return out

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        keys = {t.key for t in self.trained}
        missing, unexpected = sorted(keys - set(tensors)), sorted(set(tensors) - keys)
        if missing or unexpected:
            raise LeantuneError(f"adapter does not match the model: missing {missing[:5]}, unexpected "
                                f"{unexpected[:5]}; was it trained with the same targets/method on this model?")
        with torch.no_grad():
            for t in self.trained:
                v = tensors[t.key]
                v = v.T if t.transposed else v
                if tuple(v.shape) != tuple(t.param.shape):
                    raise LeantuneError(f"adapter tensor {t.key} has shape {tuple(v.shape)}, the model expects "
                                        f"{tuple(t.param.shape)}")
                t.param.copy_(v.to(t.param.dtype))

    def merge(self) -> nn.Module:
        """Fold every trained part into the model's own weights; the model is a plain transformers model again."""
        if self.merged:
            return self.model
        impl = get_method(self.method)
        if self.targets != "all":
            for path, parts in self._parts.items():
                impl.merge(self, self.model.get_submodule(path), path, parts)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.merged = True
        return self.model


def attach(model: nn.Module, targets=AdapterConfig.targets, method: str = AdapterConfig.method,
           rank: int = AdapterConfig.rank, alpha: float = AdapterConfig.alpha, dropout: float = AdapterConfig.dropout,
           train_head: bool = AdapterConfig.train_head) -> Adapted:
    """Freeze ``model`` and make the chosen logical matrices (and the task head) trainable.

    ``targets``: a preset (qv, qkv, q, v, k, attn, all) or a tuple of logical matrix names (("q", "v")).
    The public entry point is :func:`leantune.attach_adapters` (defaults shared with the CLI).
    """
    arch = get_arch(model)
    impl = get_method(method)
    targets = tuple(targets) if isinstance(targets, list) else targets  # JSON (adapter meta) gives lists
    ad = Adapted(model, arch, targets, method, rank, alpha, dropout)
    for p in model.parameters():
        p.requires_grad_(False)

    if targets == "all":  # plain full fine-tuning baseline: every parameter, one key per model parameter
        head = {id(p) for p in head_parameters(model).values()}
        for name, p in model.named_parameters():
            p.requires_grad_(True)
            ad.trained.append(Trained(f"model.{name}", "head" if id(p) in head else "all",
                                      "bias" if p.ndim < 2 else "weight", p))
        return ad

    matrices = target_matrices(arch, targets)
    limit = min((min(m.shape) for m in matrices), default=rank)
    if method != "full" and rank > limit:  # refused, not warned: it only costs memory and time, never helps
        raise LeantuneError(f"--rank {rank} is above min(out, in) = {limit} of the targeted matrices; an update "
                            f"of rank > {limit} does not exist, the extra rank only costs memory: use --rank <= {limit}")
    for path, parts in by_module(matrices).items():
        ad._parts[path] = parts
        impl.attach(ad, model.get_submodule(path), path, parts)
    if train_head:
        for name, p in head_parameters(model).items():
            p.requires_grad_(True)
            ad.trained.append(Trained(f"head.{name}", "head", "bias" if p.ndim < 2 else "weight", p))
    return ad

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
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from ..arch import ArchMap, LogicalMatrix, get_arch, head_parameters
from ..errors import LeantuneError
from .targets import by_module, target_matrices


@dataclass
class Trained:
    """One trained tensor: what it is and the parameter that holds it."""

    key: str  # key in the adapter file, e.g. "layers.3.v.lora_A", "head.classifier.weight"
    group: str  # q | k | v | o | head | all
    role: str  # weight | bias | lora_A | lora_B | magnitude
    param: nn.Parameter
    matrix: LogicalMatrix | None = None
    transposed: bool = False  # stored [in, out] (Conv1D); the adapter file always holds [out, in]


# --- full updates of fused slices ---------------------------------------------------------------------------
class FusedRows(nn.Module):
    """Parametrization: the fused tensor with the chosen output rows taken from trainable parameters."""

    def __init__(self, original: torch.Tensor, parts: list[LogicalMatrix], axis: int):
        super().__init__()
        self.axis = axis
        self.names = [p.name for p in parts]
        for p in parts:
            idx = p.row_index().to(original.device)
            self.register_buffer(f"rows_{p.name}", idx, persistent=False)
            ax = axis if original.ndim == 2 else 0
            setattr(self, f"part_{p.name}", nn.Parameter(original.detach().index_select(ax, idx).clone()))

    def forward(self, original: torch.Tensor) -> torch.Tensor:
        ax = self.axis if original.ndim == 2 else 0
        idx = torch.cat([getattr(self, f"rows_{n}") for n in self.names])
        values = torch.cat([getattr(self, f"part_{n}") for n in self.names], dim=ax)
        return original.index_copy(ax, idx, values)  # out of place: gradients reach only `values`


# --- LoRA / DoRA on chosen rows -----------------------------------------------------------------------------
class LoraRows(nn.Module):
    """LoRA (or DoRA) for some logical parts of one projection; it computes the whole projection.

    ``attach`` points the projection's ``forward`` here, so the base GEMM and the adapter share one fresh
    2-D output tensor and the low-rank term is added into it in place (``addmm_``, beta = 1): no hook, no
    output-sized temporary for LoRA, and autograd passes the output gradient through unchanged. (A hook
    only sees the output as a view, where an in-place add makes backward clone the whole gradient.)
    """

    def __init__(self, module: nn.Module, parts: list[LogicalMatrix], rank: int, alpha: float, dropout: float,
                 dora: bool):
        super().__init__()
        self.names = [p.name for p in parts]
        self.scale = alpha / rank
        self.dora = dora
        self.p = dropout  # plain float: no dropout op at all when 0
        self.transposed = parts[0].transposed
        self.whole = len(parts) == 1 and not parts[0].fused  # unfused: the adapter covers every output row
        w = module.weight
        in_features = parts[0].shape[1]
        self.out_features = w.shape[1] if self.transposed else w.shape[0]
        self.lora_A = nn.ParameterDict()
        self.lora_B = nn.ParameterDict()
        self.magnitude = nn.ParameterDict()
        for p in parts:
            self.register_buffer(f"rows_{p.name}", p.row_index().to(w.device), persistent=False)
            a = torch.empty(rank, in_features, dtype=w.dtype, device=w.device)
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))  # PEFT's default init; B = 0 so training starts at W
            self.lora_A[p.name] = nn.Parameter(a)
            self.lora_B[p.name] = nn.Parameter(torch.zeros(p.shape[0], rank, dtype=w.dtype, device=w.device))
            if dora:
                self.magnitude[p.name] = nn.Parameter(p.read().norm(p=2, dim=1).to(w.dtype))
        self.register_buffer("all_rows", torch.cat([self.rows(n) for n in self.names]), persistent=False)

    def rows(self, name: str) -> torch.Tensor:
        return getattr(self, f"rows_{name}")

    def base_rows(self, weight: torch.Tensor, name: str) -> torch.Tensor:
        """The frozen [rows, in] matrix of one part."""
        w = weight.detach()
        return w.index_select(1, self.rows(name)).T if self.transposed else w.index_select(0, self.rows(name))

    def delta(self, name: str) -> torch.Tensor:
        return (self.lora_B[name] @ self.lora_A[name]) * self.scale

    def merged_rows(self, weight: torch.Tensor, name: str) -> torch.Tensor:
        """[rows, in] weight with the adapter folded in (what `merge` writes)."""
        w = self.base_rows(weight, name) + self.delta(name)
        if self.dora:
            w = (self.magnitude[name] / w.norm(p=2, dim=1)).unsqueeze(1) * w
        return w

    # --- the parts stacked in `names` order (rows in `all_rows` order): one GEMM per step for all of them ----
    def stacked_a(self) -> torch.Tensor:
        """[parts * rank, in]."""
        if len(self.names) == 1:
            return self.lora_A[self.names[0]]
        return torch.cat([self.lora_A[n] for n in self.names])

    def stacked_b(self) -> torch.Tensor:
        """[target rows, parts * rank], block diagonal: part i's B only meets part i's A."""
        if len(self.names) == 1:
            return self.lora_B[self.names[0]]
        return torch.block_diag(*[self.lora_B[n] for n in self.names])

    def padded(self, b: torch.Tensor) -> torch.Tensor:
        """[out_features, parts * rank]: ``b`` on the targeted rows, zero on all other fused rows.

        This is how a fused slice goes beyond PEFT without indexing activations: one ``addmm_`` over all
        fused rows adds exactly 0 to the rows of untargeted parts (the K rows of GPT-2's ``c_attn``, NeoX's
        interleaved ``query_key_value``, Falcon's groups). Measured on CPU (GPT-2 ``c_attn``, q+v, r=8) it
        is as fast as exact ``addmm_``s into per-slice column views behind a custom autograd Function,
        with the same memory; the wasted rank-16 FLOPs are about 2% of the layer's base GEMMs.
        """
        if self.whole:
            return b
        return b.new_zeros(self.out_features, b.shape[1]).index_copy(0, self.all_rows, b)

    def stacked_base(self, weight: torch.Tensor) -> torch.Tensor:
        """[target rows, in] of the frozen weight (no copy when the target is the whole weight)."""
        if self.whole:
            return weight.detach().T if self.transposed else weight.detach()
        return torch.cat([self.base_rows(weight, n) for n in self.names])

    # --- forward ----------------------------------------------------------------------------------------------
    def base(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """The frozen projection of 2-D ``x``; always a fresh tensor (so in-place adds into it are safe)."""
        if not self.transposed:
            return F.linear(x, weight, bias)
        return torch.addmm(bias, x, weight) if bias is not None else x @ weight  # Conv1D: [in, out]

    def forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        lead = x.shape[:-1]
        x = x.reshape(-1, x.shape[-1])
        xd = F.dropout(x, self.p, self.training) if self.p > 0 else x
        xa = F.linear(xd, self.stacked_a())  # [tokens, parts * rank]
        if self.dora:
            out, b = self._dora_base(x, xd, weight, bias)
        else:
            out, b = self.base(x, weight, bias), self.stacked_b()
        # In place, beta = 1: the base GEMM does not keep its output for backward, and the output gradient
        # passes through unchanged (PEFT instead materialises B(A(x)), then * scaling, then the sum).
        # (under autocast -- the Trainer's --bf16/--fp16 -- out and xa are half while B is float32: match out)
        out.addmm_(xa.to(out.dtype), self.padded(b).T.to(out.dtype), alpha=self.scale)
        return out.view(*lead, out.shape[-1])

    def _dora_base(self, x, xd, weight, bias) -> tuple[torch.Tensor, torch.Tensor]:
        """DoRA: targeted rows = s * (W0 x' + scale B A x'), x' = dropout(x), s = magnitude / ||W0 + scale B A||.

        Returns the output without the low-rank term, and B with its rows scaled by s (so the term still
        goes in with one ``addmm_``).
        """
        w0 = self.stacked_base(weight)
        b = self.stacked_b()
        norm = (w0 + (b @ self.stacked_a()) * self.scale).norm(p=2, dim=1).detach()  # detached: DoRA sec. 4.3
        s = torch.cat([self.magnitude[n] for n in self.names]) / norm  # [target rows]
        if self.p > 0 and self.training:  # base(x) + (s - 1) * W0 x' on the targeted rows, as PEFT
            out = self.base(x, weight, bias)
            z = F.linear(xd, w0)  # only the targeted rows
            if self.whole:
                out.addcmul_(z, s - 1)
            else:
                out.index_add_(1, self.all_rows, (z * (s - 1)).to(out.dtype))
        else:  # x' == x: s * (W0 x) + bias, with s = 1 on untargeted rows
            y = self.base(x, weight, None)
            s_out = s if self.whole else s.new_ones(self.out_features).index_copy(0, self.all_rows, s)
            out = torch.addcmul(bias, y, s_out) if bias is not None else y * s_out
        return out, b * s.unsqueeze(1)


def _lora_forward(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Stands in for the projection's own ``forward`` (``y = x W^T + b``, or ``x W + b`` for Conv1D)."""
    return module.leantune_lora(x, module.weight, module.bias)


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
        with torch.no_grad():
            for path, names in self._fused_params.items():
                module = self.model.get_submodule(path)
                for n in names:
                    parametrize.remove_parametrizations(module, n, leave_parametrized=True)
            for path in self._lora_paths:
                module = self.model.get_submodule(path)
                lora: LoraRows = module.leantune_lora
                news = {m.name: lora.merged_rows(module.weight, m.name) for m in self._parts[path]}
                del module.forward  # the class's own forward again
                del module.leantune_lora
                for m in self._parts[path]:
                    m.write(news[m.name])
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.merged = True
        return self.model


def attach(model: nn.Module, targets: str = "qv", method: str = "lora", rank: int = 8, alpha: float = 16.0,
           dropout: float = 0.0, train_head: bool = True) -> Adapted:
    """Freeze ``model`` and make the chosen logical matrices (and the task head) trainable."""
    arch = get_arch(model)
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

    for path, parts in by_module(target_matrices(arch, targets)).items():
        module = model.get_submodule(path)
        ad._parts[path] = parts
        if method == "full":
            _attach_full(ad, module, path, parts)
        else:
            if getattr(module, "leantune_lora", None) is not None or "forward" in vars(module):
                raise LeantuneError(f"{path} already has a leantune adapter attached (or a replaced forward)")
            if not (isinstance(module, nn.Linear) or parts[0].transposed):
                raise LeantuneError(f"{path} is a {type(module).__name__}, not an nn.Linear or Conv1D: "
                                    "LoRA/DoRA would not reproduce its forward")
            module.leantune_lora = LoraRows(module, parts, rank, alpha, dropout, dora=(method == "dora"))
            # An instance attribute shadows the class's forward (hooks still run); a partial of a module-level
            # function keeps the model deep-copyable and picklable.
            module.forward = functools.partial(_lora_forward, module)
            ad._lora_paths.append(path)
            for m in parts:
                pre = f"layers.{m.layer}.{m.name}"
                ad.trained.append(Trained(f"{pre}.lora_A", m.name, "lora_A", module.leantune_lora.lora_A[m.name], m))
                ad.trained.append(Trained(f"{pre}.lora_B", m.name, "lora_B", module.leantune_lora.lora_B[m.name], m))
                if method == "dora":
                    ad.trained.append(Trained(f"{pre}.magnitude", m.name, "magnitude",
                                              module.leantune_lora.magnitude[m.name], m))
    if train_head:
        for name, p in head_parameters(model).items():
            p.requires_grad_(True)
            ad.trained.append(Trained(f"head.{name}", "head", "bias" if p.ndim < 2 else "weight", p))
    return ad


def _attach_full(ad: Adapted, module: nn.Module, path: str, parts: list[LogicalMatrix]) -> None:
    if not parts[0].fused:  # the whole weight is the logical matrix: train it in place
        m = parts[0]
        module.weight.requires_grad_(True)
        ad.trained.append(Trained(f"layers.{m.layer}.{m.name}.weight", m.name, "weight", module.weight, m,
                                  transposed=m.transposed))
        if module.bias is not None:
            module.bias.requires_grad_(True)
            ad.trained.append(Trained(f"layers.{m.layer}.{m.name}.bias", m.name, "bias", module.bias, m))
        return
    names = ["weight"] + (["bias"] if module.bias is not None else [])
    for tensor_name in names:
        original = getattr(module, tensor_name)
        parametrize.register_parametrization(module, tensor_name, FusedRows(original, parts, parts[0].out_axis))
        par = module.parametrizations[tensor_name][0]
        for m in parts:
            ad.trained.append(Trained(f"layers.{m.layer}.{m.name}.{tensor_name}", m.name, tensor_name,
                                      getattr(par, f"part_{m.name}"), m,
                                      transposed=m.transposed and tensor_name == "weight"))
    ad._fused_params[path] = names

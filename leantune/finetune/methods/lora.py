"""``lora``: a low-rank update ``scale * B @ A`` on the targeted rows of a projection (fused slices too).

A small module ``leantune_lora`` is attached to the projection, whose ``forward`` it takes over:
``out = x W^T + b`` as one fresh 2-D tensor, then ``out += scale * dropout(x) A^T B^T`` in place
(``addmm_``). The module object, its parameter names and the arch map's references stay as they were.
On a fused projection B is zero-padded to all fused rows, so untargeted rows (K) get exactly 0.
Biases stay frozen, as with PEFT's ``bias="none"``. ``dora`` (``dora.py``) reuses all of this.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

from ...arch import LogicalMatrix
from ...errors import LeantuneError
from .base import AdapterMethod, Trained, register_method


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


@register_method
class Lora(AdapterMethod):
    name = "lora"
    dora = False
    peft_exportable = True

    def attach(self, ad, module: nn.Module, path: str, parts: list[LogicalMatrix]) -> None:
        if getattr(module, "leantune_lora", None) is not None or "forward" in vars(module):
            raise LeantuneError(f"{path} already has a leantune adapter attached (or a replaced forward)")
        if not (isinstance(module, nn.Linear) or parts[0].transposed):
            raise LeantuneError(f"{path} is a {type(module).__name__}, not an nn.Linear or Conv1D: "
                                "LoRA/DoRA would not reproduce its forward")
        module.leantune_lora = LoraRows(module, parts, ad.rank, ad.alpha, ad.dropout, dora=self.dora)
        # An instance attribute shadows the class's forward (hooks still run); a partial of a module-level
        # function keeps the model deep-copyable and picklable.
        module.forward = functools.partial(_lora_forward, module)
        ad._lora_paths.append(path)
        for m in parts:
            pre = f"layers.{m.layer}.{m.name}"
            ad.trained.append(Trained(f"{pre}.lora_A", m.name, "lora_A", module.leantune_lora.lora_A[m.name], m))
            ad.trained.append(Trained(f"{pre}.lora_B", m.name, "lora_B", module.leantune_lora.lora_B[m.name], m))
            if self.dora:
                ad.trained.append(Trained(f"{pre}.magnitude", m.name, "magnitude",
                                          module.leantune_lora.magnitude[m.name], m))

    def merge(self, ad, module: nn.Module, path: str, parts: list[LogicalMatrix]) -> None:
        with torch.no_grad():
            lora: LoraRows = module.leantune_lora
            news = {m.name: lora.merged_rows(module.weight, m.name) for m in parts}
            del module.forward  # the class's own forward again
            del module.leantune_lora
            for m in parts:
                m.write(news[m.name])

"""A logical weight matrix (q, k, v, o, mlp_in, mlp_gate, mlp_out) of one layer.

Whatever the storage (``nn.Linear`` weight ``[out, in]``, HF ``Conv1D`` weight ``[in, out]``, a slice
of a fused projection), callers see one ``[out, in]`` matrix with ``y = x @ W.T + b``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .layouts import Rows, rows_count


def is_conv1d(module: nn.Module) -> bool:
    """HF's GPT-2-style Conv1D stores its weight transposed: ``[in, out]``, ``y = x @ W + b``."""
    # The MRO check also recognises a Conv1D that torch.nn.utils.parametrize has subclassed on the fly
    # ("ParametrizedConv1D"), as leantune's fused-slice fine-tuning does.
    return any(c.__name__ == "Conv1D" for c in type(module).__mro__) and hasattr(module, "nf")


@dataclass
class LogicalMatrix:
    layer: int
    name: str
    module: nn.Module
    module_path: str  # dotted path from the model root, e.g. "transformer.h.3.attn.c_attn"
    rows: Rows | None = None  # output rows inside a fused weight; None = the whole weight
    fused_with: tuple[str, ...] = field(default_factory=tuple)  # other logical names in the same weight

    # --- where it lives -------------------------------------------------------------------
    @property
    def weight(self) -> nn.Parameter:
        return self.module.weight

    @property
    def bias(self) -> nn.Parameter | None:
        return getattr(self.module, "bias", None)

    @property
    def transposed(self) -> bool:
        return is_conv1d(self.module)

    @property
    def out_axis(self) -> int:
        return 1 if self.transposed else 0

    @property
    def fused(self) -> bool:
        return self.rows is not None

    @property
    def shape(self) -> tuple[int, int]:
        w = self.weight
        full_out, full_in = (w.shape[1], w.shape[0]) if self.transposed else (w.shape[0], w.shape[1])
        out = full_out if self.rows is None else rows_count(self.rows)
        return (out, full_in)

    def row_index(self) -> torch.Tensor:
        """Output rows of the underlying weight as indices (also for contiguous slices)."""
        full_out = self.weight.shape[self.out_axis]
        if self.rows is None:
            return torch.arange(full_out)
        if isinstance(self.rows, slice):
            return torch.arange(full_out)[self.rows]
        return self.rows

    # --- read / write -------------------------------------------------------------------
    def _take(self, t: torch.Tensor, axis: int) -> torch.Tensor:
        if self.rows is None:
            return t
        if isinstance(self.rows, slice):
            return t.narrow(axis, self.rows.start, self.rows.stop - self.rows.start)
        return t.index_select(axis, self.rows.to(t.device))

    def read(self) -> torch.Tensor:
        """A detached ``[out, in]`` copy of the matrix (never aliases the model's storage)."""
        with torch.no_grad():
            w = self._take(self.weight.detach(), self.out_axis)
            w = w.T if self.transposed else w
            return w.clone()

    def read_bias(self) -> torch.Tensor | None:
        if self.bias is None:
            return None
        with torch.no_grad():
            return self._take(self.bias.detach(), 0).clone()

    def write(self, new: torch.Tensor) -> None:
        """Copy an ``[out, in]`` matrix into place; every other element of the weight is untouched."""
        if tuple(new.shape) != self.shape:
            raise ValueError(f"{self.describe()}: expected shape {self.shape}, got {tuple(new.shape)}")
        with torch.no_grad():
            w = self.weight
            src = (new.T if self.transposed else new).to(dtype=w.dtype, device=w.device)
            if self.rows is None:
                w.copy_(src)
            elif isinstance(self.rows, slice):
                w.narrow(self.out_axis, self.rows.start, self.rows.stop - self.rows.start).copy_(src)
            else:
                w.index_copy_(self.out_axis, self.rows.to(w.device), src)

    def write_bias(self, new: torch.Tensor) -> None:
        if self.bias is None:
            raise ValueError(f"{self.describe()} has no bias")
        with torch.no_grad():
            b = self.bias
            src = new.to(dtype=b.dtype, device=b.device)
            if self.rows is None:
                b.copy_(src)
            elif isinstance(self.rows, slice):
                b[self.rows].copy_(src)
            else:
                b.index_copy_(0, self.rows.to(b.device), src)

    def describe(self) -> str:
        where = self.module_path + (" (fused slice)" if self.fused else "")
        return f"layer {self.layer} {self.name} [{self.shape[0]}x{self.shape[1]}] at {where}"

    def info(self) -> dict:
        return {
            "layer": self.layer,
            "matrix": self.name,
            "shape": list(self.shape),
            "module": self.module_path,
            "fused": self.fused,
            "fused_with": list(self.fused_with),
            "transposed_storage": self.transposed,
            "has_bias": self.bias is not None,
        }

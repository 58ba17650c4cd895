"""``full``: the targeted matrices themselves train.

On an unfused matrix its own weight (and bias) gets ``requires_grad``: no overhead. On a fused slice a
``torch.nn.utils.parametrize`` parametrization holds trainable copies of the chosen rows and rebuilds
the fused weight with ``index_copy`` on every forward; the stored fused weight stays frozen (so the K
rows are bit-identical by construction).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from ...arch import LogicalMatrix
from .base import AdapterMethod, Trained, register_method


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


@register_method
class Full(AdapterMethod):
    name = "full"

    def attach(self, ad, module: nn.Module, path: str, parts: list[LogicalMatrix]) -> None:
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

    def merge(self, ad, module: nn.Module, path: str, parts: list[LogicalMatrix]) -> None:
        with torch.no_grad():  # unfused: the weight itself was trained, nothing to fold
            for n in ad._fused_params.get(path, ()):
                parametrize.remove_parametrizations(module, n, leave_parametrized=True)

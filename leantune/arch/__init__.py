"""The architecture map: the one place that knows where W_q, W_k, W_v, W_o and the MLP matrices live.

Every feature asks it for "layer 7, matrix v" and gets a :class:`LogicalMatrix` it can read, write or
wrap; nothing else in leantune matches parameter names.
"""

from __future__ import annotations

from torch import nn

from ..errors import LeantuneError
from .discover import discover
from .families import FAMILIES, Family
from .refused import REFUSED
from .matrix import LogicalMatrix, is_conv1d
from .parts import unwrap, head_modules, head_parameters

ATTN = ("q", "k", "v", "o")
MLP = ("mlp_in", "mlp_gate", "mlp_out")
ALL_MATRICES = ATTN + MLP

__all__ = ["ArchMap", "LogicalMatrix", "get_arch", "ATTN", "MLP", "ALL_MATRICES", "FAMILIES", "REFUSED", "is_conv1d",
           "head_modules", "head_parameters"]


def _get(root: nn.Module, path: str) -> nn.Module:
    return root.get_submodule(path) if path else root


class ArchMap:
    def __init__(self, model: nn.Module, family: Family):
        self.model = model
        self.family = family
        self.config = model.config
        self.base = model.base_model
        self._base_prefix = self._prefix_of(self.base)
        try:
            self.layers = _get(self.base, family.layers)
        except AttributeError as e:
            raise LeantuneError(f"{self.config.model_type}: expected the layer list at '{family.layers}' but "
                                f"the model has no such module ({e})") from None
        self._specs = family.matrices(self.config)

    def _prefix_of(self, module: nn.Module) -> str:
        for name, mod in self.model.named_modules():
            if mod is module:
                return name
        return ""

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(n for n in ALL_MATRICES if n in self._specs)

    def _path(self, layer: int, rel: str) -> str:
        parts = [p for p in (self._base_prefix, self.family.layers, str(layer), rel) if p]
        return ".".join(parts)

    def check_layer(self, layer: int) -> int:
        if not -self.num_layers <= layer < self.num_layers:
            raise LeantuneError(f"layer {layer} is out of range: {self.config.model_type} has {self.num_layers} "
                                f"layers (0..{self.num_layers - 1})")
        return layer % self.num_layers

    def layer_module(self, layer: int) -> nn.Module:
        return self.layers[self.check_layer(layer)]

    def attention_module(self, layer: int) -> nn.Module:
        return _get(self.layer_module(layer), self.family.attention)

    def matrix(self, layer: int, name: str) -> LogicalMatrix:
        layer = self.check_layer(layer)
        if name not in self._specs:
            if name in MLP and self.family.mlp_absent:
                raise LeantuneError(f"matrix '{name}' does not exist in {self.family.name}: {self.family.mlp_absent}")
            raise LeantuneError(f"matrix '{name}' does not exist in {self.family.name}; it has: {', '.join(self.names)}")
        rel, rows = self._specs[name]
        fused_with = tuple(n for n, (r, rw) in self._specs.items() if r == rel and n != name and rw is not None)
        return LogicalMatrix(layer, name, _get(self.layers[layer], rel), self._path(layer, rel), rows, fused_with)

    def matrices(self, layers=None, names=None):
        for layer in range(self.num_layers) if layers is None else layers:
            for name in self.names if names is None else names:
                yield self.matrix(layer, name)

    def summary(self) -> dict:
        return {
            "model_type": self.config.model_type,
            "family": self.family.name,
            "num_layers": self.num_layers,
            "matrices": self.names,
            "layers": [[m.info() for m in self.matrices(layers=[i])] for i in range(self.num_layers)],
        }


def get_arch(model: nn.Module) -> ArchMap:
    """The architecture map of a transformers model (or a PEFT model wrapping one)."""
    model = unwrap(model)
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type is None:
        raise LeantuneError(f"{type(model).__name__} has no config.model_type; leantune needs a transformers model")
    if model_type in REFUSED:
        raise LeantuneError(f"model type '{model_type}' is not supported: {REFUSED[model_type]}")
    family = FAMILIES.get(model_type) or discover(model.base_model, model_type)
    return ArchMap(model, family)

"""What an adapter method is, and the registry of methods by name.

A method decides, for one projection module and the logical matrices targeted inside it (a whole
``nn.Linear`` / ``Conv1D``, or slices of a fused QKV weight), which tensors train and how they are
folded back into the weights. Adding one is one file with a class decorated ``@register_method`` and
one import line in ``methods/__init__.py``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from torch import nn

from ...arch import LogicalMatrix
from ...errors import LeantuneError


@dataclass
class Trained:
    """One trained tensor: what it is and the parameter that holds it."""

    key: str  # key in the adapter file, e.g. "layers.3.v.lora_A", "head.classifier.weight"
    group: str  # q | k | v | o | head | all
    role: str  # weight | bias | lora_A | lora_B | magnitude
    param: nn.Parameter
    matrix: LogicalMatrix | None = None
    transposed: bool = False  # stored [in, out] (Conv1D); the adapter file always holds [out, in]


class AdapterMethod(ABC):
    """Base class of the adapter methods (full, lora, dora, ...).

    ``attach`` makes the targeted parts of one module trainable and appends a :class:`Trained` record per
    tensor to ``adapted.trained`` (their ``key`` is the name in the adapter file, so it must be stable);
    ``merge`` folds them into the module's own weights and removes everything ``attach`` added.
    """

    name: str = ""
    peft_exportable: bool = False  # a PEFT LoRA directory can hold it (whole unfused nn.Linear targets only)

    @abstractmethod
    def attach(self, adapted, module: nn.Module, path: str, parts: list[LogicalMatrix]) -> None: ...

    @abstractmethod
    def merge(self, adapted, module: nn.Module, path: str, parts: list[LogicalMatrix]) -> None: ...


METHODS: dict[str, AdapterMethod] = {}


def register_method(cls: type[AdapterMethod]) -> type[AdapterMethod]:
    """Class decorator: ``@register_method class MyMethod(AdapterMethod): name = "mine"``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a non-empty `name`")
    METHODS[cls.name] = cls()
    return cls


def get_method(name: str) -> AdapterMethod:
    if name not in METHODS:
        raise LeantuneError(f"unknown method '{name}'; choose one of {', '.join(METHODS)}")
    return METHODS[name]

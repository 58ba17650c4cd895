"""What a fine-tuning objective is, and the registry of objectives by name.

An objective decides what the model is asked to produce and where the loss is: which head is loaded, how
records become training features, how a batch is padded, and what the Trainer's periodic evaluation
reports. Optimizer groups, adapters and merging do not depend on it (they act on the attention matrices
whatever the loss), so the Q/V learning-rate split applies to every objective alike.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable

from ...errors import LeantuneError


class Objective(ABC):
    name: str = ""
    head: str = ""  # what load_model loads: seq-cls | causal-lm
    train_head: bool = True  # a new classifier trains; an LM head (tied to the embeddings) stays frozen

    @abstractmethod
    def datasets(self, data, tokenizer, max_length: int) -> tuple:
        """(train, eval) torch datasets of features from ``data`` (a ClassificationData)."""

    @abstractmethod
    def collator(self, tokenizer) -> Callable:
        """Pads a list of features into a batch the model's forward takes (with ``labels``)."""

    def compute_metrics(self, data) -> Callable | None:
        """The Trainer's ``compute_metrics`` (None: the periodic evaluation reports the loss only)."""
        return None


OBJECTIVES: dict[str, Objective] = {}


def register_objective(cls: type[Objective]) -> type[Objective]:
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a non-empty `name`")
    OBJECTIVES[cls.name] = cls()
    return cls


def get_objective(name: str) -> Objective:
    if name not in OBJECTIVES:
        raise LeantuneError(f"unknown objective '{name}'; choose one of {', '.join(OBJECTIVES)}")
    return OBJECTIVES[name]

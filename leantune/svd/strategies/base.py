"""The strategy protocol and the registry of search strategies by name.

A strategy chooses which candidate edits to evaluate and which one wins; the :class:`~leantune.svd.search.Search`
it is handed evaluates candidates (journaled, resumable, sharded, with layer-prefix reuse). A new strategy is
one file with a class decorated ``@register_strategy`` (see ``random_layer`` in docs/api.md) and, for the
built-in ones, one import line in ``strategies/__init__.py``.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from ...errors import LeantuneError
from ..edits import Edit


@dataclass
class Outcome:
    chosen: list[Edit]  # the winning candidate (edits with rate 0 are "no edit")
    candidates: list[list[Edit]]  # every candidate considered, the baseline [] first
    info: dict = field(default_factory=dict)  # anything worth recording in summary.json (paper: layer choice)


class Strategy(ABC):
    """Base class of a search strategy: subclass it, set ``name`` and implement ``run``.

    ``__init__`` may take keyword options of ``search_svd`` / ``leantune icl search`` by name (``top_k``,
    ``seed``); only the ones it names are passed.
    """

    name: str = ""
    note: str = "an upper bound"  # dry run: what the estimate means

    @abstractmethod
    def run(self, search, layers: list[int], rates: list[float]) -> Outcome:
        """Evaluate candidates with ``search.run_candidates`` (after ``search.prepare_reuse(layers)``)."""

    def planned(self, layers: list[int], modules: list[str], rates: list[float]) -> list[tuple[int, str]]:
        """(layer, module) of each candidate it may evaluate besides the baseline (the dry run's estimate)."""
        return [(layer, m) for layer in layers for m in modules for r in rates if r > 0]


STRATEGIES: dict[str, type] = {}


def register_strategy(cls: type) -> type:
    """Class decorator: ``@register_strategy class MyStrategy(Strategy): name = "mine"``."""
    if not getattr(cls, "name", ""):
        raise ValueError(f"{cls.__name__} needs a non-empty `name`")
    STRATEGIES[cls.name] = cls
    return cls


def make_strategy(name: str, **options) -> Strategy:
    """An instance of the strategy registered as ``name``, given the options its ``__init__`` names."""
    if name not in STRATEGIES:
        raise LeantuneError(f"unknown strategy '{name}'; choose one of {', '.join(STRATEGIES)}")
    cls = STRATEGIES[name]
    accepted = inspect.signature(cls).parameters
    return cls(**{k: v for k, v in options.items() if k in accepted})

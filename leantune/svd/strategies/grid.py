"""``grid``: every (layer, module, rate)."""

from __future__ import annotations

from .base import Outcome, Strategy, register_strategy
from .common import grid_candidates


@register_strategy
class Grid(Strategy):
    name = "grid"
    note = ""

    def run(self, search, layers, rates) -> Outcome:
        cands = [[]] + grid_candidates(layers, search.modules, rates)
        search.prepare_reuse({e.layer for c in cands for e in c})
        with search.bar(cands) as bar:
            search.run_candidates(cands, bar)
        return Outcome(search.best(cands), cands)

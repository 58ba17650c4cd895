"""``paper``: the SVD paper's Algorithm 1.

Per module, rank the layers by 2-norm condition number (the largest over the module's matrices), take the
top-k and use the one with the largest index; then a grid over the rates at that layer.
"""

from __future__ import annotations

from ..edits import Edit
from .base import Outcome, Strategy, register_strategy
from .common import paper_choice


@register_strategy
class Paper(Strategy):
    name = "paper"
    note = "paper: layer chosen by condition number at run time; greedy: an upper bound"

    def __init__(self, top_k: int = 3):
        self.top_k = top_k

    def run(self, search, layers, rates) -> Outcome:
        chosen, cands, info = {}, [[]], {}
        for module in search.modules:
            layer, conds = paper_choice(search.cache, layers, module, self.top_k)
            chosen[module] = layer
            info[module] = {"chosen_layer": layer, "top_k": self.top_k, "condition_numbers": conds}
            cands += [[Edit(layer, module, r)] for r in rates]
        search.prepare_reuse(set(chosen.values()))
        with search.bar(cands) as bar:
            search.run_candidates(cands, bar)
        return Outcome(search.best(cands), cands, info)

    def planned(self, layers, modules, rates):
        return [(max(layers), m) for m in modules for r in rates if r > 0]  # layer chosen later; upper bound

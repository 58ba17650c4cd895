"""``greedy``: LASER-style composition from the deepest layer down.

At each layer try every (module, rate) on top of the edits kept so far and keep the best one only if
the validation selection metric (accuracy unless ``--select`` says otherwise) improves.
"""

from __future__ import annotations

from ..edits import Edit
from .base import Outcome, Strategy, register_strategy
from .common import BASELINE, candidate_key


@register_strategy
class Greedy(Strategy):
    name = "greedy"
    note = "paper: layer chosen by condition number at run time; greedy: an upper bound"

    def run(self, search, layers, rates) -> Outcome:
        live_rates = [r for r in rates if r > 0]
        search.prepare_reuse(set(layers))
        kept: list[Edit] = []
        all_cands = [[]]
        with search.bar(1 + len(layers) * len(search.modules) * len(live_rates)) as bar:  # an upper bound
            search.run_candidates([[]], bar)
            current = search.score(search.state.results[BASELINE])
            for layer in sorted(layers, reverse=True):  # deepest first: kept edits stay above the next layer
                step = [kept + [Edit(layer, m, r)] for m in search.modules for r in live_rates]
                all_cands += step
                search.run_candidates(step, bar)
                top = search.best(step)
                acc = search.score(search.state.results[candidate_key(top)])
                if acc > current:
                    kept, current = top, acc
        return Outcome(kept, all_cands)

"""Search strategies by name, and the helpers they share.

* ``paper``: the SVD paper's Algorithm 1 (layer among the top-k by condition number, then the rates).
* ``grid``: every (layer, module, rate).
* ``greedy``: LASER-style composition from the deepest layer down.

A new strategy: one file with an ``@register_strategy`` class (protocol: :class:`Strategy`), plus one
import line below for a built-in one (a user's own file registers itself when imported).
"""

from .base import STRATEGIES, Outcome, Strategy, make_strategy, register_strategy
from .common import (BASELINE, candidate_key, check_grid, condition_numbers, grid_candidates, paper_choice,
                     parse_layers, tie_key)

from . import paper, grid, greedy  # noqa: E402,F401  (registration: one module per strategy)

__all__ = ["STRATEGIES", "Outcome", "Strategy", "make_strategy", "register_strategy", "BASELINE", "candidate_key",
           "check_grid", "condition_numbers", "grid_candidates", "paper_choice", "parse_layers", "tie_key"]

"""Helpers every strategy shares: layer specs, the candidate grid, condition numbers, tie-breaking.

Choice and tie-breaking (all strategies): the highest validation accuracy wins; on a tie the
unedited model wins (an edit must strictly improve), then the larger rate (more compression), then
the deeper layer, then the module listed first in ``--modules``.
"""

from __future__ import annotations

import re

from ...errors import LeantuneError
from ..edits import Edit, module_matrices
from ..lowrank import SVDCache, check_rate

BASELINE = "baseline"


def candidate_key(edits: list[Edit]) -> str:
    live = [e for e in edits if e.rate > 0]
    return "+".join(e.key for e in live) if live else BASELINE


def parse_layers(spec: str | None, num_layers: int) -> list[int]:
    """``all`` | ``last4`` | ``8-11`` | ``8:12`` | ``0,3,-1`` (negatives count from the end)."""
    spec = "all" if spec is None else spec.strip()
    if not spec:  # an unset shell variable, not a wish for every layer
        raise LeantuneError("--layers is empty; give all, last4, 8-11, 8:12 or 0,3,-1")
    if spec == "all":
        return list(range(num_layers))
    m = re.fullmatch(r"last(\d+)", spec)
    if m:
        k = int(m.group(1))
        if not 1 <= k <= num_layers:
            raise LeantuneError(f"--layers {spec}: the model has {num_layers} layers")
        return list(range(num_layers - k, num_layers))
    out = []
    for part in (p.strip() for p in spec.split(",")):
        rng = re.fullmatch(r"(\d+)-(\d+)", part)
        sl = re.fullmatch(r"(-?\d*):(-?\d*)", part)
        if rng:
            a, b = int(rng.group(1)), int(rng.group(2))
            if a > b:  # would select nothing: a one-candidate "search" that looks like a result
                raise LeantuneError(f"--layers {part} is a reversed range; write {b}-{a}")
            out += list(range(a, b + 1))
        elif sl:
            a, b = (int(x) if x else None for x in sl.groups())
            picked = list(range(num_layers))[a:b]
            if not picked:
                raise LeantuneError(f"--layers {part} selects no layer of the {num_layers}; "
                                    "a slice a:b takes layers a..b-1")
            out += picked
        elif re.fullmatch(r"-?\d+", part):
            out.append(int(part))
        else:
            raise LeantuneError(f"--layers {spec!r} is not a layer spec; use all, last4, 8-11, 8:12 or 0,3,-1")
    layers = []
    for layer in out:
        if not -num_layers <= layer < num_layers:
            raise LeantuneError(f"layer {layer} is out of range: the model has {num_layers} layers "
                                f"(0..{num_layers - 1})")
        layers.append(layer % num_layers)
    return sorted(set(layers))


def check_grid(arch, modules: list[str], rates: list[float]) -> None:
    for m in modules:
        module_matrices(arch, m)
    for r in rates:
        check_rate(r)


def grid_candidates(layers: list[int], modules: list[str], rates: list[float]) -> list[list[Edit]]:
    return [[Edit(layer, m, r)] for layer in layers for m in modules for r in rates]


def condition_numbers(cache: SVDCache, layers: list[int], module: str) -> dict[int, float]:
    arch = cache.arch
    out = {}
    for layer in layers:
        conds = []
        for name in module_matrices(arch, module):
            s = cache.factors(layer, name)[1]
            conds.append(float("inf") if float(s[-1]) == 0 else float(s[0] / s[-1]))
        out[layer] = max(conds)
    return out


def paper_choice(cache: SVDCache, layers: list[int], module: str, top_k: int) -> tuple[int, dict[int, float]]:
    conds = condition_numbers(cache, layers, module)
    top = sorted(conds, key=lambda layer: (-conds[layer], -layer))[:top_k]
    return max(top), conds


def tie_key(edits: list[Edit], acc: float, modules: list[str]):
    if not edits or all(e.rate == 0 for e in edits):
        return (acc, 1, 0.0, 0, 0)
    last = edits[-1]
    return (acc, 0, last.rate, last.layer, -modules.index(last.module) if last.module in modules else 0)

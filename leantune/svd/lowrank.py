"""Exact SVD, computed once per (layer, matrix), sliced for every clipping rate.

rank(xi) = max(1, floor((1 - xi) * min(m, n))) — the SVD paper's rule, with rank >= 1 so that
xi = 0.995 on a small matrix still keeps one direction. xi = 0 means "no edit" and never touches
the weights (so it is bit-identical to the original, not a float reconstruction of it).
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch

from ..arch import ArchMap, LogicalMatrix
from ..errors import LeantuneError
from ..offload import onloaded


def rank_for(rate: float, shape: tuple[int, int]) -> int:
    check_rate(rate)
    return max(1, math.floor((1 - rate) * min(shape)))


def check_rate(rate: float) -> float:
    if not 0 <= rate < 1:
        raise LeantuneError(f"clipping rate {rate} is outside [0, 1); use e.g. 0, 0.5, 0.9, 0.995")
    return rate


class SVDCache:
    """U, S, Vh of each requested logical matrix (of the *original* weights), in ``dtype``.

    ``max_bytes`` bounds what is kept: least recently used factors are dropped and recomputed if asked for
    again. The SVD of the same weights is deterministic, so a bound changes time, never results. Searches
    visit candidates matrix by matrix, so a bound of one layer's factors costs almost nothing; unbounded,
    a search over every layer of a 7B model would keep ~28 GB of float32 factors.
    """

    def __init__(self, arch: ArchMap, dtype: torch.dtype = torch.float32, max_bytes: int | None = None):
        self.arch, self.dtype, self.max_bytes = arch, dtype, max_bytes
        self._svd: OrderedDict[tuple[int, str], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = OrderedDict()
        self.computed = 0  # SVDs run (recomputations after eviction included)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for f in self._svd.values() for t in f)

    def factors(self, layer: int, name: str):
        key = (layer, name)
        if key in self._svd:
            self._svd.move_to_end(key)
            return self._svd[key]
        m = self.arch.matrix(layer, name)
        with onloaded([m.module]):  # an offloaded layer's weights, for this read only
            w = m.read()  # on the layer's device
        # float32 (or float64) whatever the model's dtype; results are cast back when written
        self._svd[key] = torch.linalg.svd(w.to(self.dtype), full_matrices=False)
        self.computed += 1
        while self.max_bytes is not None and len(self._svd) > 1 and self.nbytes > self.max_bytes:
            self._svd.popitem(last=False)  # the newest entry always stays, even alone above the bound
        return self._svd[key]

    def truncated(self, layer: int, name: str, rate: float) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Rank-r factors (A = U_r * S_r, B = Vh_r) with W_r = A @ B; both in the SVD dtype."""
        u, s, vh = self.factors(layer, name)
        r = rank_for(rate, (u.shape[0], vh.shape[1]))
        return u[:, :r] * s[:r], vh[:r], r

    def low_rank(self, layer: int, name: str, rate: float) -> torch.Tensor:
        a, b, _ = self.truncated(layer, name, rate)
        return a @ b


def write_low_rank(m: LogicalMatrix, cache: SVDCache, rate: float) -> int:
    """Replace ``m`` by its rank-r approximation (cast back to the weight's dtype); returns r."""
    a, b, r = cache.truncated(m.layer, m.name, rate)
    m.write((a @ b).to(m.weight.dtype))
    return r

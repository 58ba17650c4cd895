"""Singular-value statistics per (layer, matrix): the quantities the SVD paper's Algorithm 1 ranks by."""

from __future__ import annotations

import math

import torch

from ..arch import ArchMap
from ..offload import onloaded


def spectrum_stats(w: torch.Tensor, dtype: torch.dtype = torch.float32) -> dict:
    """Largest/smallest singular value, 2-norm condition number and two effective ranks of ``w``.

    ``effective_rank`` is Roy & Vetterli's exp(entropy of sigma / sum sigma); ``stable_rank`` is
    ||W||_F^2 / sigma_max^2. A zero smallest singular value gives ``condition_number = None`` (infinite).
    """
    s = torch.linalg.svdvals(w.to(dtype))
    smax, smin = float(s[0]), float(s[-1])
    p = s / s.sum()
    p = p[p > 0]
    entropy = float(-(p * p.log()).sum())
    return {
        "sigma_max": smax,
        "sigma_min": smin,
        "condition_number": smax / smin if smin > 0 else None,
        "effective_rank": math.exp(entropy),
        "stable_rank": float((s**2).sum()) / smax**2 if smax > 0 else 0.0,
        "full_rank": int(min(w.shape)),
    }


def model_spectrum(arch: ArchMap, dtype: torch.dtype = torch.float32, progress: bool = True) -> list[dict]:
    """One record per (layer, logical matrix), computed on the matrix's own device."""
    from tqdm.auto import tqdm

    mats = list(arch.matrices())
    rows = []
    for m in tqdm(mats, desc="spectrum", disable=not progress, unit="matrix"):
        with onloaded([m.module]):  # offloaded layers (--device-map): materialized one at a time
            w = m.read()
        rows.append({**m.info(), **spectrum_stats(w, dtype)})
    return rows

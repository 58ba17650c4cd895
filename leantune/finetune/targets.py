"""Which logical matrices a ``--targets`` choice trains, asked of the architecture map (never by name)."""

from __future__ import annotations

from collections import defaultdict

from ..arch import ArchMap, LogicalMatrix
from ..errors import LeantuneError

TARGET_MATRICES: dict[str, tuple[str, ...]] = {
    "qv": ("q", "v"),
    "qkv": ("q", "k", "v"),
    "qk": ("q", "k"),  # the paper's control: is it V that matters, or any second matrix?
    "q": ("q",),
    "v": ("v",),
    "k": ("k",),
    "attn": ("q", "k", "v", "o"),
    "all": (),  # plain full fine-tuning: every parameter, not a choice of matrices
}


def target_matrices(arch: ArchMap, targets: str | tuple[str, ...]) -> list[LogicalMatrix]:
    """``targets``: a preset name above, or a tuple of logical matrix names such as ``("q", "v")``."""
    if isinstance(targets, str):
        if targets not in TARGET_MATRICES:
            raise LeantuneError(f"unknown targets '{targets}'; choose one of {', '.join(TARGET_MATRICES)}")
        names = TARGET_MATRICES[targets]
    else:
        names = tuple(targets)
        if not names:
            raise LeantuneError("targets is empty; name at least one logical matrix, e.g. ('q', 'v')")
    missing = [n for n in names if n not in arch.names]
    if missing:
        raise LeantuneError(f"{arch.family.name} has no {'/'.join(missing)} matrices for targets '{targets}'")
    return list(arch.matrices(names=names))


def by_module(matrices: list[LogicalMatrix]) -> dict[str, list[LogicalMatrix]]:
    """Group logical matrices by the module that stores them: a fused QKV module gets all its parts at once."""
    out: dict[str, list[LogicalMatrix]] = defaultdict(list)
    for m in matrices:
        out[m.module_path].append(m)
    return dict(out)

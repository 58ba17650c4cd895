"""Expected peak memory of an SVD search, printed by ``--dry-run`` next to the token estimate.

An estimate from shapes, not a measurement (``benchmarks/search_memory.py`` measures): weights as
loaded, the KV caches of one evaluation (the demonstrations' prefix cache, a second one for the
layers a candidate recomputes, and one query batch on top of it), the recorded hidden states of the
layer-reuse path (bounded by ``--reuse-memory``), the SVD factors the search keeps, and the largest
batch's activations and kept logits.
"""

from __future__ import annotations

from ..arch import ArchMap
from ..precision import human_bytes
from .edits import module_matrices


def _svd_bytes(shape, itemsize: int) -> int:
    m, n = shape
    k = min(m, n)
    return (m * k + k + k * n) * itemsize  # U, S, Vh (full_matrices=False)


def search_memory(model, arch: ArchMap, evaluator, strategy: str, layers: list[int], modules: list[str],
                  svd_itemsize: int, reuse_memory: int | None = None, overflow: str = "auto",
                  svd_cache_memory: int | None = None) -> dict:
    """Bytes per component and their sum (``peak``); the evaluation's part comes from the evaluator
    (``Evaluator.estimate_memory``; ``overflow`` as in :mod:`leantune.icl.layer_reuse`)."""
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    out = {"weights": weights}
    svd_layers = layers if strategy != "paper" else [max(layers)]  # paper: S only for ranking, factors for one
    sizes = [_svd_bytes(arch.matrix(layer, name).shape, svd_itemsize)
             for layer in svd_layers for m in modules for name in module_matrices(arch, m)]
    out["svd_factors"] = sum(sizes)
    if svd_cache_memory is not None and sizes:  # the bound, plus the one entry that may exceed it alone
        out["svd_factors"] = min(out["svd_factors"], svd_cache_memory + max(sizes))
    deep = [layer for layer in layers if layer > 0]  # layer 0 needs no recorded state
    # paper: one layer per module, chosen at run time (an upper bound); grid / greedy: every layer
    n_cand = min(len(modules), len(deep)) if strategy == "paper" else len(deep)
    out.update(evaluator.estimate_memory(model, arch, n_cand, reuse_memory, overflow))
    out["peak"] = sum(v for k, v in out.items() if k in ("weights", "svd_factors", "kv_caches", "activations",
                                                          "recorded_states"))
    return out


def describe(mem: dict) -> str:
    parts = [f"weights {human_bytes(mem['weights'])}", f"KV caches {human_bytes(mem['kv_caches'])}",
             f"recorded states {human_bytes(mem['recorded_states'])}", f"SVD factors {human_bytes(mem['svd_factors'])}",
             f"activations {human_bytes(mem['activations'])}"]
    line = f"expected peak memory about {human_bytes(mem['peak'])} (" + ", ".join(parts) + ")"
    if mem.get("recorded_states_on_cpu"):
        line += f"; plus {human_bytes(mem['recorded_states_on_cpu'])} of recorded states kept on the CPU"
    return line

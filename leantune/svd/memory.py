"""Expected peak memory of an SVD search, printed by ``--dry-run`` next to the token estimate.

An estimate from shapes, not a measurement (``benchmarks/search_memory.py`` measures): weights as
loaded, the KV caches of one evaluation (the demonstrations' prefix cache, a second one for the
layers a candidate recomputes, and one query batch on top of it), the recorded hidden states of the
layer-reuse path (bounded by ``--reuse-memory``), the SVD factors the search keeps, and the largest
batch's activations and kept logits.
"""

from __future__ import annotations

from ..arch import ArchMap
from ..precision import human_bytes, input_device, model_dtype
from .edits import module_matrices


def _svd_bytes(shape, itemsize: int) -> int:
    m, n = shape
    k = min(m, n)
    return (m * k + k + k * n) * itemsize  # U, S, Vh (full_matrices=False)


def search_memory(model, arch: ArchMap, evaluator, strategy: str, layers: list[int], modules: list[str],
                  svd_itemsize: int, reuse_memory: int | None = None, overflow: str = "auto") -> dict:
    """Bytes per component and their sum (``peak``); ``overflow`` as in :class:`LayerReuseRunner`."""
    from ..icl.scoring import make_batches
    from .reuse import hidden_size, state_bytes_per_layer

    itemsize = model_dtype(model).itemsize
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    hidden = hidden_size(model)
    out = {"weights": weights}
    svd_layers = layers if strategy != "paper" else [max(layers)]  # paper: S only for ranking, factors for one
    out["svd_factors"] = sum(_svd_bytes(arch.matrix(layer, name).shape, svd_itemsize)
                             for layer in svd_layers for m in modules for name in module_matrices(arch, m))
    plan = getattr(evaluator, "plan", None)
    if plan is None:  # classifier evaluator: no prefix, no reuse
        enc = max(evaluator.encodings, key=lambda e: e["input_ids"].numel())
        b, w = enc["input_ids"].shape
        out["activations"] = 4 * b * w * hidden * itemsize
        out["kv_caches"] = out["recorded_states"] = 0
    else:
        batches = make_batches(plan, evaluator.batch_size)
        p = len(plan.prefix_ids)
        kv = arch.matrix(0, "k").shape[0]  # kv heads x head_dim
        per_token_kv = 2 * arch.num_layers * kv * itemsize
        big = max(batches, key=lambda x: x.ids.numel())
        b, w = big.ids.shape
        out["kv_caches"] = 2 * p * per_token_kv + b * (p + w) * per_token_kv
        mlp = max([arch.matrix(0, n).shape[0] for n in arch.names if n.startswith("mlp")] + [hidden])
        vocab = model.get_output_embeddings().weight.shape[0] if model.get_output_embeddings() is not None else 0
        out["activations"] = (2 * b * w * (hidden + mlp) * itemsize + int(big.keep.sum()) * vocab * 4 * 2)
        deep = [layer for layer in layers if layer > 0]  # layer 0 needs no recorded state
        # paper: one layer per module, chosen at run time (an upper bound); grid / greedy: every layer
        n_cand = min(len(modules), len(deep)) if strategy == "paper" else len(deep)
        per_layer = state_bytes_per_layer(model, plan, batches)
        on_cpu = input_device(model).type == "cpu"
        if overflow == "auto":
            overflow = "recompute" if on_cpu else "cpu"
        slots = n_cand if reuse_memory is None else min(n_cand, int(reuse_memory // max(per_layer, 1)))
        out["recorded_states"] = slots * per_layer
        out["recorded_states_per_layer"] = per_layer
        if overflow != "recompute" and slots < n_cand:
            out["recorded_states_on_cpu"] = (n_cand - slots) * per_layer
            if on_cpu:  # a CPU-only run: "kept on the CPU" is the same memory
                out["recorded_states"] += out.pop("recorded_states_on_cpu")
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

"""Auto-discovery for model types missing from the family table.

Works when a model keeps its blocks in one ``nn.ModuleList`` and names separate q/k/v/o projections
conventionally (a new Llama-like model type, a remote-code model). Discovered families carry no
parity proof; the named families in ``families.py`` do. Fused layouts are never guessed: reading a
fused weight with the wrong row order would silently edit the wrong matrix.
"""

from __future__ import annotations

from torch import nn

from ..errors import LeantuneError
from .families import Family, MatrixSpecs

CANDIDATES: dict[str, tuple[str, ...]] = {
    "q": ("q_proj", "query", "q_lin", "wq"),
    "k": ("k_proj", "key", "k_lin", "wk"),
    "v": ("v_proj", "value", "v_lin", "wv"),
    "o": ("o_proj", "out_proj", "out_lin", "wo", "dense"),
    "mlp_gate": ("gate_proj", "w1"),
    "mlp_in": ("up_proj", "fc1", "fc_in", "c_fc", "lin1", "w3", "dense_h_to_4h"),
    "mlp_out": ("down_proj", "fc2", "fc_out", "lin2", "w2", "dense_4h_to_h"),
}
FUSED_NAMES = ("c_attn", "query_key_value", "qkv_proj", "Wqkv", "qkv", "gate_up_proj")


def _find_layers(base: nn.Module) -> tuple[str, nn.ModuleList] | None:
    best = None
    for path, mod in base.named_modules():
        if isinstance(mod, nn.ModuleList) and len(mod) > 0:
            if best is None or len(mod) > len(best[1]):
                best = (path, mod)
    return best


def discover(base: nn.Module, model_type: str) -> Family:
    found = _find_layers(base)
    if found is None:
        raise LeantuneError(f"model type '{model_type}' is not supported and has no list of layers to discover; "
                            "supported families: see `leantune inspect --help`")
    layers_path, layers = found
    block = layers[0]
    linear_paths = {p: m for p, m in block.named_modules() if hasattr(m, "weight") and getattr(m.weight, "ndim", 0) == 2
                    and not isinstance(m, nn.Embedding)}
    by_leaf: dict[str, list[str]] = {}
    for p in linear_paths:
        by_leaf.setdefault(p.rsplit(".", 1)[-1], []).append(p)

    fused = sorted(p for p in linear_paths if p.rsplit(".", 1)[-1] in FUSED_NAMES)
    specs: MatrixSpecs = {}
    for logical, names in CANDIDATES.items():
        for leaf in names:
            hits = by_leaf.get(leaf, [])
            if logical == "o" and leaf == "dense":
                hits = [h for h in hits if "attn" in h or "attention" in h]
            if len(hits) == 1:
                specs[logical] = (hits[0], None)
                break
    missing = [m for m in ("q", "k", "v", "o", "mlp_in", "mlp_out") if m not in specs]
    if missing or fused:
        why = f"fused projections {fused} with an unknown layout" if fused else f"no {'/'.join(missing)} projection"
        raise LeantuneError(
            f"model type '{model_type}' is not in leantune's architecture table and auto-discovery found {why} "
            f"in {layers_path}.0 (2-D weights there: {sorted(linear_paths)}); please open an issue with this line")
    attention = specs["q"][0].rsplit(".", 1)[0] if "." in specs["q"][0] else ""
    return Family(f"{model_type} (discovered)", layers_path, attention, lambda config, s=dict(specs): s)

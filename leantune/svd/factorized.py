"""Truly compressed SVD edits: store each edited logical matrix as two factors A [out, r] and B [r, in].

:func:`factorize` replaces the edited modules by :class:`~leantune.factorized.LowRankSlices` and
:func:`save_factorized` writes the folder; reading it back is ``leantune.factorized.load_factorized``
(re-exported here), which ``leantune.models.load_model`` uses for such folders.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..arch import ArchMap, get_arch
from ..factorized import (MANIFEST, WEIGHTS, LowRankSlices, _set_module, guard_config,  # noqa: F401 (re-exported)
                          is_factorized, load_factorized)
from ..offload import is_offloaded, onloaded
from .edits import Edit, module_matrices
from .lowrank import SVDCache


def _plan_modules(arch: ArchMap, edits: list[Edit]) -> dict[str, list]:
    """module path -> logical matrices (with rate) edited inside it."""
    by_module: dict[str, list] = {}
    for e in edits:
        if e.rate == 0:
            continue
        for name in module_matrices(arch, e.module):
            m = arch.matrix(e.layer, name)
            by_module.setdefault(m.module_path, []).append((m, e.rate))
    return by_module


def factorize(model, edits: list[Edit], svd_dtype: torch.dtype = torch.float32) -> list[dict]:
    """Replace edited modules of ``model`` (unedited weights) by :class:`LowRankSlices`; returns the manifest."""
    arch = get_arch(model)
    cache = SVDCache(arch, svd_dtype)
    manifest = []
    for path, mats in _plan_modules(arch, edits).items():
        with onloaded([mats[0][0].module]):  # offloaded (--device-map): read it once; the new module stays
            manifest.append(_factorize_module(model, cache, path, mats))
    return manifest


def _factorize_module(model, cache: SVDCache, path: str, mats: list) -> dict:
    first = mats[0][0]
    w = first.weight
    full = first.weight.T if first.transposed else first.weight  # (out, in)
    out_f, in_f = full.shape
    used = torch.zeros(out_f, dtype=torch.bool)
    parts, tensors = [], []
    for m, rate in mats:
        a, b, r = cache.truncated(m.layer, m.name, rate)
        rows = m.row_index()
        used[rows] = True
        parts.append({"name": m.name, "rows": rows, "rank": r})
        tensors.append((a.to(w.dtype), b.to(w.dtype)))
    dense_rows = torch.nonzero(~used).flatten()
    new = LowRankSlices(in_f, out_f, dense_rows, parts, first.bias is not None, dtype=w.dtype).to(w.device)
    with torch.no_grad():
        new.dense.copy_(full.detach()[dense_rows])
        for i, (a, b) in enumerate(tensors):
            getattr(new, f"a_{i}").copy_(a)
            getattr(new, f"b_{i}").copy_(b)
        if first.bias is not None:
            new.bias.copy_(first.bias.detach())
    _set_module(model, path, new)
    return {"module": path, "in_features": in_f, "out_features": out_f, "bias": first.bias is not None,
            "dense_rows": len(dense_rows),
            "parts": [{"name": p["name"], "rows": p["rows"].tolist(), "rank": p["rank"]} for p in parts]}


def save_factorized(model, manifest: list[dict], out: str | Path, edit: dict) -> Path:
    from safetensors.torch import save_model

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(out)
    config_file = out / "config.json"  # guarded: plain transformers refuses it instead of loading it wrong
    config_file.write_text(json.dumps(guard_config(json.loads(config_file.read_text(encoding="utf-8"))), indent=2)
                           + "\n", encoding="utf-8")
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(out)
    with onloaded([m for m in model.modules() if is_offloaded(m)]):  # --device-map with offload: all of it
        save_model(model, str(out / WEIGHTS))  # dedupes tied tensors (e.g. GPT-2's lm_head / wte)
    (out / MANIFEST).write_text(json.dumps({"format": "leantune-factorized/1", "head": _head_of(model),
                                            "modules": manifest, "edit": edit}, indent=1))
    return out


def _head_of(model) -> str:
    name = type(model).__name__
    return "causal-lm" if name.endswith("ForCausalLM") or name.endswith("LMHeadModel") else \
        "seq-cls" if name.endswith("ForSequenceClassification") else "base"

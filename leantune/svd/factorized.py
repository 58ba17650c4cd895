"""Truly compressed SVD edits: store each edited logical matrix as two factors A [out, r] and B [r, in].

A :class:`LowRankSlices` module replaces the edited Linear / Conv1D. Rows of the weight that no edit
touched (e.g. Q and K of a fused ``c_attn`` when only V was edited) stay dense; each edited logical
matrix is computed as ``(x @ B.T) @ A.T``, so both the file and the FLOPs shrink when
``r * (m + n) < m * n``. Plain transformers cannot build this module: load such a folder with
:func:`load_factorized` (or any leantune command, which detects ``leantune_factorized.json``).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ..arch import ArchMap, get_arch
from ..errors import LeantuneError
from ..offload import is_offloaded, onloaded
from .edits import Edit, module_matrices
from .lowrank import SVDCache

MANIFEST = "leantune_factorized.json"
WEIGHTS = "model.safetensors"


class LowRankSlices(nn.Module):
    def __init__(self, in_features: int, out_features: int, dense_rows: torch.Tensor, parts: list[dict],
                 bias: bool, dtype=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("dense_rows", dense_rows.long().clone(), persistent=True)
        self.dense = nn.Parameter(torch.empty(len(dense_rows), in_features, dtype=dtype))
        self.names = [p["name"] for p in parts]
        for i, p in enumerate(parts):
            self.register_buffer(f"rows_{i}", p["rows"].long().clone(), persistent=True)
            self.register_parameter(f"a_{i}", nn.Parameter(torch.empty(len(p["rows"]), p["rank"], dtype=dtype)))
            self.register_parameter(f"b_{i}", nn.Parameter(torch.empty(p["rank"], in_features, dtype=dtype)))
        self.bias = nn.Parameter(torch.empty(out_features, dtype=dtype)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.new_empty(*x.shape[:-1], self.out_features)
        if len(self.dense_rows):
            y[..., self.dense_rows] = x @ self.dense.T
        for i in range(len(self.names)):
            a, b = getattr(self, f"a_{i}"), getattr(self, f"b_{i}")
            y[..., getattr(self, f"rows_{i}")] = (x @ b.T) @ a.T  # (..., in) -> (..., r) -> (..., rows)
        return y if self.bias is None else y + self.bias


def _set_module(root: nn.Module, path: str, new: nn.Module) -> None:
    parent, _, leaf = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, new)


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


def is_factorized(path: str | Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def load_factorized(path: str | Path, dtype: str = "auto", device: str | None = None):
    """Build the model from its config, put the low-rank modules in place, load the safetensors weights."""
    import transformers as tf
    from safetensors.torch import load_model

    path = Path(path)
    info = json.loads((path / MANIFEST).read_text())
    if info.get("format") != "leantune-factorized/1":
        raise LeantuneError(f"{path / MANIFEST} is not a leantune factorized manifest")
    config = tf.AutoConfig.from_pretrained(path)
    auto = {"causal-lm": tf.AutoModelForCausalLM, "seq-cls": tf.AutoModelForSequenceClassification,
            "base": tf.AutoModel}[info["head"]]
    from ..models import DTYPES

    if dtype not in DTYPES:
        raise LeantuneError(f"unknown dtype '{dtype}'; choose one of {', '.join(DTYPES)}")
    # auto: the dtype the factors were saved in (config.dtype), so a bfloat16 model stays bfloat16
    torch_dtype = DTYPES[dtype] if dtype != "auto" else _saved_dtype(config)
    model = auto.from_config(config, dtype=torch_dtype) if torch_dtype else auto.from_config(config)
    for m in info["modules"]:
        parts = [{"name": p["name"], "rows": torch.tensor(p["rows"]), "rank": p["rank"]} for p in m["parts"]]
        used = torch.zeros(m["out_features"], dtype=torch.bool)
        for p in parts:
            used[p["rows"]] = True
        dense_rows = torch.nonzero(~used).flatten()
        ref = model.get_submodule(m["module"]).weight
        _set_module(model, m["module"], LowRankSlices(m["in_features"], m["out_features"], dense_rows, parts,
                                                      m["bias"], dtype=ref.dtype))
    missing, unexpected = load_model(model, str(path / WEIGHTS), strict=False)
    missing = [k for k in missing if not _is_tied(model, k)]
    if missing or unexpected:
        raise LeantuneError(f"{path}: factorized weights do not match the manifest (missing {missing[:3]}, "
                            f"unexpected {unexpected[:3]})")
    if device:
        model.to(device)
    return model.eval()


def _saved_dtype(config) -> torch.dtype | None:
    d = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(d, str):
        d = getattr(torch, d, None)
    return d if isinstance(d, torch.dtype) else None


def _is_tied(model, key: str) -> bool:
    tied = getattr(model, "_tied_weights_keys", None) or {}
    keys = tied.keys() if isinstance(tied, dict) else tied
    return key in keys

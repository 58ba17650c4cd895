"""The factorized saved format: a model whose SVD-edited matrices are stored as two low-rank factors.

A :class:`LowRankSlices` module replaces an edited Linear / Conv1D. Rows of the weight that no edit
touched (e.g. Q and K of a fused ``c_attn`` when only V was edited) stay dense; each edited logical
matrix is computed as ``(x @ B.T) @ A.T``, so both the file and the FLOPs shrink when
``r * (m + n) < m * n``. Plain transformers cannot build this module: :func:`load_factorized` (and
``leantune.models.load_model``, which detects ``leantune_factorized.json``) can.

Plain transformers must refuse such a folder rather than load it wrong (it would build dense layers, find
the factor tensors unexpected and the dense weights missing, and initialize those at random). So the
folder's ``config.json`` names a ``model_type`` transformers does not know, whose text says to load it
with leantune (the real one is kept as ``leantune_model_type``), and the weights are in
``leantune_factorized.safetensors``, a name ``from_pretrained`` never reads (this also stops
``LlamaForCausalLM.from_pretrained(DIR)``, which only warns about a foreign model type). Folders written
before this guard (real model type, ``model.safetensors``) still load here.

Reading the format is part of loading models (a foundation); writing it is the svd engine's job
(``leantune/svd/factorized.py``), so loading never imports the engines.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from .errors import LeantuneError

MANIFEST = "leantune_factorized.json"
WEIGHTS = "leantune_factorized.safetensors"
OLD_WEIGHTS = "model.safetensors"  # folders written before the guard
# what plain transformers reads as the model type, and prints in its refusal
GUARD_MODEL_TYPE = ("leantune-factorized: load this folder with leantune (leantune.models.load_model(DIR) or "
                    "--model DIR), not with transformers' from_pretrained")
GUARD_ARCHITECTURE = "LeantuneFactorizedLoadWithLeantune"


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
    config = read_config(path)
    auto = {"causal-lm": tf.AutoModelForCausalLM, "seq-cls": tf.AutoModelForSequenceClassification,
            "base": tf.AutoModel}[info["head"]]
    names = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16",
             "bfloat16": "bfloat16", "bf16": "bfloat16"}
    if dtype != "auto" and dtype not in names:
        raise LeantuneError(f"unknown dtype '{dtype}'; choose one of auto, {', '.join(names)}")
    # auto: the dtype the factors were saved in (config.dtype), so a bfloat16 model stays bfloat16
    torch_dtype = _saved_dtype(config) if dtype == "auto" else getattr(torch, names[dtype])
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
    weights = path / WEIGHTS if (path / WEIGHTS).is_file() else path / OLD_WEIGHTS
    missing, unexpected = load_model(model, str(weights), strict=False)
    missing = [k for k in missing if not _is_tied(model, k)]
    if missing or unexpected:
        raise LeantuneError(f"{path}: factorized weights do not match the manifest (missing {missing[:3]}, "
                            f"unexpected {unexpected[:3]})")
    if device:
        model.to(device)
    return model.eval()


def guard_config(config_dict: dict) -> dict:
    """``config.json`` of a factorized folder: the real config under a model type transformers refuses."""
    guarded = dict(config_dict)
    guarded["leantune_model_type"] = config_dict["model_type"]
    guarded["model_type"] = GUARD_MODEL_TYPE
    guarded["leantune_architectures"] = config_dict.get("architectures")
    guarded["architectures"] = [GUARD_ARCHITECTURE]
    return guarded


def read_config(path: Path):
    """The model's real config from a factorized folder's ``config.json`` (guarded or written before the guard)."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    data = json.loads((path / "config.json").read_text(encoding="utf-8"))
    if data.get("model_type") == GUARD_MODEL_TYPE:
        data["model_type"] = data.pop("leantune_model_type")
        data["architectures"] = data.pop("leantune_architectures", None)
    if data.get("model_type") not in CONFIG_MAPPING:
        raise LeantuneError(f"{path / 'config.json'}: model type {data.get('model_type')!r} is unknown to this "
                            "transformers")
    return CONFIG_MAPPING[data["model_type"]].from_dict(data)


def _saved_dtype(config) -> torch.dtype | None:
    d = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(d, str):
        d = getattr(torch, d, None)
    return d if isinstance(d, torch.dtype) else None


def _is_tied(model, key: str) -> bool:
    tied = getattr(model, "_tied_weights_keys", None) or {}
    keys = tied.keys() if isinstance(tied, dict) else tied
    return key in keys

"""Recipe behind ``leantune icl apply``: write the edited model, dense or factorized."""

from __future__ import annotations

from pathlib import Path

import torch

from ..models import load_model
from .api import apply_edit
from .edits import Edit, check_edit_fits, read_edit_file
from .factorized import factorize, save_factorized


def icl_apply(model: str, edit: str, out: str, factorize_: bool = False, head: str = "causal-lm",
              tokenizer: str | None = None, dtype: str = "auto", trust_remote_code: bool = False,
              device: str | None = None, device_map=None, max_memory=None) -> dict:
    """Edited weights keep the model's dtype (the SVD runs in the edit's svd_dtype and is cast back)."""
    lm = load_model(model, head=head, dtype=dtype, trust_remote_code=trust_remote_code, device=device,
                    device_map=device_map, max_memory=max_memory)
    data = read_edit_file(edit)
    check_edit_fits(lm, data, edit)
    out_dir = Path(out)
    if factorize_:
        manifest = factorize(lm, [Edit(**e) for e in data["edits"]], getattr(torch, data.get("svd_dtype", "float32")))
        save_factorized(lm, manifest, out_dir, data)
        info = {"format": "factorized", "modules": [m["module"] for m in manifest]}
    else:
        done = apply_edit(lm, data)  # the record read (and checked) above
        lm.save_pretrained(out_dir)
        info = {"format": "dense", "matrices": done["matrices"]}
    _save_tokenizer(model, tokenizer, out_dir, trust_remote_code)
    size = sum(p.stat().st_size for p in out_dir.glob("*.safetensors"))
    return {**info, "out": str(out_dir), "safetensors_bytes": size}


def _save_tokenizer(model, tokenizer, out_dir, trust_remote_code):
    from ..errors import LeantuneError
    from ..icl.run_eval import tokenizer_for

    try:
        tokenizer_for(model, tokenizer, trust_remote_code).save_pretrained(out_dir)
    except LeantuneError:
        pass  # a model folder without a tokenizer stays without one; the weights are what was asked for

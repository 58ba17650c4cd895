"""Recipe of ``leantune icl apply``: write the edited model, dense or factorized."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..options import build, option
from .common import Recipe, device_map_option, device_option, dtype_option, max_memory_option, overwrite_option


@dataclass
class ApplyConfig:
    model: str | None = option(None, "(required) the model the edit was searched on", required=True)
    edit: str | None = option(None, "(required) edit.json from `leantune icl search`", required=True)
    out: str | None = option(None, "(required) output folder", metavar="DIR", required=True)
    factorize: bool = option(False, "store edited matrices as two low-rank factors")
    head: str = option("causal-lm", "the head to load the model with: causal-lm (ICL edits) | seq-cls (a "
                                     "classifier searched with --evaluator classifier) | base",
                       choices=("causal-lm", "seq-cls", "base"))
    tokenizer: str | None = option(None, "tokenizer to save beside the model (default: the model's)")
    dtype: str = dtype_option()
    device: str | None = device_option()
    device_map: str | dict | None = device_map_option()  # a dict: a library call's own map
    max_memory: str | None = max_memory_option()
    trust_remote_code: bool = option(False, "allow the model repo's own Python code (transformers' trust_remote_code)")
    overwrite: bool = overwrite_option()


def icl_apply(model: str | ApplyConfig | None = None, edit: str | None = None, out: str | None = None,
              **options) -> dict:
    """Write ``model`` with ``edit`` applied into ``out``. Edited weights keep the model's dtype (the SVD runs
    in the edit's svd_dtype and is cast back). Fields of :class:`ApplyConfig` as keywords, or one config."""
    import torch

    from ..errors import LeantuneError
    from ..models import input_path, load_model, recorded_base, tokenizer_for
    from ..svd.api import apply_edit
    from ..svd.edits import Edit, check_edit_fits, read_edit_file
    from ..outputs import OutputFolder
    from ..svd.factorized import factorize, save_factorized

    given = {k: v for k, v in (("edit", edit), ("out", out)) if v is not None}
    cfg = build(ApplyConfig, model, **given, **options) if isinstance(model, ApplyConfig) else \
        build(ApplyConfig, None, model=model, **given, **options)
    folder = OutputFolder(cfg.out, "icl apply", overwrite=cfg.overwrite,
                          inputs={"model": input_path(cfg.model), "edit file": cfg.edit, "tokenizer": cfg.tokenizer})
    lm = load_model(cfg.model, head=cfg.head, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code,
                    device=cfg.device, device_map=cfg.device_map, max_memory=cfg.max_memory)
    data = read_edit_file(cfg.edit)
    check_edit_fits(lm, data, cfg.edit)
    out_dir = Path(cfg.out)
    # provenance in the saved config.json: the base as a user names it elsewhere (hub id, absolute path), the
    # alias and GGUF file it was loaded through, and the edit
    lm.config.leantune_base_model = {**recorded_base(lm), "edit": data["edits"]}
    with folder as stage:  # written aside, renamed into place when complete
        if cfg.factorize:
            manifest = factorize(lm, [Edit(**e) for e in data["edits"]],
                                 getattr(torch, data.get("svd_dtype", "float32")))
            save_factorized(lm, manifest, stage, data)
            info = {"format": "factorized", "modules": [m["module"] for m in manifest]}
        else:
            done = apply_edit(lm, data)  # the record read (and checked) above
            lm.save_pretrained(stage)
            info = {"format": "dense", "matrices": done["matrices"]}
        try:
            tokenizer_for(cfg.model, cfg.tokenizer, cfg.trust_remote_code).save_pretrained(stage)
        except LeantuneError:
            pass  # a model folder without a tokenizer stays without one; the weights are what was asked for
        size = sum(p.stat().st_size for p in stage.glob("*.safetensors"))
    return {**info, "out": str(out_dir), "safetensors_bytes": size}


CONFIG = ApplyConfig


def run(cfg: ApplyConfig, progress: bool) -> dict:
    return icl_apply(cfg)


def report(info: dict, cfg: ApplyConfig) -> str:
    line = f"wrote {info['format']} model to {info['out']} ({info['safetensors_bytes']:,} bytes of safetensors)"
    if info["format"] == "factorized":
        line += "\nload it with leantune (any command's --model, or leantune.models.load_model)"
    return line


COMMANDS = {("icl", "apply"): Recipe(ApplyConfig, run, report,
                                     help="write the model with an edit applied (dense, or --factorize)")}

"""Recipe of ``leantune icl apply``: write the edited model, dense or factorized, and/or as a GGUF file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..gguf_write import GGUF_TYPES
from ..options import build, option
from .common import Recipe, device_map_option, device_option, dtype_option, max_memory_option, overwrite_option


@dataclass
class ApplyConfig:
    model: str | None = option(None, "(required) the model the edit was searched on", required=True)
    edit: str | None = option(None, "(required) edit.json from `leantune icl search`", required=True)
    out: str | None = option(None, "output folder (a dense or --factorize model; this or --out-gguf is required)",
                             metavar="DIR")
    factorize: bool = option(False, "store edited matrices as two low-rank factors")
    out_gguf: str | None = option(None, "also (or only) write the edited model as a GGUF file that llama.cpp runs: "
                                        "a copy of the model's source .gguf with only the edited matrices rewritten",
                                  metavar="FILE.gguf")
    gguf_type: str = option("keep", "type of the rewritten GGUF matrices: keep (the source's where the gguf package "
                                    "can encode it, else q8_0) | q8_0 | f16 | f32", choices=GGUF_TYPES)
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
    from ..errors import LeantuneError
    from ..gguf_write import check_gguf_target, gguf_file_of
    from ..models import input_path, load_model
    from ..outputs import OutputFolder
    from ..svd.edits import check_edit_fits, read_edit_file

    given = {k: v for k, v in (("edit", edit), ("out", out)) if v is not None}
    cfg = build(ApplyConfig, model, **given, **options) if isinstance(model, ApplyConfig) else \
        build(ApplyConfig, None, model=model, **given, **options)
    if not cfg.out and not cfg.out_gguf:
        raise LeantuneError("give --out DIR (a dense or --factorize model), --out-gguf FILE.gguf, or both")
    if cfg.out_gguf and cfg.factorize:  # the factorized modules replace the very matrices the GGUF needs
        raise LeantuneError("--factorize and --out-gguf cannot be combined: run `icl apply` once for each")
    folder = OutputFolder(cfg.out, "icl apply", overwrite=cfg.overwrite,
                          inputs={"model": input_path(cfg.model), "edit file": cfg.edit,
                                  "tokenizer": cfg.tokenizer}) if cfg.out else None
    source = None
    if cfg.out_gguf:  # before loading: a hub model, an unmapped family or a bad type is refused at once
        source = gguf_file_of(cfg.model)
        check_gguf_target(source, cfg.out_gguf, cfg.gguf_type)
    lm = load_model(cfg.model, head=cfg.head, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code,
                    device=cfg.device, device_map=cfg.device_map, max_memory=cfg.max_memory)
    data = read_edit_file(cfg.edit)
    check_edit_fits(lm, data, cfg.edit)
    info = _write_folder(lm, data, cfg, folder) if cfg.out else {}  # applies the edit (dense) or factorizes
    if cfg.out_gguf:
        if not cfg.out:
            from ..svd.api import apply_edit

            apply_edit(lm, data)  # the record read (and checked) above
        info["gguf"] = write_edit_gguf(lm, data, source, cfg.out_gguf, cfg.gguf_type)
    return info


def _write_folder(lm, data: dict, cfg: ApplyConfig, folder) -> dict:
    import torch

    from ..errors import LeantuneError
    from ..models import recorded_base, tokenizer_for
    from ..svd.api import apply_edit
    from ..svd.edits import Edit
    from ..svd.factorized import factorize, save_factorized

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


def write_edit_gguf(model, edit: dict, source, out, gguf_type: str = "keep") -> dict:
    """The edited ``model`` (the edit already applied) written into a copy of its ``source`` GGUF: only the
    edited matrices are rewritten, and the edit is noted in ``leantune.edit.*`` metadata."""
    from ..arch import get_arch
    from ..gguf_source import sha256_of
    from ..gguf_write import save_gguf
    from ..svd.edits import module_matrices

    arch = get_arch(model)
    matrices = [(e["layer"], name) for e in edit["edits"] if e["rate"] > 0
                for name in module_matrices(arch, e["module"])]
    note = {"kind": "svd", "layers": [e["layer"] for e in edit["edits"]],
            "modules": [e["module"] for e in edit["edits"]], "rates": [f"{e['rate']:g}" for e in edit["edits"]],
            "svd_dtype": edit.get("svd_dtype", "float32"), "source_sha256": sha256_of(Path(source))}
    return save_gguf(model, source, out, matrices, gguf_type, note)


CONFIG = ApplyConfig


def run(cfg: ApplyConfig, progress: bool) -> dict:
    return icl_apply(cfg)


def report(info: dict, cfg: ApplyConfig) -> str:
    lines = []
    if "format" in info:
        lines.append(f"wrote {info['format']} model to {info['out']} ({info['safetensors_bytes']:,} bytes of "
                     "safetensors)")
        if info["format"] == "factorized":
            lines.append("load it with leantune (any command's --model, or leantune.models.load_model)")
    if "gguf" in info:
        lines.append(gguf_report(info["gguf"]))
    return "\n".join(lines)


def gguf_report(g: dict) -> str:
    types = sorted({t["type"] for t in g["tensors"]})
    line = (f"wrote GGUF {g['out']} ({g['bytes']:,} bytes, source {g['source_bytes']:,}): {len(g['tensors'])} "
            f"tensor(s) rewritten as {', '.join(types) or 'nothing'}, the rest copied byte for byte")
    falls = sorted({t["fallback"] for t in g["tensors"] if "fallback" in t})
    return "\n".join([line, *(f"note: {f}" for f in falls)])


COMMANDS = {("icl", "apply"): Recipe(ApplyConfig, run, report,
                                     help="write the model with an edit applied (dense, or --factorize)")}

"""SVD edits: which matrices of which layers are replaced by which rank, applied and restored exactly.

An edit file (``edit.json``) records the base model, the edits and the SVD dtype, so that
``leantune icl eval --edit`` and ``leantune icl apply`` reproduce exactly what the search chose.
"""

from __future__ import annotations

import json
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..arch import ATTN, MLP, ArchMap, get_arch
from ..errors import LeantuneError
from ..offload import modules_of, onloaded
from ..schema import INT, LIST, MAPPING, NUMBER, TEXT, check_fields
from .lowrank import SVDCache, check_rate, rank_for, write_low_rank

GROUPS = {"attn": ATTN, "mlp": MLP, "all": ATTN + MLP}


def module_matrices(arch: ArchMap, module: str) -> tuple[str, ...]:
    """Logical matrices of a module group (attn, mlp, all) or a single logical matrix (q, mlp_in, ...)."""
    if module in GROUPS:
        found = tuple(n for n in GROUPS[module] if n in arch.names)
        if not found:  # an edit of nothing would score the unedited model as a candidate
            why = arch.family.mlp_absent if module == "mlp" else None
            raise LeantuneError(f"{arch.family.name} has no {module} matrices" + (f": {why}" if why else ""))
        return found
    if module in arch.names:
        return (module,)
    raise LeantuneError(f"module '{module}' is unknown for {arch.family.name}; use attn, mlp, all or one of "
                        f"{', '.join(arch.names)}")


@dataclass(frozen=True)
class Edit:
    layer: int
    module: str  # group or single logical matrix
    rate: float

    @property
    def key(self) -> str:
        return f"L{self.layer}:{self.module}:{self.rate:g}"


@contextmanager
def edited(arch: ArchMap, edits: list[Edit], cache: SVDCache):
    """Apply ``edits`` for the duration of the block, then restore the original weights bit for bit.

    Offloaded layers (``--device-map`` with disk/CPU offload) are materialized for the block only."""
    saved = []
    with ExitStack() as stack:
        try:
            for e in edits:
                if e.rate == 0:
                    continue
                mats = [arch.matrix(e.layer, name) for name in module_matrices(arch, e.module)]
                stack.enter_context(onloaded(modules_of(mats)))
                for m in mats:
                    saved.append((m, m.read()))
                    write_low_rank(m, cache, e.rate)
            yield
        finally:
            for m, w in reversed(saved):
                m.write(w)


def apply_edits(arch: ArchMap, edits: list[Edit], cache: SVDCache) -> list[dict]:
    """Apply permanently; returns what was done, per logical matrix."""
    done = []
    for e in edits:
        check_rate(e.rate)
        arch.check_layer(e.layer)
        if e.rate == 0:
            continue
        mats = [arch.matrix(e.layer, name) for name in module_matrices(arch, e.module)]
        with onloaded(modules_of(mats), keep=True):  # an offloaded layer keeps its edit (in CPU memory)
            for m in mats:
                r = write_low_rank(m, cache, e.rate)
                done.append({"layer": e.layer, "matrix": m.name, "rate": e.rate, "rank": r, "shape": list(m.shape)})
    return done


def model_identity(model, model_name: str | None = None) -> dict:
    """The base model of an edit: ``name`` as a user names it elsewhere (an alias's hub id, an absolute local
    path, never a cache folder), the alias and GGUF file (name, sha256) beside it, and its shape."""
    from ..models import base_model_record, recorded_base

    cfg = model.config
    own = recorded_base(model)  # what load_model recorded: keeps the alias and GGUF file of the weights
    base = own if not model_name or model_name == own.get("name") else base_model_record(model_name)
    source = {k: v for k, v in base.items() if k in ("alias", "gguf")}
    return {"name": base["name"], **source, "model_type": cfg.model_type,
            "revision": getattr(cfg, "_commit_hash", None), "num_layers": get_arch(model).num_layers,
            "hidden_size": getattr(cfg, "hidden_size", None) or getattr(cfg, "n_embd", None)}


def edit_record(model, model_name: str, edits: list[Edit], svd_dtype: str) -> dict:
    arch = get_arch(model)
    matrices = []
    for e in edits:
        if e.rate == 0:
            continue
        for name in module_matrices(arch, e.module):
            shape = arch.matrix(e.layer, name).shape
            matrices.append({"layer": e.layer, "matrix": name, "rate": e.rate, "rank": rank_for(e.rate, shape),
                             "shape": list(shape)})
    return {"format": "leantune-svd-edit/1", "base_model": model_identity(model, model_name),
            "edits": [asdict(e) for e in edits], "matrices": matrices, "svd_dtype": svd_dtype}


def read_edit_file(path: str) -> dict:
    p = Path(path)
    if p.is_dir():
        inside = " (pass the edit.json inside it)" if (p / "edit.json").is_file() else ""
        raise LeantuneError(f"edit file {path} is a folder{inside}; --edit takes the edit.json written by "
                            "`leantune icl search`")
    if not p.is_file():
        raise LeantuneError(f"edit file {path} does not exist")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LeantuneError(f"edit file {path} is not valid JSON ({e})") from None
    if not isinstance(data, dict) or data.get("format") != "leantune-svd-edit/1":
        raise LeantuneError(f"{path} is not a leantune edit file (written by `leantune icl search`)")
    check_edit_schema(data, path)
    return data


def check_edit_schema(data: dict, path: str) -> None:
    """Keys and types of an edit file; ranges against a model are check_edit_fits' job."""
    check_fields(data, f"edit file {path}", {"base_model": MAPPING, "edits": LIST},
                 {"matrices": LIST, "svd_dtype": TEXT})
    check_fields(data["base_model"], f"edit file {path}: base_model", {"model_type": TEXT, "num_layers": INT},
                 {"name": TEXT, "hidden_size": INT})
    if data.get("svd_dtype", "float32") not in ("float32", "float64"):
        raise LeantuneError(f"edit file {path}: svd_dtype must be float32 or float64, got {data['svd_dtype']!r}")
    for i, e in enumerate(data["edits"]):
        check_fields(e, f"edit file {path}: edits[{i}]", {"layer": INT, "module": TEXT, "rate": NUMBER})
        if set(e) - {"layer", "module", "rate"}:
            raise LeantuneError(f"edit file {path}: edits[{i}] has unknown keys {sorted(set(e) - {'layer', 'module', 'rate'})}")
        if not 0 <= e["rate"] < 1:
            raise LeantuneError(f"edit file {path}: edits[{i}] rate {e['rate']} is outside [0, 1)")
    for i, m in enumerate(data.get("matrices") or []):
        check_fields(m, f"edit file {path}: matrices[{i}]",
                     {"layer": INT, "matrix": TEXT, "rate": NUMBER, "rank": INT, "shape": LIST})


def check_edit_fits(model, data: dict, path: str) -> None:
    base = data["base_model"]
    here = model_identity(model)
    for key in ("model_type", "num_layers", "hidden_size"):
        if base.get(key) != here.get(key):
            raise LeantuneError(f"edit file {path} was made for {base.get('name')} ({key}={base.get(key)}), but this "
                                f"model has {key}={here.get(key)}; use the edit with the model it was searched on")
    arch = get_arch(model)
    for e in data["edits"]:
        if not 0 <= e["layer"] < arch.num_layers:
            raise LeantuneError(f"edit file {path}: layer {e['layer']} is out of range: the model has "
                                f"{arch.num_layers} layers (0..{arch.num_layers - 1})")
        module_matrices(arch, e["module"])  # an unknown module is one line naming the known ones
    for m in data.get("matrices") or []:
        if m["matrix"] not in arch.names or not 0 <= m["layer"] < arch.num_layers or \
                list(arch.matrix(m["layer"], m["matrix"]).shape) != m["shape"]:
            raise LeantuneError(f"edit file {path}: layer {m['layer']} {m['matrix']} {m['shape']} does not exist "
                                "in this model; use the edit with the model it was searched on")
        # the rate decides what is applied; a rank that disagrees with it means the file was altered
        expected = rank_for(m["rate"], tuple(m["shape"]))
        if m["rank"] != expected:
            raise LeantuneError(f"edit file {path}: layer {m['layer']} {m['matrix']} records rank {m['rank']}, but "
                                f"rate {m['rate']:g} of a {m['shape'][0]}x{m['shape'][1]} matrix gives rank "
                                f"{expected} (1..{min(m['shape'])}); was the file edited by hand?")


def apply_edit_file(model, path: str, model_name: str | None = None) -> dict:
    data = read_edit_file(path)
    check_edit_fits(model, data, path)
    arch = get_arch(model)
    dtype = getattr(torch, data.get("svd_dtype", "float32"))
    done = apply_edits(arch, [Edit(**e) for e in data["edits"]], SVDCache(arch, dtype))
    return {"file": str(path), "edits": data["edits"], "matrices": done}

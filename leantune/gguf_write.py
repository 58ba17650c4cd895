"""Writing GGUF: the other direction of the GGUF saved format (``gguf_source`` reads, this writes).

An edited or merged model that came from a ``.gguf`` file goes back into a copy of that file: every
metadata key of the source is kept (architecture, tokenizer, chat template, ...), ``leantune.edit.*`` keys
say what changed, every tensor we did not change is copied byte for byte in its own quantization, and
only the replaced matrices are encoded again, in the type asked for (``--gguf-type``).

What this module knows and the recipes do not: llama.cpp's tensor names (from the ``gguf`` package's
``TENSOR_NAMES`` / ``MODEL_TENSORS``) and its storage layout. llama.cpp stores the Q and K rows of
Llama-family models permuted for its rotary kernel, and transformers' GGUF reader undoes that on load;
so a matrix we read from the loaded model must be permuted again before it is written. The reading,
writing and block quantization are the ``gguf`` package's own (``GGUFReader``, ``GGUFWriter``,
``gguf.quants``); what we add is the mapping, the permutation and the choice of type.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import LeantuneError

GGUF_TYPES = ("keep", "q8_0", "f16", "f32")
# the types gguf.quants can encode today (K-quants and i-quants it can only decode)
_WRITABLE = ("F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0")
KEEP_FALLBACK = "Q8_0"  # `keep` on a source type gguf cannot encode (e.g. Gemma-3's Q4_K / Q6_K)
ROW_FALLBACK = "F16"  # a row length that is no multiple of the block size (llama.cpp's converter does the same)

# our logical matrices -> llama.cpp's tensor kinds (names come from gguf.TENSOR_NAMES)
_LOGICAL = {"q": "ATTN_Q", "k": "ATTN_K", "v": "ATTN_V", "o": "ATTN_OUT",
            "mlp_in": "FFN_UP", "mlp_gate": "FFN_GATE", "mlp_out": "FFN_DOWN"}


@dataclass(frozen=True)
class GGUFFamily:
    """A ``general.architecture`` whose tensors we map, and which logical matrices llama.cpp stores permuted."""

    arch: str
    rotary_permuted: tuple[str, ...]  # rows permuted as llama.cpp's convert_hf_to_gguf.py does (undone on load)


# Only families whose round trip through transformers' reader we mirror: llama (also Mistral-named llama
# files) un-permutes Q and K on load; gemma3 stores them as they are (its norm offsets are not our business:
# we never rewrite a norm).
FAMILIES = {"llama": GGUFFamily("llama", ("q", "k")), "gemma3": GGUFFamily("gemma3", ())}


def open_source(path: str | Path):
    from gguf import GGUFReader

    try:
        return GGUFReader(str(path), "r")
    except (ValueError, OSError, IndexError, KeyError) as e:
        raise LeantuneError(f"{path} is not a readable GGUF file ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None


def _field(reader, key: str):
    f = reader.fields.get(key)
    return None if f is None else f.contents()


def family_of(reader, path) -> GGUFFamily:
    arch = _field(reader, "general.architecture")
    if arch not in FAMILIES:
        raise LeantuneError(f"{Path(path).name} is a '{arch}' GGUF; writing GGUF maps the tensor names of "
                            f"{', '.join(FAMILIES)} only: save a dense folder with --out instead")
    return FAMILIES[arch]


def tensor_name(family: GGUFFamily, layer: int, logical: str) -> str:
    """llama.cpp's name of layer ``layer``'s logical matrix, e.g. ``blk.3.attn_q.weight``."""
    import gguf

    kind = getattr(gguf.MODEL_TENSOR, _LOGICAL.get(logical, "-"), None)
    arch = next(a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == family.arch)
    if kind is None or kind not in gguf.MODEL_TENSORS[arch]:
        raise LeantuneError(f"matrix '{logical}' has no llama.cpp tensor in a {family.arch} GGUF")
    return gguf.TENSOR_NAMES[kind].format(bid=layer) + ".weight"


def to_llama_cpp_layout(w: np.ndarray, n_head: int) -> np.ndarray:
    """Rows of an [out, in] Q or K matrix in llama.cpp's order: within each head, the first and second
    halves of the rotary dimensions interleaved (the inverse of transformers' reverse permutation)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def matrices_in_gguf_layout(model, reader, path, matrices) -> dict[str, np.ndarray]:
    """{tensor name: float32 [out, in] in llama.cpp's layout} of the model's current ``matrices``
    ((layer, logical) pairs); each must match the source tensor's shape."""
    from .arch import get_arch

    family = family_of(reader, path)
    arch = get_arch(model)
    heads = {"q": _field(reader, f"{family.arch}.attention.head_count"),
             "k": _field(reader, f"{family.arch}.attention.head_count_kv")}
    heads["k"] = heads["k"] or heads["q"]
    source = {t.name: t for t in reader.tensors}
    out = {}
    for layer, logical in matrices:
        name = tensor_name(family, layer, logical)
        w = arch.matrix(layer, logical).read().float().cpu().numpy()
        if logical in family.rotary_permuted:
            w = to_llama_cpp_layout(w, int(heads[logical]))
        t = source.get(name)
        if t is None or tuple(int(n) for n in reversed(t.shape)) != w.shape:  # gguf shapes are (ne0=in, ne1=out)
            have = "missing" if t is None else f"shape {tuple(int(n) for n in reversed(t.shape))}"
            raise LeantuneError(f"{Path(path).name}: tensor {name} is {have}, the model's layer {layer} {logical} is "
                                f"{w.shape}; pass the .gguf file this model was loaded from")
        out[name] = np.ascontiguousarray(w, dtype=np.float32)
    return out


def encode(w: np.ndarray, source_type: str, gguf_type: str) -> tuple[np.ndarray, str, str | None]:
    """(data, type name, why a fallback was taken or None) for one float32 [out, in] matrix."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, quants

    if gguf_type not in GGUF_TYPES:
        raise LeantuneError(f"--gguf-type {gguf_type}: choose one of {', '.join(GGUF_TYPES)}")
    why = None
    want = source_type if gguf_type == "keep" else gguf_type.upper()
    if want not in _WRITABLE:
        why = f"the gguf package cannot encode {want}: written as {KEEP_FALLBACK}"
        want = KEEP_FALLBACK
    qtype = GGMLQuantizationType[want]
    block = GGML_QUANT_SIZES[qtype][0]
    if w.shape[-1] % block:
        why = f"rows of {w.shape[-1]} are no multiple of {want}'s block of {block}: written as {ROW_FALLBACK}"
        want, qtype = ROW_FALLBACK, GGMLQuantizationType[ROW_FALLBACK]
    return quants.quantize(w, qtype), want, why


def write_gguf(source: str | Path, out: str | Path, replaced: dict[str, np.ndarray], gguf_type: str = "keep",
               note: dict | None = None, reader=None) -> dict:
    """Copy GGUF ``source`` to ``out`` with the tensors in ``replaced`` ({name: float32 [out, in] in llama.cpp's
    layout}) encoded as ``gguf_type``; every other tensor and every metadata key is copied as it is, and
    ``note`` becomes ``leantune.edit.<key>`` metadata. Written to a temporary file, then renamed."""
    from gguf import GGMLQuantizationType, GGUFValueType, GGUFWriter

    source, out = Path(source), Path(out)
    reader = reader or open_source(source)
    arch = _field(reader, "general.architecture")
    unknown = sorted(set(replaced) - {t.name for t in reader.tensors})
    if unknown:
        raise LeantuneError(f"{source.name} has no tensor(s) {', '.join(unknown[:3])}")
    encoded, written = {}, []
    for t in reader.tensors:
        if t.name in replaced:
            data, kind, why = encode(replaced[t.name], t.tensor_type.name, gguf_type)
            encoded[t.name] = (data, GGMLQuantizationType[kind])
            written.append({"tensor": t.name, "source_type": t.tensor_type.name, "type": kind,
                            **({"fallback": why} if why else {})})

    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent)
    os.close(fd)
    try:
        writer = GGUFWriter(tmp, arch, endianess=reader.endianess)
        alignment = _field(reader, "general.alignment")
        if alignment is not None:
            writer.data_alignment = int(alignment)
        for field in reader.fields.values():  # as gguf's gguf_new_metadata.py copies a file
            if field.name == "general.architecture" or field.name.startswith("GGUF."):
                continue  # the writer adds the architecture itself; GGUF.* are the header, not keys
            if field.name.startswith("leantune.edit."):
                continue  # an earlier edit's note: replaced by this one's below
            vtype = field.types[0]
            writer.add_key_value(field.name, field.contents(), vtype,
                                 sub_type=field.types[-1] if vtype == GGUFValueType.ARRAY else None)
        for key, value in (note or {}).items():
            _add_note(writer, f"leantune.edit.{key}", value)
        writer.add_key_value("leantune.edit.gguf_type", gguf_type, GGUFValueType.STRING)
        writer.add_key_value("leantune.edit.tensors", [w["tensor"] for w in written], GGUFValueType.ARRAY,
                             sub_type=GGUFValueType.STRING)
        for t in reader.tensors:
            if t.name in encoded:
                data, qtype = encoded[t.name]
                writer.add_tensor_info(t.name, data.shape, data.dtype, data.nbytes, qtype)
            else:
                writer.add_tensor_info(t.name, t.data.shape, t.data.dtype, t.data.nbytes, t.tensor_type)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for t in reader.tensors:  # untouched tensors: the source's bytes, never decoded
            data = encoded[t.name][0] if t.name in encoded else t.data
            writer.write_tensor_data(data, tensor_endianess=reader.endianess)
        writer.close()
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return {"out": str(out), "bytes": out.stat().st_size, "source_bytes": source.stat().st_size,
            "gguf_type": gguf_type, "tensors": written}


def _add_note(writer, key: str, value) -> None:
    from gguf import GGUFValueType

    if isinstance(value, bool):
        writer.add_key_value(key, value, GGUFValueType.BOOL)
    elif isinstance(value, int):
        writer.add_key_value(key, value, GGUFValueType.INT64)
    elif isinstance(value, float):
        writer.add_key_value(key, value, GGUFValueType.FLOAT64)
    elif isinstance(value, (list, tuple)):
        items = [str(v) for v in value]  # lists of mixed items are recorded as strings
        writer.add_key_value(key, items, GGUFValueType.ARRAY, sub_type=GGUFValueType.STRING)
    else:
        writer.add_key_value(key, str(value), GGUFValueType.STRING)


def save_gguf(model, source: str | Path, out: str | Path, matrices, gguf_type: str = "keep",
              note: dict | None = None) -> dict:
    """Write ``model``'s current ``matrices`` ((layer, logical) pairs, e.g. an SVD edit's or merged Q/V) into a
    copy of ``source``, the GGUF file the model was loaded from. Returns what was written (per tensor: source
    type, written type, any fallback), with the file sizes."""
    if gguf_type not in GGUF_TYPES:
        raise LeantuneError(f"--gguf-type {gguf_type}: choose one of {', '.join(GGUF_TYPES)}")
    reader = open_source(source)
    replaced = matrices_in_gguf_layout(model, reader, source, matrices)
    return write_gguf(source, out, replaced, gguf_type, note, reader=reader)


def check_gguf_target(source: str | Path, out: str | Path, gguf_type: str) -> None:
    """Refuse, before any model loads, what cannot be written: a type we do not offer, an output name that is
    not a .gguf file, a source family whose tensor names we do not map."""
    if gguf_type not in GGUF_TYPES:
        raise LeantuneError(f"--gguf-type {gguf_type}: choose one of {', '.join(GGUF_TYPES)}")
    if Path(out).suffix.lower() != ".gguf" or Path(out).is_dir():
        raise LeantuneError(f"--out-gguf {out}: give a file name ending in .gguf")
    if Path(out).resolve() == Path(source).resolve():
        raise LeantuneError(f"--out-gguf {out} is the source file itself; write to a new file")
    family_of(open_source(source), source)


def gguf_file_of(model_name: str, option: str = "--out-gguf") -> Path:
    """The ``.gguf`` file a model name loads from (a file, a folder holding one, an alias of one, or leantune's
    converted copy of one), or one error line naming the route for models that did not come from GGUF."""
    from .aliases import ALIASES, resolve_alias
    from .gguf_source import find_gguf, sha256_of, source_record

    where = resolve_alias(model_name)[0] if model_name in ALIASES else model_name
    path = Path(where).expanduser()
    found = find_gguf(path) if path.exists() else None
    if found is not None:
        return found
    record = source_record(path) if path.is_dir() else None
    if record and record.get("file") and Path(record["file"]).is_file():
        if sha256_of(Path(record["file"])) == record.get("sha256"):
            return Path(record["file"])
        raise LeantuneError(f"{record['file']} changed since {model_name} was converted from it; pass the .gguf "
                            f"file itself as --model")
    raise LeantuneError(f"{option} needs a model loaded from a .gguf file, and {model_name} is not one: save it as a "
                        f"folder (--out), convert that with llama.cpp's convert_hf_to_gguf.py, then pass the "
                        f".gguf as --model")

"""GGUF files as a model source: read once through transformers' own GGUF reader, then cached as safetensors.

transformers dequantizes a GGUF checkpoint to float on every ``from_pretrained(dir, gguf_file=...)``
(~20-40 s for SmolLM2-135M, ~80 s for Gemma-3-270M on 2 CPU cores). We do that once and write a plain
``save_pretrained`` folder (config, tokenizer, float32 safetensors) into ``$LEANTUNE_CACHE/gguf/<sha256>``,
so every later load is an ordinary safetensors load and every command (and plain transformers) can read
it. The folder also holds ``leantune_source.json``: which file it came from, its sha256 and its
quantization type, which runs copy into their metrics/summary so a result always says its weights were
4-bit (or 8-bit) weights dequantized to float.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from .errors import LeantuneError
from .outputs import DISK_ERRNOS

SOURCE_FILE = "leantune_source.json"
_FORMAT = 1  # bump when the cached folder's layout changes, so stale caches are rebuilt


def cache_root() -> Path:
    return Path(os.environ.get("LEANTUNE_CACHE", Path.home() / ".cache" / "leantune")).expanduser()


def find_gguf(path: Path) -> Path | None:
    """``path`` itself if it is a ``.gguf`` file; the one ``.gguf`` in a folder that holds no other weights (many
    GGUF repositories ship a config.json beside it: the GGUF carries its own config, so that one is not needed);
    else None."""
    if path.is_file():
        return path if path.suffix.lower() == ".gguf" else None
    weights = ("*.safetensors", "*.bin", "*.pt", "*.pth")
    if path.is_dir() and not ((path / "config.json").is_file() and any(any(path.glob(w)) for w in weights)):
        found = sorted(p for p in path.iterdir() if p.suffix.lower() == ".gguf" and p.is_file())
        if len(found) > 1:
            raise LeantuneError(f"model directory {path} holds {len(found)} .gguf files "
                                f"({', '.join(p.name for p in found[:4])}); pass the one you mean as --model FILE")
        return found[0] if found else None
    return None


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def read_header(path: Path) -> dict:
    """Architecture, name and quantization type from the GGUF header (no tensor is dequantized)."""
    try:
        from gguf import GGUFReader, LlamaFileType
    except ImportError:
        raise LeantuneError("reading .gguf files needs the package gguf: pip install gguf") from None
    try:
        reader = GGUFReader(str(path), "r")
    except (ValueError, OSError, IndexError, KeyError) as e:  # gguf's own checks: magic, sizes, offsets
        raise LeantuneError(f"{path} is not a readable GGUF file ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                            "download it again or check the path") from None

    def field(name):
        f = reader.fields.get(name)
        if f is None or not f.data:
            return None
        value = f.parts[f.data[0]]
        return bytes(value).decode("utf-8", "replace") if f.types and f.types[0].name == "STRING" else value.tolist()[0]

    file_type = field("general.file_type")
    try:
        quant = LlamaFileType(file_type).name.removeprefix("MOSTLY_") if file_type is not None else None
    except ValueError:
        quant = f"file_type {file_type}"
    counts: dict[str, int] = {}
    for t in reader.tensors:
        counts[t.tensor_type.name] = counts.get(t.tensor_type.name, 0) + 1
    return {"architecture": field("general.architecture"), "name": field("general.name"),
            "quantization": quant, "tensor_types": counts}


def materialize(path: Path, progress: bool = True, base_model: str | None = None) -> Path:
    """The cached safetensors folder for GGUF ``path``, building it on first use. ``base_model``: how a
    user names the model elsewhere (the hub original of an alias's file), recorded beside the file."""
    sha = sha256_of(path)
    target = cache_root() / "gguf" / sha[:32]
    damage = cache_damage(target)
    if damage is None:
        return target
    if damage:  # an entry was there: say why it is rebuilt (the .gguf itself is fine: downloading it cannot help)
        print(f"leantune: the cached copy of {path.name} in {target} is damaged ({damage}); rebuilding it",
              file=sys.stderr, flush=True)
    header = read_header(path)
    # the cache must take the result before the long conversion starts: probe it now (one line if it cannot)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{sha[:12]}-", dir=target.parent))
    except OSError as e:
        raise LeantuneError(f"the model cache {e.filename or target.parent} cannot be written ({e.strerror}); set "
                            "LEANTUNE_CACHE to a writable folder with room for the converted weights") from None
    if progress:
        print(f"leantune: converting {path.name} ({header['quantization']}, {header['architecture']}) to a cached "
              f"safetensors copy in {target} (once; later loads take seconds)", file=sys.stderr, flush=True)
    try:  # the temporary folder goes on every exit path (SIGTERM too: the CLI turns it into an exception)
        model, tokenizer = _load_through_transformers(path, header)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        source = {"format": _FORMAT, "file": str(path.resolve()), "sha256": sha, **header,
                  **({"base_model": base_model} if base_model else {}),
                  "note": "quantized GGUF weights dequantized to float32 by transformers' GGUF reader",
                  "files": _entry_files(tmp)}
        (tmp / SOURCE_FILE).write_text(json.dumps(source, indent=2) + "\n")
        if target.exists():  # a stale or damaged copy: replace it whole
            shutil.rmtree(target)
        os.replace(tmp, target)  # atomic: a crash never leaves a half-written cache entry in place
    except OSError as e:
        if e.errno not in DISK_ERRNOS:
            raise
        raise LeantuneError(f"the model cache {e.filename or target.parent} cannot be written ({e.strerror}); "
                            "free space or set LEANTUNE_CACHE to another folder") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


SMALL = 16 << 20  # files below this size are checksummed on every use; larger ones (the weights) by size + header


def _entry_files(folder: Path) -> dict:
    """What a cache entry holds, recorded so that a later use can tell a damaged entry: name -> size (+ sha256)."""
    out = {}
    for f in sorted(folder.iterdir()):
        if f.is_file() and f.name != SOURCE_FILE:
            size = f.stat().st_size
            out[f.name] = {"size": size, **({"sha256": sha256_of(f)} if size < SMALL else {})}
    return out


def cache_damage(target: Path) -> str | None:
    """None when the cache entry ``target`` is whole; else what is wrong ("" when there is no entry at all)."""
    record = target / SOURCE_FILE
    if not target.exists():
        return ""
    try:
        data = json.loads(record.read_text())
    except (OSError, ValueError):
        return f"{SOURCE_FILE} is missing or unreadable"
    if not isinstance(data, dict) or data.get("format") != _FORMAT:
        return f"{SOURCE_FILE} is from another version"
    files = data.get("files")
    if not isinstance(files, dict):  # an entry written before sizes were recorded: its files must at least be there
        files = {"config.json": {}, **{f.name: {} for f in target.glob("*.safetensors")}}
        if len(files) == 1:
            return "its weights (*.safetensors) are missing"
    for name, want in files.items():
        f = target / name
        if not f.is_file():
            return f"{name} is missing"
        if "size" in want and f.stat().st_size != want["size"]:
            return f"{name} has {f.stat().st_size} bytes, {want['size']} were written"
        if "sha256" in want and sha256_of(f) != want["sha256"]:
            return f"{name} changed since it was written"
        if name.endswith(".safetensors") and not _safetensors_header_ok(f):
            return f"{name} has a damaged header"
    return None


def _safetensors_header_ok(f: Path) -> bool:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(f), "pt") as st:
            st.keys()
        return True
    except (SafetensorError, OSError):
        return False


def _load_through_transformers(path: Path, header: dict):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    except (ValueError, KeyError, NotImplementedError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise LeantuneError(f"transformers cannot read {path.name} (architecture '{header['architecture']}'): {first}; "
                            "GGUF works for the architectures transformers' GGUF reader supports "
                            "(llama, mistral, qwen2, qwen3, gemma3, phi3, gpt2, falcon, ...)") from None
    # A GGUF-loaded model carries its quantizer; save_pretrained refuses it until both are gone. The
    # weights are already dequantized floats at this point, so nothing is lost.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model, tokenizer


def source_record(folder: str | Path) -> dict | None:
    """The provenance written by :func:`materialize`, if ``folder`` is such a cache entry."""
    f = Path(folder) / SOURCE_FILE
    if not f.is_file():
        return None
    data = json.loads(f.read_text())
    return {k: data.get(k) for k in ("file", "sha256", "quantization", "architecture", "name", "note")}

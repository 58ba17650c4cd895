"""Precision and placement, one place for every command: ``--dtype``, ``--device``, ``--device-map``,
``--max-memory``, byte budgets, and the guard that turns non-finite half-precision scores into one error.

Rules kept everywhere else:

* weights load in ``--dtype`` (``auto`` = the checkpoint's own dtype); SVDs, spectra and condition numbers
  are computed in float32 (or ``--svd-dtype float64``) and results cast back to the weight's dtype;
* with ``--device-map`` the model is dispatched by accelerate (``from_pretrained(device_map=...)``): every
  layer runs on its own device and inputs enter on the device of the input embeddings
  (:func:`input_device`);
* without ``--device``, a process started by torchrun / accelerate launch (``LOCAL_RANK`` set) uses
  ``cuda:LOCAL_RANK`` when CUDA is there, else the CPU (:func:`default_device`).
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import torch

from .errors import LeantuneError

# the names every --dtype takes -> the torch dtype ("auto": the checkpoint's own)
DTYPES = {"auto": "auto", "float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
          "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def default_device(device: str | None) -> str | None:
    """``--device`` if given; else ``cuda:LOCAL_RANK`` under a multi-process launcher with CUDA; else None (cpu)."""
    if device:
        return device
    local = os.environ.get("LOCAL_RANK")
    if local is not None and torch.cuda.is_available():
        return f"cuda:{int(local) % max(torch.cuda.device_count(), 1)}"
    return None


def parse_bytes(text: str | int | None) -> int | None:
    """``"200MB"`` / ``"1.5GiB"`` / ``"4096"`` -> bytes (None stays None)."""
    if text is None or isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?I?B?)\s*", str(text).upper())
    if not m or m.group(2) not in _UNITS:
        raise LeantuneError(f"cannot read the size {text!r}; write e.g. 200MB, 1.5GiB or 4096 (bytes)")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


def parse_max_memory(spec: str | dict | None) -> dict | None:
    """``"0=20GiB,1=20GiB,cpu=60GiB"`` (or a mapping) -> transformers' ``max_memory`` dict."""
    if spec is None or isinstance(spec, dict):
        return spec
    out = {}
    for part in filter(None, (x.strip() for x in str(spec).split(","))):
        key, sep, size = part.partition("=")
        if not sep:
            raise LeantuneError(f"--max-memory {spec!r}: write DEVICE=SIZE pairs, e.g. 0=20GiB,cpu=60GiB")
        key = key.strip()
        out[int(key) if key.isdigit() else key] = size.strip()
        parse_bytes(size)  # validates the size
    return out or None


def parse_device_map(spec: str | dict | None) -> str | dict | None:
    """``auto`` / ``balanced`` / ``balanced_low_0`` / ``sequential``, or a JSON file {module: device}."""
    if spec is None or isinstance(spec, dict):
        return spec
    if spec in ("auto", "balanced", "balanced_low_0", "sequential"):
        return spec
    path = Path(spec)
    if not path.is_file():
        raise LeantuneError(f"--device-map {spec}: use auto, balanced, sequential, or an existing JSON file "
                            "mapping module names to devices")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise LeantuneError(f"--device-map {spec} is not valid JSON ({e.msg})") from None
    if not isinstance(data, dict) or not data:
        raise LeantuneError(f"--device-map {spec} must hold a mapping of module names to devices")
    return data


def needs_offload_folder(device_map) -> bool:
    return device_map in ("auto", "balanced", "balanced_low_0", "sequential") or \
        (isinstance(device_map, dict) and "disk" in device_map.values())


def input_device(model) -> torch.device:
    """Where input ids go: the input embeddings' execution device (dispatched models) or their weight's."""
    try:
        emb = model.get_input_embeddings()
    except (AttributeError, NotImplementedError):
        emb = None
    for mod in (emb, model):
        if mod is None:
            continue
        hook = getattr(mod, "_hf_hook", None)
        dev = getattr(hook, "execution_device", None)
        if dev is not None:
            return torch.device(dev if not isinstance(dev, int) else f"cuda:{dev}")
    for p in (emb.parameters() if emb is not None else model.parameters()):
        if p.device.type != "meta":
            return p.device
    return torch.device("cpu")


def module_device(module) -> torch.device:
    """The device a module computes on (its accelerate execution device, else its first real parameter's)."""
    hook = getattr(module, "_hf_hook", None)
    dev = getattr(hook, "execution_device", None)
    if dev is not None:
        return torch.device(dev if not isinstance(dev, int) else f"cuda:{dev}")
    for p in module.parameters():
        if p.device.type != "meta":
            return p.device
    return torch.device("cpu")


def model_dtype(model) -> torch.dtype:
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def check_finite_scores(logprobs: list[list[float]], model) -> None:
    """One clear error when a (typically float16) model gives NaN/inf log-probs, never a NaN accuracy."""
    bad = sum(1 for ex in logprobs for v in ex if not math.isfinite(v))
    if not bad:
        return
    total = sum(len(ex) for ex in logprobs)
    dtype = str(model_dtype(model)).removeprefix("torch.")
    hint = ("float16 overflows easily; use --dtype bfloat16 (same memory, float32's range) or float32"
            if dtype == "float16" else "check the weights for NaN/inf, or use --dtype float32")
    raise LeantuneError(f"the model produced non-finite scores (NaN/inf) for {bad} of {total} choices in {dtype}; "
                        f"{hint}")

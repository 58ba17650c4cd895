"""Output locations, checked before any work starts: a bad --out costs a second, not an hour of training.

A folder output must be an existing writable folder or creatable; a file output must not be a folder and
its folder must be writable or creatable. The probe creates only what is missing and removes exactly
that again, so a refused command leaves the disk as it found it.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from .errors import LeantuneError

IMAGE_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg")

def flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


# command -> {option: "dir" | "file" | "image"}
OUTPUTS = {
    "inspect": {"json": "file", "plot": "image"},
    "finetune": {"out": "dir"}, "merge": {"out": "dir", "out_gguf": "file"},
    "icl eval": {"out": "dir"}, "icl search": {"out": "dir"}, "icl apply": {"out": "dir", "out_gguf": "file"},
    "lab train": {"out": "dir"}, "lab study": {"out": "dir"}, "demo": {"out": "dir"},
}


def _probe_dir(name: str, path: Path) -> None:
    """Raise unless ``path`` is (or can become) a folder we can write into; leave nothing behind."""
    if path.exists():
        if not path.is_dir():
            raise LeantuneError(f"{name} {path} is an existing file; give a folder path (the command writes "
                                "several files into it)")
        try:
            with tempfile.TemporaryFile(dir=path):
                pass
        except OSError as e:
            raise LeantuneError(f"cannot write into {name} {path}: {e.strerror}") from None
        return
    missing = []
    p = path
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    if not p.is_dir():
        raise LeantuneError(f"{name} {path} cannot be created: {p} is a file, not a folder")
    made = []
    try:
        for d in reversed(missing):
            d.mkdir()
            made.append(d)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise LeantuneError(f"{name} {path} cannot be created ({e.strerror}: {e.filename}); "
                            "choose a writable location") from None
    finally:
        for d in reversed(made):  # only the folders this probe made, deepest first
            os.rmdir(d)


def check_dir(name: str, path: str) -> None:
    _probe_dir(name, Path(path).expanduser())


def check_file(name: str, path: str, suffixes: tuple[str, ...] | None = None) -> None:
    p = Path(path).expanduser()
    if p.is_dir():
        example = f"{p}/{'plot.png' if suffixes else 'result.json'}"
        raise LeantuneError(f"{name} {path} is a folder; give a file name such as {example}")
    if suffixes and p.suffix.lower() not in suffixes:
        raise LeantuneError(f"{name} {path}: the file name must end in {', '.join(suffixes)} (the image format)")
    parent = p.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise LeantuneError(f"{name} {path} cannot be created: {parent} is a file, not a folder")
    _probe_dir(f"the folder of {name}", p.parent)


def check_outputs(command: str, args: argparse.Namespace) -> None:
    for dest, kind in OUTPUTS.get(command, {}).items():
        value = getattr(args, dest, None)
        if not value:
            continue
        if kind == "dir":
            check_dir(flag(dest), value)
        else:
            check_file(flag(dest), value, IMAGE_SUFFIXES if kind == "image" else None)

"""Readers for the published file formats of the benchmark tasks (see ``shared/data/README.md``).

Each reader returns a list of plain records (dicts). Files are read as published; nothing is "fixed".
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

from ..errors import LeantuneError
from ..schema import read_utf8

REPO_ROOT = Path(__file__).resolve().parents[2]


def default_data_dir() -> Path | None:
    """``$LEANTUNE_DATA_DIR``, else ``../shared/data`` (beside the repo or the working directory), else None (hub)."""
    env = os.environ.get("LEANTUNE_DATA_DIR")
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise LeantuneError(f"LEANTUNE_DATA_DIR={env} is not a directory; unset it to use the hub")
        return path
    for base in (REPO_ROOT, Path.cwd()):
        cand = (base / ".." / "shared" / "data").resolve()
        if cand.is_dir():
            return cand
    return None


def _open(path: Path):
    if not path.is_file():
        raise LeantuneError(f"data file {path} does not exist; check --data-dir (or LEANTUNE_DATA_DIR)")
    # decoded up front so that a non-UTF-8 file is one line with the byte offset, not an error mid-iteration;
    # the BOM of the MRPC header is dropped; newline="" keeps csv in charge of CRLF (EmoC)
    return io.StringIO(read_utf8(path, "data file", bom=True), newline="")


def _objects(rows, path: Path) -> list[dict]:
    for n, r in enumerate(rows, 1):
        if not isinstance(r, dict):
            raise LeantuneError(f"{path}: record {n} is {type(r).__name__}, not an object of column -> value")
    return rows


def read_jsonl(path: Path) -> list[dict]:
    rows = []
    with _open(path) as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise LeantuneError(f"{path}:{n} is not valid JSON ({e.msg}); fix the line or the file") from None
    return _objects(rows, path)


def read_tsv(path: Path, header: bool = True, fieldnames: list[str] | None = None) -> list[dict]:
    with _open(path) as f:
        # QUOTE_NONE: GLUE's TSVs contain bare double quotes inside sentences
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        rows = list(reader)
    if header:
        if not rows:
            raise LeantuneError(f"data file {path} is empty; it needs a header row")
        fieldnames, rows = [c.strip() for c in rows[0]], rows[1:]
    out = []
    for r in rows:
        if not r:
            continue
        if len(r) != len(fieldnames):
            raise LeantuneError(f"{path}: a row has {len(r)} columns, expected {len(fieldnames)} ({fieldnames})")
        out.append(dict(zip(fieldnames, r)))
    return out


def read_label_first_lines(path: Path) -> list[dict]:
    """SST-2 (stsa.binary): ``<label> <sentence>`` per line."""
    rows = []
    with _open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if line.strip():
                if " " not in line:
                    raise LeantuneError(f"{path}: the line {line[:40]!r} has no '<label> <sentence>'")
                label, sentence = line.split(" ", 1)
                rows.append({"label": label, "sentence": sentence})
    return rows


def read_table(path: Path) -> list[dict]:
    """Custom data: .jsonl/.json (list of objects), .csv or .tsv with a header row."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return read_jsonl(path)
    if suffix == ".json":
        with _open(path) as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as e:
                raise LeantuneError(f"{path} is not valid JSON ({e}); fix the file") from None
        if not isinstance(data, list):
            raise LeantuneError(f"{path} must hold a JSON list of objects")
        return _objects(data, path)
    if suffix in (".csv", ".tsv"):
        with _open(path) as f:
            try:
                return list(csv.DictReader(f, delimiter="," if suffix == ".csv" else "\t"))
            except csv.Error as e:
                raise LeantuneError(f"{path} is not a valid {suffix[1:].upper()} file ({e})") from None
    raise LeantuneError(f"{path}: unknown data format '{suffix}'; use .jsonl, .json, .csv or .tsv")

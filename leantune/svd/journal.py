"""``candidates.jsonl``: one line per finished candidate, appended and fsync'ed before the next starts.

A rerun with the same arguments reads the journal and skips what is there; a run killed mid-line
leaves at most one torn last line, which is ignored (that candidate is simply redone) and cut off
before the next append, so the next record starts on a line of its own instead of being glued to it.
Under several processes each rank appends to its own ``candidates.rankN.jsonl``; readers merge all.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import LeantuneError


class Journal:
    def __init__(self, out_dir: Path, rank: int = 0, world: int = 1):
        self.dir = Path(out_dir)
        self.path = self.dir / ("candidates.jsonl" if world == 1 else f"candidates.rank{rank}.jsonl")
        self._tail_checked = False

    def read_all(self) -> dict[str, dict]:
        done = {}
        for p in sorted(self.dir.glob("candidates*.jsonl")):
            for n, line in enumerate(p.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line torn by a kill: redo that candidate
                if not isinstance(rec, dict) or "key" not in rec:
                    raise LeantuneError(f"{p}:{n} is not a candidate record; the journal was edited by hand? "
                                        "Remove that line (its candidate is redone) or use a new --out")
                done[rec["key"]] = rec
        return done

    def cut_torn_tail(self) -> None:
        """Drop a last line without its newline (a write killed half-way), keeping every whole line."""
        if not self.path.is_file():
            return
        with open(self.path, "rb+") as f:
            data = f.read()
            if data and not data.endswith(b"\n"):
                f.truncate(data.rfind(b"\n") + 1)  # 0 when the only line is torn
                f.flush()
                os.fsync(f.fileno())

    def append(self, rec: dict) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if not self._tail_checked:  # only the file this process appends to; once, before its first record
            self.cut_torn_tail()
            self._tail_checked = True
        with open(self.path, "a") as f:
            f.write(json.dumps(rec) + "\n")
            f.flush()
            os.fsync(f.fileno())


class MemoryJournal:
    """The journal of a search without an output folder: kept in memory only (nothing to resume)."""

    def __init__(self):
        self.records: dict[str, dict] = {}

    def read_all(self) -> dict[str, dict]:
        return dict(self.records)

    def append(self, rec: dict) -> None:
        self.records[rec["key"]] = rec

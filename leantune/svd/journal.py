"""``candidates.jsonl``: one line per finished candidate, appended and fsync'ed before the next starts.

A rerun with the same arguments reads the journal and skips what is there; a run killed mid-line
leaves at most one torn last line, which is ignored (that candidate is simply redone).
Under several processes each rank appends to its own ``candidates.rankN.jsonl``; readers merge all.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


class Journal:
    def __init__(self, out_dir: Path, rank: int = 0, world: int = 1):
        self.dir = Path(out_dir)
        self.path = self.dir / ("candidates.jsonl" if world == 1 else f"candidates.rank{rank}.jsonl")

    def read_all(self) -> dict[str, dict]:
        done = {}
        for p in sorted(self.dir.glob("candidates*.jsonl")):
            for line in p.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line torn by a kill: redo that candidate
                done[rec["key"]] = rec
        return done

    def append(self, rec: dict) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(rec) + "\n")
            f.flush()
            os.fsync(f.fileno())

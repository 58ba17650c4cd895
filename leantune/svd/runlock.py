"""One search per output folder at a time: an ``fcntl.flock`` on ``OUT/search.lock``.

Without it, two searches on the same ``--out`` both compute every candidate and both write
``summary.json``. The kernel drops the lock when its holder exits, even on SIGKILL, so a crashed run
never leaves a stale lock; the file only records the holder's pid for the message.
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path

from ..errors import LeantuneError


def lock_path(out_dir: Path, rank: int = 0, world: int = 1) -> Path:
    # each rank of a multi-process run locks its own file, so a second run is refused on every rank
    return Path(out_dir) / ("search.lock" if world == 1 else f"search.rank{rank}.lock")


@contextmanager
def search_lock(out_dir: Path, rank: int = 0, world: int = 1, wait: bool = False):
    path = lock_path(out_dir, rank, world)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            raise LeantuneError(f"another search (pid {holder}) is running in {out_dir}; wait for it to finish, "
                                "pass --wait-lock to wait, or use another --out") from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)

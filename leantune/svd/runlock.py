"""One search per output folder at a time: an ``fcntl.flock`` on the ``--out`` folder itself.

Without it, two searches on the same ``--out`` both compute every candidate and both write
``summary.json``. The kernel drops the lock when its holder exits, even on SIGKILL, so a crashed run
never leaves a stale lock. The holder writes its pid to ``.leantune-search.pid`` for the refusal message and
removes it when done, so the file exists only while a search runs (a SIGKILLed one leaves it, harmless:
the next holder overwrites it).

Under several processes only rank 0 takes the lock: if it is refused, it exits, and torchrun stops the
other ranks of that run. The lock is taken before the model loads, so a refusal costs a second.
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path

from ..errors import LeantuneError
from ..outputs import OWN_PREFIX

PID_FILE = OWN_PREFIX + "search.pid"  # leantune's bookkeeping: never taken for a user's file


def _holder(out_dir: Path) -> str:
    try:
        return (out_dir / PID_FILE).read_text().strip() or "unknown"
    except OSError:
        return "unknown"


@contextmanager
def search_lock(out_dir: Path, rank: int = 0, wait: bool = False):
    out_dir = Path(out_dir)
    if rank != 0:
        yield
        return
    made = not out_dir.exists()
    while True:
        out_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(out_dir, os.O_RDONLY)  # a folder can be flock'ed like a file: no lock file to leave behind
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            raise LeantuneError(f"another search (pid {_holder(out_dir)}) is running in {out_dir}; wait for it to "
                                "finish, pass --wait-lock to wait, or use another --out") from None
        if os.fstat(fd).st_nlink > 0:
            break
        os.close(fd)  # the holder we waited for failed early and removed the empty folder it made: make it again
    try:
        pid_file = out_dir / PID_FILE
        pid_file.write_text(f"{os.getpid()}\n")
        try:
            yield
        finally:
            pid_file.unlink(missing_ok=True)
    finally:
        os.close(fd)  # releases the lock
        if made and not any(out_dir.iterdir()):  # a search refused before writing leaves no empty folder
            out_dir.rmdir()

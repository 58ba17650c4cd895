"""Output locations, checked before any work starts: a bad --out costs a second, not an hour of training.

A folder output must be an existing writable folder or creatable; a file output must not be a folder and
its folder must be writable or creatable. The probe creates only what is missing and removes exactly
that again, so a refused command leaves the disk as it found it.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
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


# --- the output-folder policy: never write over what is not ours -----------------------------------------------
#
# Every folder a command writes holds MANIFEST, listing (relative to that folder) every file the run wrote. A
# folder is "ours" when each file in it is listed by a manifest of its own folder or of a folder above it (a
# demo folder holds a finetune run's folder with its own manifest). Only such a folder is written into; a rerun
# removes exactly the files its own command's previous manifest lists, and its manifest replaces that one, so
# stale artifacts (an old peft_adapter/) go. ``--overwrite`` allows a folder that holds other files: same-named
# files are replaced, the others are kept. The input model, adapter or data is never the output, inside it, or
# inside the output, with or without --overwrite.

OWN_PREFIX = ".leantune-"  # leantune's bookkeeping files (the manifest, a search's pid file): never a user's
MANIFEST = OWN_PREFIX + "output.json"
MANIFEST_FORMAT = "leantune-output/1"
STAGE_MARK = ".leantune-partial-"  # a result being written: "<parent>/.<name>.leantune-partial-<pid>"
DISK_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT}
OVERWRITE_HELP = ("write into a folder that holds files leantune did not write (same-named files are replaced, "
                  "the others kept); never the input model's folder")


def read_manifest(folder: Path) -> dict | None:
    """The manifest of ``folder``, or None (none, or not one of ours: unreadable, another format)."""
    try:
        data = json.loads((Path(folder) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT or not isinstance(data.get("files"), list) \
            or not all(isinstance(f, str) for f in data["files"]):
        return None
    return data


def foreign_files(out: Path, limit: int = 5) -> list[str]:
    """Up to ``limit`` files under ``out`` (relative paths) that no manifest in or above their folder lists."""
    found: list[str] = []
    ours: set[str] = set()
    for here, dirs, files in os.walk(out):  # top-down: a folder's manifest is read before its children
        rel_here = os.path.relpath(here, out)
        base = "" if rel_here == "." else rel_here + "/"
        m = read_manifest(Path(here))
        if m is not None:
            ours.update(base + f for f in m["files"])
            ours.add(base + MANIFEST)
        dirs[:] = sorted(d for d in dirs if STAGE_MARK not in d)  # our own half-written results are not the user's
        links = [d for d in dirs if os.path.islink(os.path.join(here, d))]  # never followed: an entry like a file
        for name in sorted(files) + links:
            if base + name not in ours and not name.startswith(OWN_PREFIX):
                found.append(base + name)
                if len(found) >= limit:
                    return found
    return found


def _local(path) -> Path | None:
    """A local input path (that exists), resolved; None for hub ids, aliases and unset options."""
    if path is None or not isinstance(path, (str, os.PathLike)) or not str(path):
        return None
    p = Path(path).expanduser()
    return p.resolve() if p.exists() else None


def check_not_input(name: str, out: Path, inputs: dict) -> None:
    """``out`` may not be an input, lie inside one, or contain one (a rerun or --overwrite would destroy it)."""
    o = Path(out).expanduser().resolve()
    for what, path in inputs.items():
        p = _local(path)
        if p is None:
            continue
        if o == p or p in o.parents:
            relation = "is" if o == p else "is inside"
            raise LeantuneError(f"{name} {out} {relation} the {what} {path}; write the result to a new folder "
                                "(the input is never overwritten)")
        if o in p.parents:
            raise LeantuneError(f"{name} {out} contains the {what} {path}; write the result to a new folder "
                                "beside it (the input is never overwritten)")


def check_out_folder(name: str, out, command: str, overwrite: bool = False, inputs: dict | None = None) -> None:
    """The policy, before any work: refuse an input as output, and a folder holding files we did not write."""
    out = Path(out).expanduser()
    check_not_input(name, out, inputs or {})
    if out.exists() and not out.is_dir():
        raise LeantuneError(f"{name} {out} is an existing file; give a folder path (the command writes "
                            "several files into it)")
    if overwrite or not out.is_dir():
        return
    foreign = foreign_files(out)
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise LeantuneError(f"{name} {out} holds files leantune did not write ({shown}); give a new or empty "
                            f"folder, or pass --overwrite to write beside them (nothing was changed)")
    m = read_manifest(out)
    if m is not None and m.get("command") not in (None, command):
        raise LeantuneError(f"{name} {out} holds the output of `leantune {m['command']}`; give a new folder for "
                            f"`leantune {command}` (nothing was changed)")


def disk_error(e: OSError, where: str) -> LeantuneError:
    """One line for a full, read-only or forbidden location: the path, the reason, what to do."""
    path = e.filename or where
    return LeantuneError(f"cannot write {path}: {e.strerror or os.strerror(e.errno)}; free space or choose a "
                         f"writable location ({where} was left as it was)")


def write_manifest(folder: Path, command: str, files) -> None:
    data = {"format": MANIFEST_FORMAT, "command": command, "files": sorted(set(files))}
    tmp = folder / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, folder / MANIFEST)


def remove_listed(folder: Path, command: str) -> None:
    """Remove the files the folder's previous manifest of ``command`` lists (and folders left empty by that)."""
    m = read_manifest(folder)
    if m is None or m.get("command") not in (None, command):
        return
    for rel in m["files"]:
        f = folder / rel
        if f.is_file() or f.is_symlink():
            f.unlink()
        for parent in f.parents:  # the run's subfolders, deepest first; a folder still holding files stays
            if parent == folder or folder not in parent.parents or not _prune(parent):
                break
    (folder / MANIFEST).unlink(missing_ok=True)


def _prune(d: Path) -> bool:
    """Remove folder ``d`` if nothing but leantune's bookkeeping (a nested run's manifest) is left in it."""
    try:
        left = list(d.iterdir())
        if any(not (p.name.startswith(OWN_PREFIX) and p.is_file()) for p in left):
            return False
        for p in left:
            p.unlink()
        d.rmdir()
        return True
    except OSError:
        return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_stages(parent: Path) -> None:
    """Half-written results of runs that were killed (SIGKILL skips every cleanup): their pid is gone."""
    try:
        entries = list(parent.iterdir())
    except OSError:
        return
    for entry in entries:
        if STAGE_MARK in entry.name and entry.is_dir():
            pid = entry.name.rsplit("-", 1)[-1]
            if pid.isdigit() and not _pid_alive(int(pid)):
                shutil.rmtree(entry, ignore_errors=True)


def files_under(folder: Path) -> list[str]:
    """Every file under ``folder`` (relative paths), leantune's bookkeeping files left out."""
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*")
                  if (p.is_file() or p.is_symlink()) and not p.name.startswith(OWN_PREFIX))


class OutputFolder:
    """Write one command's result atomically into ``out`` under the output-folder policy.

    The policy is checked when the object is made (before the work). ``with folder as stage:`` gives a
    temporary sibling folder to write into; on success a new ``out`` is that folder renamed (one rename: the
    folder holds a complete result or none), an existing ``out`` loses the files of its previous run and
    receives the new ones, then the manifest. On any exception the temporary folder is removed, and a full,
    read-only or forbidden disk becomes one line naming the path.
    """

    def __init__(self, out, command: str, name: str = "--out", overwrite: bool = False, inputs: dict | None = None):
        # absolute without resolving links: "." gets a real name, so its temporary sibling has one too
        self.out = Path(os.path.abspath(Path(out).expanduser()))
        self.command, self.name, self.overwrite = command, name, overwrite
        check_out_folder(name, self.out, command, overwrite, inputs)
        self.stage: Path | None = None

    def __enter__(self) -> Path:
        parent = self.out.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
            remove_stale_stages(parent)
            self.stage = parent / f".{self.out.name}{STAGE_MARK}{os.getpid()}"
            if self.stage.exists():
                shutil.rmtree(self.stage)
            self.stage.mkdir()
            with open(self.stage / ".probe", "wb") as f:  # a location we cannot write fails now, not after the work
                f.write(b"\0" * 4096)
                f.flush()
                os.fsync(f.fileno())
            (self.stage / ".probe").unlink()
        except OSError as e:
            self._discard()
            raise disk_error(e, f"{self.name} {self.out}") from None
        return self.stage

    def _discard(self) -> None:
        if self.stage is not None and self.stage.exists():
            shutil.rmtree(self.stage, ignore_errors=True)

    def __exit__(self, typ, exc, tb):
        if typ is None:
            try:
                self._commit()
            except OSError as e:
                raise disk_error(e, f"{self.name} {self.out}") from None
            finally:
                self._discard()
            return False
        self._discard()
        if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
            raise disk_error(exc, f"{self.name} {self.out}") from None
        return False

    def _commit(self) -> None:
        stage, out = self.stage, self.out
        files = files_under(stage)
        if not out.exists():
            write_manifest(stage, self.command, files)
            os.rename(stage, out)  # the whole result appears at once
            return
        # an existing folder (perhaps the current directory, perhaps holding a user's files with --overwrite):
        # the previous run's files go, then each new file is renamed into place, the manifest last
        remove_listed(out, self.command)
        for rel in files:
            dest = out / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            if dest.is_dir() and not dest.is_symlink():
                raise LeantuneError(f"{self.name} {out}: {rel} is a folder there; remove it or choose another folder")
            os.replace(stage / rel, dest)
        write_manifest(out, self.command, files)


def claim(out: Path, command: str, files) -> None:
    """Add ``files`` to the manifest of ``out`` (made if missing): for a folder written in place over a long
    run (a search's journal), listed before they are written, so a killed run's folder is still ours."""
    m = read_manifest(out)
    had = m["files"] if m is not None and m.get("command") in (None, command) else []
    out.mkdir(parents=True, exist_ok=True)
    write_manifest(out, command, [*had, *files])


@contextmanager
def disk_errors(where: str):
    """A full, read-only or forbidden disk while writing ``where`` (e.g. a search's journal): one line."""
    try:
        yield
    except OSError as e:
        if e.errno in DISK_ERRNOS:
            raise disk_error(e, where) from None
        raise

"""Field checks for the files leantune reads (adapter manifests, edit files, task files).

A file that is missing a key or holds the wrong type becomes one line naming the file, the field and
what was expected, instead of a ``KeyError`` or ``AttributeError`` wherever the value is first used.
"""

from __future__ import annotations

from pathlib import Path

from .errors import LeantuneError

INT = "an integer"
NUMBER = "a number"
TEXT = "a string"
MAPPING = "a mapping"
LIST = "a list"
BOOL = "true or false"
TEXT_LIST = "a list of strings"


def is_kind(v, kind: str) -> bool:
    if kind == INT:
        return isinstance(v, int) and not isinstance(v, bool)
    if kind == NUMBER:
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if kind == TEXT:
        return isinstance(v, str)
    if kind == MAPPING:
        return isinstance(v, dict)
    if kind == LIST:
        return isinstance(v, list)
    if kind == BOOL:
        return isinstance(v, bool)
    if kind == TEXT_LIST:
        return isinstance(v, list) and all(isinstance(x, str) for x in v)
    raise ValueError(kind)


def check_fields(data, where: str, required: dict[str, str], optional: dict[str, str] | None = None) -> None:
    """``data`` must be a mapping with every ``required`` field; present fields must be of their kind.

    ``optional`` fields may be absent or null. ``where`` names the file (and entry) for the message.
    """
    if not isinstance(data, dict):
        raise LeantuneError(f"{where} must be {MAPPING}, got {type(data).__name__}")
    for name, kind in required.items():
        if name not in data:
            raise LeantuneError(f"{where} is missing the field '{name}' ({kind})")
    for name, kind in {**required, **(optional or {})}.items():
        v = data.get(name)
        if v is None and name in (optional or {}):
            continue
        if not is_kind(v, kind):
            raise LeantuneError(f"{where}: field '{name}' must be {kind}, got {v!r}")


def read_utf8(path, what: str = "file", bom: bool = False) -> str:
    """The text of ``path``; a file in another encoding is one line with the byte offset of the first bad byte.

    ``bom``: drop a leading UTF-8 byte-order mark (spreadsheet exports, the MRPC header).
    """
    raw = Path(path).read_bytes()
    skip = 3 if bom and raw.startswith(b"\xef\xbb\xbf") else 0
    try:
        return raw[skip:].decode("utf-8")
    except UnicodeDecodeError as e:
        at = skip + e.start
        raise LeantuneError(f"{what} {path} is not UTF-8 text: byte 0x{raw[at]:02x} at offset {at} cannot be "
                            "decoded; save the file as UTF-8") from None

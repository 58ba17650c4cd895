"""One definition of every command option: a field of the command's config dataclass.

A field made with :func:`option` carries its flag's help, choices and spelling. The CLI generates each
subcommand's flags from the dataclass (:func:`add_flags`), ``--config FILE`` accepts exactly the field
names (dashes or underscores), and the recipe receives the dataclass (:func:`config_from_args`). So a new
option is one line in one dataclass: its flag, its config-file key, its default and its place in
``run.json`` cannot drift apart.

The defaults live on the dataclass and are also the parser's defaults, so ``leantune X --help`` and a
library call ``Config()`` agree. This module is in the base layer: engines may define configs with it.
"""

from __future__ import annotations

import argparse
import types
import typing
from dataclasses import MISSING, Field, field, fields

from .errors import LeantuneError
from .outputs import flag  # "--" + name with dashes: the one spelling of a flag in every message


def option(default=None, help: str = "", *, choices=None, metavar: str | None = None, required: bool = False,
           positional: bool = False, off_flag: str | None = None, factory=None, cli: bool = True,
           recorded: bool = True) -> Field:
    """A config field with what its command-line flag needs.

    ``required``: must come from the command line or ``--config`` (checked after both are merged, with one
    line naming the flag). ``positional``: given without a flag (``leantune inspect MODEL``). ``off_flag``:
    a boolean that defaults to True is switched off by this flag (``--no-peft-export``). ``cli=False``: a
    library-only field. ``recorded=False``: not part of a run's identity in ``run.json`` (``--dry-run``).
    """
    meta = {"help": help, "choices": choices, "metavar": metavar, "required": required, "positional": positional,
            "off_flag": off_flag, "cli": cli, "recorded": recorded}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def _default(f: Field):
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def _scalar_type(t):
    """int / float / str / bool of an annotation, ``X | None`` unwrapped; lists are given as comma-separated text."""
    args = [a for a in typing.get_args(t) if a is not type(None)]
    if typing.get_origin(t) in (typing.Union, types.UnionType) and args:
        t = args[0]
    if typing.get_origin(t) in (list, tuple) or t in (list, tuple):
        return str
    return t if t in (int, float, str, bool) else str


def help_with_default(text: str, default, kind=None, off_flag: str | None = None) -> str:
    """The flag's help with its default appended, unless the text already states it or there is none to state
    (``None``, off, empty). One rule here shows every command's defaults in ``--help``."""
    if off_flag:  # a boolean that is on unless its off-flag is given
        return text if "default" in text.lower() else f"{text} (on unless {off_flag} is given)".strip()
    if default is None or default is False or default == "" or default == [] or "default" in text.lower():
        return text
    shown = ",".join(str(x) for x in default) if isinstance(default, (list, tuple)) else str(default)
    return f"{text} (default: {shown.replace('%', '%%')})".strip()


def cli_fields(cls: type) -> list[Field]:
    return [f for f in fields(cls) if f.metadata.get("cli", True)]


def add_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    """One flag per field of ``cls`` (in field order), with the dataclass defaults as the parser's."""
    hints = typing.get_type_hints(cls)  # once per class: resolving annotations is the costly part
    for f in cli_fields(cls):
        meta, default = f.metadata, _default(f)
        kind = _scalar_type(hints[f.name])
        common = {"help": help_with_default(meta.get("help", ""), default, kind, meta.get("off_flag"))}
        if meta.get("positional"):
            parser.add_argument(f.name, nargs="?", default=default, metavar=meta.get("metavar") or f.name.upper(),
                                **common)
        elif kind is bool and meta.get("off_flag"):
            parser.add_argument(meta["off_flag"], dest=f.name, action="store_false", default=default, **common)
        elif kind is bool:
            parser.add_argument(flag(f.name), action="store_true", default=default, **common)
        else:
            parser.add_argument(flag(f.name), type=kind, default=default, choices=meta.get("choices"),
                                metavar=meta.get("metavar"), **common)


def check_required(cfg) -> None:
    """Required fields must be set (from the command line, ``--config`` or the library call)."""
    missing = [f for f in fields(cfg) if f.metadata.get("required") and getattr(cfg, f.name) in (None, "")]
    if missing:
        names = [f.metadata.get("metavar") or f.name.upper() if f.metadata.get("positional") else flag(f.name)
                 for f in missing]
        raise LeantuneError(f"missing {', '.join(names)} (give it on the command line or in --config)")


def config_from_args(cls: type, args: argparse.Namespace):
    """The config of one parsed command (``--config`` already merged by the CLI); required fields checked."""
    cfg = cls(**{f.name: getattr(args, f.name) for f in cli_fields(cls) if hasattr(args, f.name)})
    check_required(cfg)
    return cfg.check() if hasattr(cfg, "check") else cfg


def recorded(cfg) -> dict:
    """The fields that identify a run (``run.json``), in field order."""
    return {f.name: getattr(cfg, f.name) for f in fields(cfg) if f.metadata.get("recorded", True)}


def build(cls: type, config=None, **overrides):
    """``config`` (an instance, or None for the defaults) with ``overrides`` applied: the library's entry
    (required fields checked as on the command line)."""
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise TypeError(f"{cls.__name__} has no option(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    from dataclasses import replace

    from .validate import check_call, check_types

    check_types(cls, overrides)  # the same type and range checks as the command line and --config
    check_call(cls.__name__, **overrides)
    cfg = cls(**overrides) if config is None else replace(config, **overrides)
    check_required(cfg)
    return cfg

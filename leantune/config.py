"""``--config FILE`` for every command: a YAML or JSON mapping with the same keys as the flags.

Keys use the flag names with ``-`` or ``_`` (``v-lr-ratio`` or ``v_lr_ratio``). Flags given on the
command line win over the file. Unknown keys are an error, so a typo never silently does nothing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .errors import LeantuneError


def read_config_file(path: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise LeantuneError(f"config file {path} does not exist")
    from .schema import read_utf8
    import yaml

    text = read_utf8(p, "file")
    try:
        if p.suffix.lower() in (".yaml", ".yml"):
            data = yaml.safe_load(text)  # safe_load: a config file never constructs Python objects
        else:
            data = json.loads(text)
    except (yaml.YAMLError, json.JSONDecodeError) as e:  # syntax errors: one line naming the file
        first = str(e).strip().splitlines()[0]
        raise LeantuneError(f"config file {path} cannot be parsed: {first}") from None
    if data is None:  # an empty file
        return {}
    if not isinstance(data, dict):
        raise LeantuneError(f"config file {path} must hold a mapping of option names to values")
    return data


def apply_config(parser: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str]) -> argparse.Namespace:
    """Re-parse ``argv`` with the config file's values as defaults (the command line still wins)."""
    if not getattr(args, "config", None):
        return args
    data = read_config_file(args.config)
    known = {a.dest: a for a in parser._actions}
    defaults = {}
    for key, value in data.items():
        dest = key.replace("-", "_")
        if dest not in known or dest in ("help", "config"):
            raise LeantuneError(f"config file {args.config}: unknown option '{key}'")
        defaults[dest] = value
    parser.set_defaults(**defaults)
    return parser.parse_args(argv)


def require(args: argparse.Namespace, *names: str) -> None:
    """Options that must come from the command line or the config file."""
    missing = [n for n in names if getattr(args, n, None) in (None, "")]
    if missing:
        flags = ", ".join("--" + n.replace("_", "-") for n in missing)
        raise LeantuneError(f"missing {flags} (give it on the command line or in --config)")

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


def config_values(path: str, known) -> dict:
    """The file's mapping with keys as option names (dashes -> underscores); an unknown key is an error."""
    known = set(known)
    out = {}
    for key, value in read_config_file(str(path)).items():
        name = str(key).replace("-", "_")
        if name not in known:
            raise LeantuneError(f"config file {path}: unknown option '{key}'; known: {', '.join(sorted(known))}")
        out[name] = value
    return out


def apply_config(parser: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str]) -> argparse.Namespace:
    """Re-parse ``argv`` with the config file's values as defaults (the command line still wins)."""
    if not getattr(args, "config", None):
        return args
    known = {a.dest for a in parser._actions} - {"help", "config"}
    parser.set_defaults(**config_values(args.config, known))
    # the subcommand's parser does not know which words chose it; keep them (command-specific checks need them)
    words = {k: v for k, v in vars(args).items() if k in ("command", "icl_command", "lab_command")}
    return parser.parse_args(argv, namespace=argparse.Namespace(**words))

"""Command line: parses arguments, calls the library, prints. Errors the user can fix -> one line, exit 2."""

from __future__ import annotations

import argparse
import os
import sys

from .errors import LeantuneError


def _cmd_inspect(args) -> int:
    from .inspect_model import inspect, render

    result = inspect(args.model, spectrum=args.spectrum, json_path=args.json, plot_path=args.plot,
                     svd_dtype=args.svd_dtype, trust_remote_code=args.trust_remote_code,
                     progress=not args.quiet, dtype=args.dtype, device=args.device, device_map=args.device_map,
                     max_memory=args.max_memory)
    print(render(result))
    if args.json:
        print(f"json: {args.json}")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse's usage errors become the one-line ``leantune: error:`` of every other user error."""

    def error(self, message):
        words = " ".join(self.prog.split()[1:])  # "icl search"; empty for the top-level parser
        raise LeantuneError(f"{words + ': ' if words else ''}{message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="leantune", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    ins = sub.add_parser("inspect", help="show where W_q/W_k/W_v/W_o and the MLP matrices live; optional spectrum",
                         description="Print the architecture map of MODEL (hub id, local directory or alias "
                                     "'minilm'); with --spectrum also singular-value statistics per matrix.")
    ins.add_argument("model")
    ins.add_argument("--spectrum", action="store_true", help="per (layer, matrix): sigma max/min, condition number, "
                                                             "effective rank")
    ins.add_argument("--json", metavar="PATH", help="write the map (and spectrum) as JSON")
    ins.add_argument("--plot", metavar="PATH", help="write a PNG of condition number by layer, attention vs MLP")
    ins.add_argument("--svd-dtype", choices=["float32", "float64"], default="float32")
    from .precision import add_placement_flags

    add_placement_flags(ins)  # --dtype, --device, --device-map, --max-memory
    ins.add_argument("--trust-remote-code", action="store_true", help="allow the model repo's own Python code")
    ins.add_argument("--quiet", action="store_true", help="no progress bar")
    ins.set_defaults(func=_cmd_inspect)

    # Each feature room registers its own subcommands (arguments + a function that calls the library).
    for register in _feature_commands():
        register(sub)
    return p


def _feature_commands():
    """Subcommand registrars of the feature rooms; each is ``register(subparsers)``."""
    import importlib

    registrars = []
    for mod in ("leantune.model_commands", "leantune.finetune.commands", "leantune.icl.commands", "leantune.lab.commands"):
        try:
            registrars.append(importlib.import_module(mod).register)
        except ModuleNotFoundError as e:
            if not mod.startswith(str(e.name)):  # the room exists but a dependency is missing: say so
                raise
    return registrars


def _sub_argv(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """The part of argv that belongs to ``parser`` (after its subcommand words)."""
    words = parser.prog.split()[1:]  # e.g. "leantune icl eval" -> ["icl", "eval"]
    rest = list(argv)
    for w in words:
        rest = rest[rest.index(w) + 1:]
    return rest


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = build_parser().parse_args(argv)
        if getattr(args, "config", None):
            from .config import apply_config

            args = apply_config(args.parser, args, _sub_argv(args.parser, argv))
        from .validate import check_args

        check_args(args)  # options and output locations, after --config is merged, before any work
        return args.func(args)
    except LeantuneError as e:
        print(f"leantune: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("leantune: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

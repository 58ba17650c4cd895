"""Command line: generated from the recipes' config dataclasses; parses, runs one recipe, prints.

Errors the user can fix -> one line, exit 2. Every subcommand takes ``--config FILE`` (YAML/JSON with the
same keys as its flags; the command line wins) and ``--quiet``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from .errors import LeantuneError

GROUPS = {  # subcommands with subcommands of their own: their help and the dest of the chosen word
    "icl": ("in-context learning: evaluate, search SVD edits, apply them", "icl_command"),
    "lab": ("the theory lab: a small ICL-capable model trained here", "lab_command"),
}


class _Parser(argparse.ArgumentParser):
    """argparse's usage errors become the one-line ``leantune: error:`` of every other user error."""

    def error(self, message):
        words = " ".join(self.prog.split()[1:])  # "icl search"; empty for the top-level parser
        raise LeantuneError(f"{words + ': ' if words else ''}{message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    from dataclasses import fields

    from .options import add_flags
    from .recipes import all_commands

    p = _Parser(prog="leantune", description="Train less (only W_q/W_v, lr_V = lambda * lr_Q) and keep less (SVD "
                "edits for in-context learning). Every subcommand takes --config FILE (YAML/JSON with the same keys "
                "as its flags; the command line wins) and --quiet.")
    sub = p.add_subparsers(dest="command", required=True)
    groups = {}
    for words, recipe in all_commands().items():
        parent = sub
        if len(words) == 2:
            if words[0] not in groups:
                help_, dest = GROUPS[words[0]]
                groups[words[0]] = sub.add_parser(words[0], help=help_).add_subparsers(dest=dest, required=True)
            parent = groups[words[0]]
        sp = parent.add_parser(words[-1], help=recipe.help, description=recipe.description or recipe.help)
        sp.add_argument("--config", metavar="FILE", help="YAML/JSON with the same keys as these flags; flags win")
        add_flags(sp, recipe.config)
        if "quiet" not in {f.name for f in fields(recipe.config)}:
            sp.add_argument("--quiet", action="store_true", help="no progress bars")
        sp.set_defaults(recipe=recipe, parser=sp)
    return p


def _sub_argv(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """The part of argv that belongs to ``parser`` (after its subcommand words)."""
    words = parser.prog.split()[1:]  # e.g. "leantune icl eval" -> ["icl", "eval"]
    rest = list(argv)
    for w in words:
        rest = rest[rest.index(w) + 1:]
    return rest


def _quiet_libraries() -> None:
    """--quiet also silences the bars transformers and huggingface_hub draw on every load, save and download."""
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    disable_progress_bars()


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler, ``kill``, torchrun stopping its workers): unwinds like Ctrl-C, so every ``finally``
    and ``with`` runs and no temporary or half-written folder is left."""


def _on_sigterm(signum, frame):
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    argv = sys.argv[1:] if argv is None else argv
    main_thread = threading.current_thread() is threading.main_thread()  # signals can be set only there
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if main_thread else None
    try:
        return _main(argv)
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


def _main(argv: list[str]) -> int:
    from .outputs import DISK_ERRNOS

    try:
        args = build_parser().parse_args(argv)
        if args.config:
            from .config import apply_config

            args = apply_config(args.parser, args, _sub_argv(args.parser, argv))
        from .options import config_from_args
        from .validate import check_args

        check_args(args)  # options and output locations, after --config is merged, before any work
        recipe = args.recipe
        cfg = config_from_args(recipe.config, args)
        if args.quiet:
            _quiet_libraries()
        text = recipe.report(recipe.run(cfg, not args.quiet), cfg)
        if text:
            print(text)
        return 0
    except LeantuneError as e:
        print(f"leantune: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno not in DISK_ERRNOS:  # anything else is a bug or an unknown fault: keep its traceback
            raise
        # a full, read-only or forbidden disk anywhere (an output, $LEANTUNE_CACHE, the temp folder)
        where = e.filename or "a file"
        print(f"leantune: error: {where}: {e.strerror or os.strerror(e.errno)}; free space, fix its permissions "
              "or choose another location", file=sys.stderr)
        return 2
    except Terminated:
        print("leantune: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print("leantune: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

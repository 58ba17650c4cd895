"""Recipes: the end-to-end flows behind the commands, apart from the engines they call.

Each recipe module holds one config dataclass per command (every field is a flag and a ``--config`` key,
see :mod:`leantune.options`), the function that runs it (also the library entry, e.g. :func:`icl_search`)
and the text the CLI prints, registered in its ``COMMANDS``. A new command is one module listed below.
Recipes may combine engines (``icl eval --edit`` applies an svd edit); engines never import recipes.
"""

from __future__ import annotations

import importlib

MODULES = ("inspect", "models_list", "finetune", "icl_eval", "icl_search", "icl_apply", "lab", "demo", "report")


def all_commands() -> dict:
    """(command words) -> Recipe, in the order ``leantune --help`` lists them."""
    out = {}
    for name in MODULES:
        out.update(importlib.import_module(f"{__name__}.{name}").COMMANDS)
    return out

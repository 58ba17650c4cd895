"""Recipe of ``leantune models``: the offline aliases, whether each is installed here, its size and licence."""

from __future__ import annotations

import json
from dataclasses import dataclass

from .common import Recipe
from ..options import option


@dataclass
class ModelsConfig:
    json: bool = option(False, "print the list as JSON")


CONFIG = ModelsConfig


def run(cfg: ModelsConfig, progress: bool) -> list[dict]:
    from ..aliases import listing

    return listing()


def report(rows: list[dict], cfg: ModelsConfig) -> str:
    from ..report import format_table

    if cfg.json:
        return json.dumps(rows, indent=2)
    lines = [format_table(["alias", "installed", "size MB", "licence", "what"],
                          [[r["alias"], r["installed"], r["size_mb"], r["licence"], r["what"]] for r in rows])]
    for r in rows:
        if not r["installed"]:
            lines.append(f"\n{r['alias']}: not installed; {r['install']}"
                         + (f" (or online: {r['hub_id']})" if r["hub_id"] else ""))
    lines.append("\nAny command also takes a hub id, a save_pretrained folder, or a .gguf file (converted once, "
                 "cached in $LEANTUNE_CACHE, default ~/.cache/leantune).")
    return "\n".join(lines)


COMMANDS = {("models",): Recipe(ModelsConfig, run, report,
                                help="list the offline model aliases (installed or not, size, licence)")}

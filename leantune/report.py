"""Tables and plots shared by the commands."""

from __future__ import annotations

from pathlib import Path

from .arch import ATTN, MLP


def plot_condition_numbers(rows: list[dict], path: str | Path, title: str = "") -> Path:
    """Condition number by layer, attention matrices vs MLP matrices (the SVD paper's Figure 3)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for ax, group, label in ((axes[0], ATTN, "attention"), (axes[1], MLP, "MLP")):
        for name in group:
            pts = [(r["layer"], r["condition_number"]) for r in rows if r["matrix"] == name
                   and r["condition_number"] is not None]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, marker="o", label=name)
        ax.set_yscale("log")
        ax.set_xlabel("layer")
        ax.set_title(f"{label} matrices")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("condition number (log)")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)


def save_figure(fig, path, dpi: int = 110, **kwargs) -> Path:
    """Write a matplotlib figure (creating its folder) and free it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, **kwargs)
    plt.close(fig)
    return path


def format_table(headers: list[str], rows: list[list]) -> str:
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(c) -> str:
    if c is None:
        return "-"
    if isinstance(c, float):
        return f"{c:.4g}"
    if isinstance(c, bool):
        return "yes" if c else "no"
    return str(c)


def plot_search_heatmap(records: list[dict], modules: list[str], rates: list[float], path, title: str = "",
                        baseline: float | None = None) -> Path:
    """Validation accuracy by layer (rows) and clipping rate (columns), one panel per module."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cells = {}
    for r in records:
        if len(r["edits"]) == 1:
            e = r["edits"][0]
            cells[(e["module"], e["layer"], e["rate"])] = r["val_accuracy"]
    layers = sorted({k[1] for k in cells}) or [0]
    fig, axes = plt.subplots(1, len(modules), figsize=(4.2 * len(modules), 0.45 * len(layers) + 2.2), squeeze=False)
    for ax, module in zip(axes[0], modules):
        grid = np.full((len(layers), len(rates)), np.nan)
        for i, layer in enumerate(layers):
            for j, rate in enumerate(rates):
                if rate == 0 and baseline is not None:
                    grid[i, j] = baseline
                else:
                    grid[i, j] = cells.get((module, layer, rate), np.nan)
        im = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=0, vmax=1)
        for i in range(len(layers)):
            for j in range(len(rates)):
                if not np.isnan(grid[i, j]):
                    ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=7, color="w")
        ax.set_xticks(range(len(rates)), [f"{r:g}" for r in rates], rotation=45)
        ax.set_yticks(range(len(layers)), layers)
        ax.set_xlabel("clipping rate xi")
        ax.set_ylabel("layer")
        ax.set_title(module)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="validation accuracy")
    if title:
        fig.suptitle(title)
    return save_figure(fig, path, dpi=110, bbox_inches="tight")

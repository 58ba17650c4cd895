"""Training curves: train loss and the eval metric by step, one PNG."""

from __future__ import annotations

from pathlib import Path


def plot_curves(history: dict, path: str | Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_eval) = plt.subplots(1, 2, figsize=(10, 3.6))
    if history["train"]:
        ax_loss.plot([h["step"] for h in history["train"]], [h["loss"] for h in history["train"]], label="train")
    if history["eval"]:
        steps = [h["step"] for h in history["eval"]]
        ax_loss.plot(steps, [h["loss"] for h in history["eval"]], marker="o", label="eval")
        ax_eval.plot(steps, [h.get("score") for h in history["eval"]], marker="o", label="score (task metric)")
        if "accuracy" in history["eval"][0]:
            ax_eval.plot(steps, [h["accuracy"] for h in history["eval"]], marker=".", alpha=0.6, label="accuracy")
    ax_loss.set(xlabel="step", ylabel="loss", title="loss")
    ax_eval.set(xlabel="step", ylabel="metric", title="eval")
    for ax in (ax_loss, ax_eval):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    from ..report import save_figure

    return save_figure(fig, path, dpi=110)

"""Figures of a training run."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator


def plot_run_history(rows: list[dict[str, float]], path: str | Path, title: str = "") -> None:
    """Loss (left) and IoU / Dice (right) per epoch, training dashed and validation solid."""
    epochs = [r["epoch"] for r in rows]
    fig, (ax_loss, ax_score) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for key, style in (("loss", "--"), ("val_loss", "-")):
        ax_loss.plot(epochs, [r[key] for r in rows], style, marker=".", label=key)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    for key, colour in (("iou", "C2"), ("dice", "C3")):
        ax_score.plot(epochs, [r[key] for r in rows], "--", color=colour, label=key)
        ax_score.plot(
            epochs, [r[f"val_{key}"] for r in rows], "-", color=colour, marker=".", label=f"val_{key}"
        )
    ax_score.set(xlabel="epoch", ylabel="score", title="foreground IoU / Dice", ylim=(0, 1))
    for ax in (ax_loss, ax_score):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=110)
    plt.close(fig)

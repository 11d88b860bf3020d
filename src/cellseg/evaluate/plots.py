"""Figures of a training run."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from cellseg.core.files import atomic_path


def save_figure(fig: plt.Figure, path: str | Path) -> None:
    """Write a PNG atomically (a kill never leaves half an image) and free the figure."""
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110)
    finally:
        plt.close(fig)


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
    save_figure(fig, path)


def _log_scale_helps(values: list[float], metric: str) -> bool:
    """Losses and learning rates spanning more than a factor 5 read better on a log axis."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite or min(finite) <= 0:
        return False
    return ("loss" in metric or "learning_rate" in metric or "grad_norm" in metric) and (
        max(finite) / min(finite) > 5
    )


def plot_histories(
    series: dict[str, list[tuple[list[int], list[float]]]],
    metric: str,
    path: str | Path,
    title: str | None = None,
    log_scale: bool | None = None,
    legend_title: str = "activation",
) -> None:
    """One curve per label: a single run as a line, several (seeds) as their mean with a min-max band.

    ``series`` maps a label (the activation) to its runs' (epochs, values); the mean and band at an
    epoch are over the runs that reached it. ``log_scale`` None decides from the metric and its range.
    """
    fig, ax = plt.subplots(figsize=(8, 4.5), constrained_layout=True)
    everything: list[float] = []
    for i, (label, runs) in enumerate(series.items()):
        colour = f"C{i % 10}" if len(series) <= 10 else plt.cm.tab20(i % 20)
        common = sorted(set().union(*(e for e, _ in runs)))  # a run that stopped early leaves gaps (NaN)
        stacked = np.array(
            [[dict(zip(e, v, strict=True)).get(x, math.nan) for x in common] for e, v in runs], float
        )
        everything.extend(stacked.ravel())
        if len(runs) == 1:
            ax.plot(common, stacked[0], color=colour, marker=".", label=label)
            continue
        ax.plot(common, np.nanmean(stacked, axis=0), color=colour, label=f"{label} (mean of {len(runs)})")
        low, high = np.nanmin(stacked, axis=0), np.nanmax(stacked, axis=0)
        ax.fill_between(common, low, high, color=colour, alpha=0.2)
    if log_scale if log_scale is not None else _log_scale_helps(everything, metric):
        ax.set_yscale("log")
    ax.set(xlabel="epoch", ylabel=metric, title=title or f"{metric} per epoch (band: min-max over seeds)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", title=legend_title)
    save_figure(fig, path)


def plot_score_bars(rows: list[dict], keys: dict[str, str], path: str | Path, title: str = "") -> None:
    """Grouped bars of mean scores per label with standard-deviation error bars.

    ``rows`` hold ``label`` plus ``<key>_mean`` / ``<key>_std`` for each key of ``keys`` (key -> legend).
    """
    fig, ax = plt.subplots(figsize=(max(5.0, 1.0 + 0.9 * len(rows)), 4), constrained_layout=True)
    width = 0.8 / max(1, len(keys))
    x = np.arange(len(rows))
    for j, (key, name) in enumerate(keys.items()):
        means = [r.get(f"{key}_mean", math.nan) for r in rows]
        stds = [r.get(f"{key}_std", 0.0) for r in rows]
        ax.bar(x + (j - (len(keys) - 1) / 2) * width, means, width, yerr=stds, capsize=3, label=name)
    ax.set_xticks(x, [r["label"] for r in rows], rotation=30, ha="right")
    ax.set(ylabel="score (mean ± std over seeds)", ylim=(0, 1), title=title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    save_figure(fig, path)


def plot_differences(
    rows: list[dict], intervals: dict[str, str], path: str | Path, baseline: str, title: str = ""
) -> None:
    """Forest plot: each variant's difference from the baseline with its 95 % intervals, best on top.

    ``rows`` hold ``label``, ``vs_baseline_p_holm`` and, for each prefix of ``intervals`` (prefix -> legend),
    ``<prefix>_diff`` / ``_ci_low`` / ``_ci_high``. Each row is annotated with its Holm-corrected p-value, so
    the figure says which differences the data can separate from the baseline's seed-to-seed noise.
    """
    fig, ax = plt.subplots(figsize=(7.5, 1.2 + 0.45 * len(rows)), constrained_layout=True)
    step = 0.5 / max(1, len(intervals))
    for j, (prefix, name) in enumerate(intervals.items()):
        y = np.arange(len(rows)) + (j - (len(intervals) - 1) / 2) * step
        diff = np.array([r.get(f"{prefix}_diff", math.nan) for r in rows], dtype=float)
        low = np.array([r.get(f"{prefix}_ci_low", math.nan) for r in rows], dtype=float)
        high = np.array([r.get(f"{prefix}_ci_high", math.nan) for r in rows], dtype=float)
        err = np.nan_to_num(np.stack([diff - low, high - diff]))
        ax.errorbar(diff, y, xerr=err, fmt="o", capsize=3, label=name)
    for i, r in enumerate(rows):
        p = r.get("vs_baseline_p_holm", math.nan)
        text = "" if math.isnan(p) else f"p(Holm) {p:.2f}"
        ax.annotate(text, (1.01, i), xycoords=("axes fraction", "data"), va="center", fontsize="small")
    ax.axvline(0.0, color="grey", lw=1)
    ax.set_yticks(np.arange(len(rows)), [r["label"] for r in rows])
    ax.set_ylim(len(rows) - 0.5, -0.5)  # best (first) on top
    ax.set(xlabel=f"difference from {baseline} (95 % interval)", title=title)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12 - 0.6 / (1 + len(rows))), fontsize="small")
    save_figure(fig, path)


def plot_depth_profile(rows: list[dict], path: str | Path, title: str = "") -> None:
    """Activation mean and standard deviation per hidden layer (network order), one line per label with a
    band of ± one standard deviation over seeds; dashed: the 0 / 1 a self-normalising network keeps."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), constrained_layout=True)
    labels = list(dict.fromkeys(r["label"] for r in rows))
    stds = [float(r["std"]) for r in rows if float(r["std"]) > 0]
    log_std = bool(stds) and max(stds) / min(stds) > 100  # one variant's std exploding across depth
    for ax, stat, ref in zip(axes, ("mean", "std"), (0.0, 1.0), strict=True):
        for label in labels:
            mine = [r for r in rows if r["label"] == label]
            x = np.array([r["depth"] for r in mine])
            y = np.array([r[stat] for r in mine], dtype=float)
            sd = np.nan_to_num(np.array([r[f"{stat}_sd"] for r in mine], dtype=float))
            low = np.maximum(y - sd, min(stds) / 2) if stat == "std" and log_std else y - sd
            (line,) = ax.plot(x, y, marker=".", label=label)
            ax.fill_between(x, low, y + sd, color=line.get_color(), alpha=0.15)
        ax.axhline(ref, color="grey", linestyle="--", linewidth=1)
        ax.set(xlabel="hidden activation layer (input -> output)", ylabel=f"activation {stat}")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    if log_std:
        axes[1].set_yscale("log")
    axes[1].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    fig.suptitle(title)
    save_figure(fig, path)


def _bound(value: float) -> str:
    return ("∞" if value > 0 else "-∞") if abs(value) > 100 else f"{value:.3g}"


def plot_activation_gallery(
    curves: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, str]], path: str | Path, columns: int = 5
) -> None:
    """One small plot per activation: the function (solid) and its derivative (dashed).

    ``curves`` maps a name to (x, f(x), f'(x), subtitle); the title also gives the range of f seen over
    a wide input sweep (``±∞`` when it keeps growing).
    """
    rows = math.ceil(len(curves) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.8 * columns, 2.5 * rows), squeeze=False)
    for ax in axes.ravel()[len(curves) :]:
        ax.set_axis_off()
    for ax, (name, (x, y, dy, subtitle)) in zip(axes.ravel(), curves.items(), strict=False):
        near = np.abs(x) <= 4
        ax.plot(x[near], y[near], color="C0", label="f(x)")
        ax.plot(x[near], dy[near], "--", color="C3", label="f'(x)")
        ax.axhline(0, color="grey", lw=0.5)
        ax.axvline(0, color="grey", lw=0.5)
        ax.set_ylim(-2.2, 4.2)
        ax.set_title(
            f"{name}\nrange ({_bound(float(y.min()))}, {_bound(float(y.max()))}) {subtitle}", fontsize=8
        )
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    axes.ravel()[0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    save_figure(fig, path)

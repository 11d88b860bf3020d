"""A sweep's results: one row per run, one row per variant compared with the baseline, and the figures."""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cellseg.core import files, runs
from cellseg.sweep import stats
from cellseg.sweep.spec import METRICS, SweepSpec

RUNS_TABLE = "runs.csv"
COMPARISON_CSV = "comparison.csv"
COMPARISON_MD = "comparison.md"
VAL_LOSS_PLOT = "val_loss.png"
SCORES_PLOT = "scores.png"
DIFFERENCES_PLOT = "differences.png"
DEPTH_CSV = "depth_profile.csv"
DEPTH_PLOT = "depth_profile.png"


@dataclass
class RunRecord:
    """One (variant, seed[, fold]) run of the sweep, as written to runs.csv."""

    variant: str  # the variant's name (the "config" column of runs.csv and comparison.csv)
    label: str
    seed: int
    status: str  # ok | failed
    reason: str = ""
    run_dir: str = ""
    params: int | None = None
    figures: dict[str, float] = field(default_factory=dict)
    test_images: dict[str, float] = field(default_factory=dict)  # test image id -> DSB score
    fold: int | None = None  # the validation fold (sweep folds), None without folds

    @property
    def replicate(self) -> tuple[int, int | None]:
        """What pairs runs of different variants: the same seed (and fold) means the same data, split,
        initialisation and patch order."""
        return self.seed, self.fold

    def row(self) -> dict[str, Any]:
        row = {k: v for k, v in asdict(self).items() if k not in ("variant", "figures", "test_images")}
        row = {"config": self.variant, **row}
        return {**row, **{k: self.figures.get(k, math.nan) for k in METRICS}}


def _mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _per_image_diffs(ok: list[RunRecord], base: list[RunRecord]) -> np.ndarray:
    """Per test image: the variant's DSB score minus the baseline's, each averaged over paired runs."""
    paired = {r.replicate for r in ok} & {r.replicate for r in base}
    mine = [r.test_images for r in ok if r.replicate in paired and r.test_images]
    theirs = [r.test_images for r in base if r.replicate in paired and r.test_images]
    if not mine or not theirs:
        return np.array([])
    images = sorted(set.intersection(*map(set, mine + theirs)))
    return np.array([np.mean([m[i] for m in mine]) - np.mean([t[i] for t in theirs]) for i in images])


def compare(records: list[RunRecord], base_name: str, rank_by: str, folds: int = 0) -> list[dict[str, Any]]:
    """One row per variant: mean and std over its finished seeds, and the paired comparison with the
    baseline variant ``base_name`` (95 % intervals over seeds and over test images, Holm-corrected p,
    detectable difference; over ``folds`` k-fold runs corrected for their shared training images)."""
    by_config: dict[str, list[RunRecord]] = {}
    for r in records:
        by_config.setdefault(r.variant, []).append(r)
    base_ok = [r for r in by_config.get(base_name, []) if r.status == "ok"]
    base = {r.replicate: r.figures.get(rank_by, math.nan) for r in base_ok}
    higher = METRICS[rank_by]
    rows, results = [], []
    for config, group in by_config.items():
        ok = [r for r in group if r.status == "ok"]
        row: dict[str, Any] = {
            "config": config,
            "label": group[0].label,
            "runs": len(group),
            "ok": len(ok),
            "failed": "; ".join(
                f"seed {r.seed}{'' if r.fold is None else f' fold {r.fold}'}: {r.reason}"
                for r in group
                if r.status != "ok"
            ),
            "params": group[0].params,
        }
        for key in METRICS:
            row[f"{key}_mean"], row[f"{key}_std"] = _mean_std([r.figures.get(key, math.nan) for r in ok])
        pairs = [(r.figures.get(rank_by, math.nan), base.get(r.replicate, math.nan)) for r in ok]
        diffs = [(a - b) if higher else (b - a) for a, b in pairs if not (math.isnan(a) or math.isnan(b))]
        is_base = config == base_name
        result = stats.paired([] if is_base else diffs, folds)
        images = np.array([]) if is_base else _per_image_diffs(ok, base_ok)
        low, high = stats.bootstrap_ci(images)
        sign = 1 if higher else -1  # report differences in the metric's own direction
        row |= {
            "vs_baseline_seeds": result.n,
            "vs_baseline_diff": sign * result.diff,
            "vs_baseline_ci_low": sign * (result.ci_low if higher else result.ci_high),
            "vs_baseline_ci_high": sign * (result.ci_high if higher else result.ci_low),
            "vs_baseline_p": result.p,
            "vs_baseline_mdd": result.mdd,
            "test_dsb_diff": float(images.mean()) if images.size else math.nan,
            "test_dsb_ci_low": low,
            "test_dsb_ci_high": high,
        }
        rows.append(row)
        results.append(result)
    adjusted = stats.holm([r["vs_baseline_p"] for r in rows])
    for row, result, p_holm in zip(rows, results, adjusted, strict=True):
        row["vs_baseline_p_holm"] = p_holm
        is_base = row["config"] == base_name
        row["vs_baseline_verdict"] = "baseline" if is_base else stats.verdict(result, p_holm, base_name)

    def order(row: dict[str, Any]) -> tuple[int, float]:
        value = row[f"{rank_by}_mean"]
        return (1, 0.0) if math.isnan(value) else (0, -value if higher else value)

    return sorted(rows, key=order)


def depth_profile(records: list[RunRecord]) -> list[dict[str, Any]]:
    """Per variant and hidden activation layer, in network order: the activations' mean, standard
    deviation and dead share at each run's last epoch (``diagnostics.csv``), mean and spread over seeds.

    What SELU's self-normalisation claim is about: without batch norm its activations should stay near
    mean 0 / std 1 across depth, where ReLU's drift.
    """
    last: dict[str, list[dict[str, float]]] = {}
    for r in records:
        if r.status == "ok" and runs.Run(r.run_dir).diagnostics_file.is_file():
            table = runs.read_history(r.run_dir, runs.DIAGNOSTICS)
            if table:
                last.setdefault(r.label, []).append(table[-1])
    rows = []
    for label, finals in last.items():
        layers = [c.removesuffix(".std") for c in finals[0] if c.endswith(".std")]
        for depth, layer in enumerate(layers):
            row: dict[str, Any] = {"label": label, "depth": depth, "layer": layer, "seeds": len(finals)}
            for stat in ("mean", "std", "dead"):
                values = [f[f"{layer}.{stat}"] for f in finals if f"{layer}.{stat}" in f]
                row[stat], row[f"{stat}_sd"] = _mean_std(values)
            rows.append(row)
    return rows


def _pm(row: dict[str, Any], key: str, digits: int = 3) -> str:
    mean, std = row[f"{key}_mean"], row[f"{key}_std"]
    return "—" if math.isnan(mean) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _interval(row: dict[str, Any], prefix: str) -> str:
    """``<prefix>_diff`` with its 95 % interval ``<prefix>_ci_low`` .. ``<prefix>_ci_high``."""
    diff, low, high = row[f"{prefix}_diff"], row[f"{prefix}_ci_low"], row[f"{prefix}_ci_high"]
    if math.isnan(diff):
        return "—"
    return f"{diff:+.4f}" + ("" if math.isnan(low) else f" [{low:+.4f}, {high:+.4f}]")


def markdown(rows: list[dict[str, Any]], spec: SweepSpec, baseline: str) -> str:
    """comparison.md: the table a person reads, best first, against the variant ``baseline``."""
    test, folded = spec.test_data is not None, bool(spec.folds)
    head = ["#", "variant", "ok / runs", "best val_loss", "val IoU", "val Dice", "val DSB score"]
    head += ["fold DSB score", "fold AJI", "fold PQ"] if folded else []
    head += ["test DSB score", "test AP50", "test AJI"] if test else []
    head += ["epochs to best", "s / epoch", "params", f"Δ {spec.rank_by} vs {baseline} [95 % CI]"]
    head += ["paired t-test p (Holm)", "detectable Δ"]
    head += ["Δ test DSB [95 % CI over images]"] if test else []
    head += ["verdict"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, row in enumerate(rows, 1):
        cells = [str(i), row["label"], f"{row['ok']} / {row['runs']}"]
        if not row["ok"]:
            cells += [f"failed: {row['failed']}"] + [""] * (len(head) - 4)
            lines.append("| " + " | ".join(cells) + " |")
            continue
        cells += [_pm(row, "best_val_loss", 4), _pm(row, "best_val_iou"), _pm(row, "best_val_dice")]
        cells += [_pm(row, "val_dsb_score")]
        cells += [_pm(row, f"fold_{name}") for name in ("dsb_score", "aji", "pq")] if folded else []
        cells += [_pm(row, "test_dsb_score"), _pm(row, "test_ap_50"), _pm(row, "test_aji")] if test else []
        cells += [_pm(row, "best_epoch", 1), _pm(row, "seconds_per_epoch", 2), f"{row['params']:,}"]
        cells.append(_interval(row, "vs_baseline"))
        p, p_holm = row["vs_baseline_p"], row["vs_baseline_p_holm"]
        cells.append("—" if math.isnan(p) else f"{p:.3f} ({p_holm:.3f})")
        cells.append("—" if math.isnan(row["vs_baseline_mdd"]) else f"±{row['vs_baseline_mdd']:.4f}")
        if test:
            cells.append(_interval(row, "test_dsb"))
        cells.append(row["vs_baseline_verdict"])
        lines.append("| " + " | ".join(cells) + " |")
    folds = (
        [
            f"With {spec.folds} folds every (variant, seed) trained once per validation fold (data.folds); "
            "a run pairs with the baseline's of the same seed and fold. Runs of different folds share most "
            "of their training images, so their differences are not independent: the intervals, p-values "
            f"and detectable Δ use the corrected resampled t-test (variance × (1/n + 1/{spec.folds - 1}), "
            "Nadeau and Bengio 2003), which is still optimistic here, since every fold also shares the "
            "other sources' images. Validation scores are on each fold's own images; fold DSB / AJI / PQ "
            "(and AP50 / AP75 in comparison.csv) on those of the folded source alone (all validation "
            "images with none named).",
        ]
        if spec.folds
        else []
    )
    notes = [
        "",
        f"Mean ± standard deviation over seeds {spec.seeds}; sorted by {spec.rank_by}. Every run trains on "
        f"the same images and train/validation split (data seed {spec.data_seed}); a seed changes only the "
        "initialisation and the order of training patches, so runs with the same seed are paired. "
        f"Δ: mean paired difference from {baseline} with its 95 % t-interval over seeds; p: two-sided "
        "paired t-test, in brackets Holm-corrected over every variant compared; detectable Δ: the difference "
        "this many seeds would detect with 80 % power at the 5 % level. A verdict says better or worse only "
        "when the corrected p is below 0.05.",
        "val DSB score: instance-level DSB2018 score on the validation images, with post-processing chosen "
        "on those same images (optimistic; use test_data for an unbiased score).",
        *folds,
    ]
    failed = [f"- {row['label']}: {row['failed']}" for row in rows if row["failed"] and row["ok"]]
    return "\n".join(lines + notes + (["", "Failed runs:", *failed] if failed else [])) + "\n"


def write_results(root: Path, spec: SweepSpec, records: list[RunRecord]) -> list[dict[str, Any]]:
    """runs.csv, comparison.csv / .md and the figures, from the runs so far."""
    from cellseg.evaluate.plots import plot_depth_profile, plot_differences, plot_histories, plot_score_bars

    records = sorted(records, key=lambda r: (r.seed, r.variant))  # parallel workers finish in any order
    files.write_csv(root / RUNS_TABLE, [r.row() for r in records])
    baseline = spec.baseline_variant()
    rows = compare(records, baseline, spec.rank_by, spec.folds)
    files.write_csv(root / COMPARISON_CSV, rows)
    files.write_text(root / COMPARISON_MD, markdown(rows, spec, baseline))
    series: dict[str, list[tuple[list[int], list[float]]]] = {}
    for r in records:
        if r.figures:
            series.setdefault(r.label, []).append(runs.read_metric(r.run_dir, "val_loss"))
    if series:
        plot_histories(
            series, "val_loss", root / VAL_LOSS_PLOT, title="val_loss per epoch (band: min-max over seeds)"
        )
        keys = {"best_val_iou": "val IoU", "best_val_dice": "val Dice", "val_dsb_score": "val DSB score"}
        if spec.test_data is not None:
            keys["test_dsb_score"] = "test DSB score"
        plot_score_bars([r for r in rows if r["ok"]], keys, root / SCORES_PLOT, title="scores per activation")
    profile = depth_profile(records)
    if profile:
        files.write_csv(root / DEPTH_CSV, profile)
        plot_depth_profile(profile, root / DEPTH_PLOT, title="activations across depth, last epoch")
    compared = [r for r in rows if r["vs_baseline_verdict"] != "baseline" and r["vs_baseline_seeds"]]
    if compared:
        intervals = {"vs_baseline": f"Δ {spec.rank_by} over seeds (t)"}
        if spec.test_data is not None:
            intervals["test_dsb"] = "Δ test DSB score over test images (bootstrap)"
        title = f"against {baseline}, seeds {spec.seeds}"
        plot_differences(compared, intervals, root / DIFFERENCES_PLOT, baseline, title=title)
    return rows

"""Sweeps: every config (activation) x every seed, under one data set, budget and set of overrides.

The sweep folder holds ``sweep.yaml`` (what was asked), ``runs/<config>_s<seed>/`` (ordinary run folders,
named so an interrupted sweep finds them again: finished runs are reused, interrupted ones resumed, runs
that crashed retried), ``runs.csv`` (one row per run), ``comparison.csv`` / ``comparison.md`` (one row
per config, best first, with a paired comparison against the baseline over seeds) and the figures.
"""

from __future__ import annotations

import functools
import math
import shutil
import statistics
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from scipy import stats

from cellseg import runs
from cellseg.config import ConfigError, load_config

RUNS_TABLE = "runs.csv"
COMPARISON_CSV = "comparison.csv"
COMPARISON_MD = "comparison.md"
VAL_LOSS_PLOT = "val_loss.png"
SCORES_PLOT = "scores.png"
FAILED = "failed.json"

#: Per-run figures compared between configs, and whether higher is better.
METRICS: dict[str, bool] = {
    "best_val_loss": False,
    "best_val_iou": True,
    "best_val_dice": True,
    "val_dsb_score": True,
    "test_dsb_score": True,
    "test_ap_50": True,
    "test_pixel_iou": True,
    "best_epoch": False,
    "seconds_per_epoch": False,
}


@dataclass
class SweepSpec:
    """What a sweep trains; the same fields as a sweep YAML file."""

    configs: list[str]
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    data: list[str] | None = None
    test_data: list[str] | None = None
    set: list[str] = field(default_factory=list)
    baseline: str = "relu"
    rank_by: str = "best_val_iou"

    def __post_init__(self) -> None:
        if not self.configs or not self.seeds:
            raise ConfigError("a sweep needs at least one config and one seed")
        stems = [Path(c).stem for c in self.configs]
        if len(set(stems)) != len(stems):
            raise ConfigError(f"config file names must differ (they name the runs): {stems}")
        if self.rank_by not in METRICS:
            raise ConfigError(f"rank_by '{self.rank_by}' is not one of {', '.join(METRICS)}")
        for config in self.configs:
            load_config(config, self.set)  # every config and override is checked before anything trains

    def comparable(self) -> dict[str, Any]:
        """What must not change when a sweep is resumed (configs and seeds may be added)."""
        return {"data": self.data, "test_data": self.test_data, "set": self.set}


def load_sweep_file(path: str | Path) -> SweepSpec:
    """A sweep YAML (keys as :class:`SweepSpec`); relative config paths are relative to the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"sweep file not found: {path}")
    raw = yaml.safe_load(path.read_text()) or {}
    known = SweepSpec.__dataclass_fields__
    unknown = [k for k in raw if k not in known]
    if unknown:
        raise ConfigError(f"{path}: unknown sweep key(s) {unknown}; valid keys: {', '.join(known)}")
    raw["configs"] = [str(c if Path(c).is_absolute() else path.parent / c) for c in raw.get("configs", [])]
    for key in ("data", "test_data"):
        if isinstance(raw.get(key), str):
            raw[key] = [raw[key]]
    return SweepSpec(**raw)


@dataclass
class RunRecord:
    """One (config, seed) run of the sweep, as written to runs.csv."""

    config: str
    label: str
    seed: int
    status: str  # ok | failed
    reason: str = ""
    run_dir: str = ""
    params: int | None = None
    figures: dict[str, float] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        row = {k: v for k, v in asdict(self).items() if k != "figures"}
        return {**row, **{k: self.figures.get(k, math.nan) for k in METRICS}}


def _figures(run_dir: Path, summary: dict[str, Any], evaluate: Callable[[Path], dict[str, float]]) -> dict:
    history = runs.read_history(run_dir)
    seconds = [r["seconds"] for r in history[1:]] or [r["seconds"] for r in history]  # epoch 1 traces
    figures = {k: summary[k] for k in ("best_val_loss", "best_val_iou", "best_val_dice", "best_epoch")}
    figures["seconds_per_epoch"] = statistics.median(seconds)
    figures.update(evaluate(run_dir))
    return figures


def run_one(
    spec: SweepSpec,
    config: str,
    seed: int,
    root: Path,
    train: Callable[..., Any],
    evaluate: Callable[[Path], dict[str, float]],
    log: Callable[[str], Any],
) -> RunRecord:
    """Train (or reuse, or resume) one run and collect its figures; a failure is recorded, not raised."""
    name = f"{Path(config).stem}_s{seed}"
    run_dir = root / "runs" / name
    cfg = load_config(config, [f"seed={seed}", *spec.set])
    if spec.data is not None:
        cfg.data.path = spec.data[0] if len(spec.data) == 1 else list(spec.data)
    label = runs.label_of_spec(cfg.model.activation)
    record = RunRecord(Path(config).stem, label, seed, "ok", run_dir=str(run_dir))
    try:
        if (run_dir / runs.SUMMARY).is_file():
            log(f"{name}: finished earlier, reused")
        elif (run_dir / runs.STATE).is_file():
            log(f"{name}: resuming")
            train(cfg, out=root / "runs", resume=run_dir)
        else:
            if run_dir.exists():  # started, but crashed or was killed before its first epoch ended
                shutil.rmtree(run_dir)
            log(f"{name}: training")
            train(cfg, out=root / "runs", run_name=name)
        (run_dir / FAILED).unlink(missing_ok=True)
        summary = runs.read_json(run_dir / runs.SUMMARY)
        record.params = summary["params"]
        if summary["stopped_reason"] != "completed":
            record.status, record.reason = "failed", summary["stopped_reason"]
        if summary["best_val_loss"] is not None:
            record.figures = _figures(run_dir, summary, evaluate)
    except Exception as exc:
        record.status, record.reason = "failed", f"{type(exc).__name__}: {exc}"
        run_dir.mkdir(parents=True, exist_ok=True)
        runs.write_json(run_dir / FAILED, {"reason": record.reason, "traceback": traceback.format_exc()})
        log(f"{name}: FAILED ({record.reason})")
    return record


def _mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def paired_test(diffs: list[float]) -> tuple[float, str]:
    """Two-sided paired t-test p-value of the per-seed differences, and what it says at 5 %."""
    if len(diffs) < 2:
        return math.nan, "too few seeds to test"
    if all(d == diffs[0] for d in diffs):
        return (0.0, "better" if diffs[0] > 0 else "worse") if diffs[0] else (1.0, "identical")
    p = float(stats.ttest_1samp(diffs, 0.0).pvalue)
    if p >= 0.05:
        return p, "not distinguishable from seed noise"
    return p, "better" if statistics.fmean(diffs) > 0 else "worse"


def compare(records: list[RunRecord], baseline: str, rank_by: str) -> list[dict[str, Any]]:
    """One row per config: mean and std over its finished seeds, and the paired test against baseline."""
    by_config: dict[str, list[RunRecord]] = {}
    for r in records:
        by_config.setdefault(r.config, []).append(r)
    base = {r.seed: r.figures.get(rank_by, math.nan) for r in by_config.get(baseline, []) if r.status == "ok"}
    higher = METRICS[rank_by]
    rows = []
    for config, group in by_config.items():
        ok = [r for r in group if r.status == "ok"]
        row: dict[str, Any] = {
            "config": config,
            "label": group[0].label,
            "runs": len(group),
            "ok": len(ok),
            "failed": "; ".join(f"seed {r.seed}: {r.reason}" for r in group if r.status != "ok"),
            "params": group[0].params,
        }
        for key in METRICS:
            row[f"{key}_mean"], row[f"{key}_std"] = _mean_std([r.figures.get(key, math.nan) for r in ok])
        pairs = [
            (r.figures[rank_by], base[r.seed])
            for r in ok
            if r.seed in base
            and not math.isnan(base[r.seed])
            and not math.isnan(r.figures.get(rank_by, math.nan))
        ]
        diffs = [(a - b) if higher else (b - a) for a, b in pairs]  # positive: better than the baseline
        row["vs_baseline_seeds"] = len(diffs)
        row["vs_baseline_diff"] = statistics.fmean(a - b for a, b in pairs) if pairs else math.nan
        row["vs_baseline_p"], row["vs_baseline_verdict"] = (
            (math.nan, "baseline") if config == baseline else paired_test(diffs)
        )
        rows.append(row)

    def order(row: dict[str, Any]) -> tuple[int, float]:
        value = row[f"{rank_by}_mean"]
        return (1, 0.0) if math.isnan(value) else (0, -value if higher else value)

    return sorted(rows, key=order)


def _pm(row: dict[str, Any], key: str, digits: int = 3) -> str:
    mean, std = row[f"{key}_mean"], row[f"{key}_std"]
    return "—" if math.isnan(mean) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def markdown(rows: list[dict[str, Any]], spec: SweepSpec) -> str:
    """comparison.md: the table a person reads, best first."""
    test = spec.test_data is not None
    head = ["#", "activation", "ok / runs", "best val_loss", "val IoU", "val Dice", "val DSB score"]
    head += ["test DSB score", "test AP50"] if test else []
    head += ["epochs to best", "s / epoch", "params", f"Δ {spec.rank_by} vs {spec.baseline}", "paired t-test"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, row in enumerate(rows, 1):
        cells = [str(i), row["label"], f"{row['ok']} / {row['runs']}"]
        if not row["ok"]:
            cells += [f"failed: {row['failed']}"] + [""] * (len(head) - 4)
            lines.append("| " + " | ".join(cells) + " |")
            continue
        cells += [_pm(row, "best_val_loss", 4), _pm(row, "best_val_iou"), _pm(row, "best_val_dice")]
        cells += [_pm(row, "val_dsb_score")]
        cells += [_pm(row, "test_dsb_score"), _pm(row, "test_ap_50")] if test else []
        cells += [_pm(row, "best_epoch", 1), _pm(row, "seconds_per_epoch", 2), f"{row['params']:,}"]
        diff, p = row["vs_baseline_diff"], row["vs_baseline_p"]
        cells.append("—" if math.isnan(diff) else f"{diff:+.4f} ({row['vs_baseline_seeds']} seeds)")
        cells.append(row["vs_baseline_verdict"] + ("" if math.isnan(p) else f" (p = {p:.3f})"))
        lines.append("| " + " | ".join(cells) + " |")
    notes = [
        "",
        f"Mean ± standard deviation over seeds {spec.seeds}; sorted by {spec.rank_by}. "
        f"The paired test compares {spec.rank_by} with {spec.baseline} seed by seed "
        "(same seed: same split and patches); "
        "p >= 0.05 means the difference is within seed-to-seed noise.",
        "val DSB score: instance-level DSB2018 score on the validation images, with post-processing chosen "
        "on those same images (optimistic; use test_data for an unbiased score).",
    ]
    failed = [f"- {row['label']}: {row['failed']}" for row in rows if row["failed"] and row["ok"]]
    return "\n".join(lines + notes + (["", "Failed runs:", *failed] if failed else [])) + "\n"


def write_results(root: Path, spec: SweepSpec, records: list[RunRecord]) -> list[dict[str, Any]]:
    """runs.csv, comparison.csv / .md and the figures, from the runs so far."""
    from cellseg.plots import plot_histories, plot_score_bars

    runs.write_csv(root / RUNS_TABLE, [r.row() for r in records])
    rows = compare(records, Path(spec.baseline).stem, spec.rank_by)
    runs.write_csv(root / COMPARISON_CSV, rows)
    runs.write_text(root / COMPARISON_MD, markdown(rows, spec))
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
    return rows


def _evaluator(spec: SweepSpec) -> Callable[[Path], dict[str, float]]:
    """Instance scores of a finished run: on its validation images, and on ``spec.test_data`` if given."""
    from cellseg.evaluation import InferenceOptions, evaluate_run, load_predictor, postprocess_params

    options = InferenceOptions()

    def evaluate(run_dir: Path) -> dict[str, float]:
        predictor, cfg = load_predictor(run_dir, options)
        postprocess_params(run_dir, predictor, cfg, options, log=lambda _: None)
        figures = {"val_dsb_score": runs.read_json(run_dir / runs.POSTPROCESS)["val_dsb_score"]}
        if spec.test_data is not None:
            saved = run_dir / "evaluation" / "metrics.json"
            if saved.is_file():
                metrics = runs.read_json(saved)
            else:
                metrics = evaluate_run(run_dir, spec.test_data, options=options, log=lambda _: None)[1]
            figures["test_dsb_score"] = metrics["instance"]["dsb_score"]
            figures["test_ap_50"] = metrics["instance"]["ap_50"]
            figures["test_pixel_iou"] = metrics["pixel"]["iou"]
        return figures

    return evaluate


def run_sweep(
    spec: SweepSpec, out: str | Path, log: Callable[[str], Any] = print, verbose: int = 0
) -> list[dict[str, Any]]:
    """Train and evaluate every (config, seed), seed by seed, and write the comparison after each run."""
    import keras

    from cellseg.trainer import train

    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    spec_path = root / "sweep.yaml"
    if spec_path.is_file():
        before = yaml.safe_load(spec_path.read_text())
        if {k: before.get(k) for k in spec.comparable()} != spec.comparable():
            raise ConfigError(
                f"{root} holds a sweep with other data / test_data / --set overrides "
                f"({ {k: before.get(k) for k in spec.comparable()} }); give another --out"
            )
    runs.write_text(spec_path, yaml.safe_dump(asdict(spec), sort_keys=False))
    evaluate = _evaluator(spec)
    quiet_train = functools.partial(train, verbose=verbose, log=lambda _: None)
    records: list[RunRecord] = []
    total = len(spec.configs) * len(spec.seeds)
    for seed in spec.seeds:  # seed-major: an interrupted sweep already has complete pairs
        for config in spec.configs:
            log(f"[{len(records) + 1}/{total}] {Path(config).stem}, seed {seed}")
            records.append(run_one(spec, config, seed, root, quiet_train, evaluate, log))
            keras.backend.clear_session()  # one process trains many models: keep the graph small
            write_results(root, spec, records)
    return compare(records, Path(spec.baseline).stem, spec.rank_by)

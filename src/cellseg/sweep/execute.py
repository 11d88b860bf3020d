"""Running a sweep: train (or reuse, or resume) every run, score it, and keep the results up to date.

Runs are ordinary run folders named ``runs/<variant>_s<seed>`` (``_f<fold>`` added with folds), so an
interrupted sweep finds them again: finished runs are reused, interrupted ones resumed, runs that crashed
retried. With ``workers`` > 1 the runs go to that many worker processes on this machine, the CPU cores
split evenly between them. With the ``ray`` executor every run is a Ray task reserving that share of a
machine's CPUs, so a Ray cluster spreads the runs over its machines (the sweep folder and the data must
then be on a file system they share).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import logging
import math
import multiprocessing
import shutil
import statistics
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from cellseg.core import files, runs
from cellseg.core.config import ConfigError
from cellseg.core.hardware import configure_process
from cellseg.core.parallel import available_cores, ray_map, use_threads
from cellseg.core.records import Metrics, Summary
from cellseg.core.runs import Run
from cellseg.data.prepare import DataCache
from cellseg.data.preprocessing import MODALITIES
from cellseg.sweep.report import RunRecord, compare, write_results
from cellseg.sweep.spec import FOLD_FIGURES, SweepSpec, Variant

logger = logging.getLogger(__name__)

#: One run of a sweep: its variant, seed and, with ``folds``, validation fold.
Job = tuple[Variant, int, int | None]

SPEC = "sweep.yaml"


def _figures(run_dir: Path, summary: Summary, evaluate: Callable[[Path], dict[str, float]]) -> dict:
    history = Run(run_dir).history()
    traced = set(summary.session_starts)  # each process's first epoch traces the graph
    seconds = [r["seconds"] for r in history if r["epoch"] not in traced] or [r["seconds"] for r in history]
    figures: dict[str, float] = {
        "best_val_loss": summary.best_val_loss,
        "best_val_iou": summary.best_val_iou,
        "best_val_dice": summary.best_val_dice,
        "best_epoch": summary.best_epoch,
    }
    figures["seconds_per_epoch"] = statistics.median(seconds)
    figures.update(evaluate(run_dir))
    return figures


def run_one(
    spec: SweepSpec,
    variant: Variant,
    seed: int,
    root: Path,
    train: Callable[..., Any],
    evaluate: Callable[[Path], dict[str, float]],
    fold: int | None = None,
) -> RunRecord:
    """Train (or reuse, or resume) one run and collect its figures; a failure is recorded, not raised."""
    name = f"{variant.name}_s{seed}" + (f"_f{fold}" if fold is not None else "")
    run_dir = root / "runs" / name
    cfg = spec.run_config(variant, seed, fold)
    record = RunRecord(variant.name, spec.label(variant), seed, "ok", run_dir=str(run_dir), fold=fold)
    try:
        with runs.locked(run_dir):  # two sweeps on one folder: the second skips what the first trains
            _train_or_reuse(name, cfg, run_dir, train)
            summary = Run(run_dir).summary
            record.params = summary.params
            if not summary.completed:
                record.status, record.reason = "failed", summary.stopped_reason
            if summary.best_val_loss is not None:
                record.figures = _figures(run_dir, summary, evaluate)
                record.test_images = _test_images(run_dir) if spec.test_data is not None else {}
            Run(run_dir).failed_file.unlink(missing_ok=True)
    except runs.RunBusy as exc:  # not this process's run: leave its folder alone
        record.status, record.reason = "failed", str(exc)
        logger.warning(f"{name}: skipped ({exc})")
    except Exception as exc:
        record.status, record.reason = "failed", f"{type(exc).__name__}: {exc}"
        run_dir.mkdir(parents=True, exist_ok=True)
        files.write_json(
            Run(run_dir).failed_file, {"reason": record.reason, "traceback": traceback.format_exc()}
        )
        logger.warning(f"{name}: FAILED ({record.reason})")
    return record


def _train_or_reuse(name: str, cfg: Any, run_dir: Path, train: Callable[..., Any]) -> None:
    """Reuse a finished run, resume an interrupted one (from epoch 1 if none had finished), or train it."""
    status = Run(run_dir).status()
    if status == "finished":
        logger.info(f"{name}: finished earlier, reused")
    elif status == "interrupted":
        logger.info(f"{name}: resuming")
        train(cfg, out=run_dir.parent, resume=run_dir)
    else:
        logger.info(f"{name}: training")
        train(cfg, out=run_dir.parent, run_name=name)


def _test_images(run_dir: Path) -> dict[str, float]:
    """Per-image DSB scores of the run's held-out evaluation (``evaluation/per_image.csv``)."""
    import csv

    with (Run(run_dir).evaluation_dir() / runs.PER_IMAGE).open() as f:
        return {row["id"]: float(row["dsb_score"]) for row in csv.DictReader(f)}


def test_figures(metrics: Metrics) -> dict[str, float]:
    """The sweep's test_* figures from an evaluation's ``metrics.json`` (NaN where the test set has no
    image of a modality)."""
    figures = metrics.headline()
    return {
        "test_dsb_score": figures["dsb_score"],
        "test_ap_50": figures["ap_50"],
        "test_aji": figures["aji"],
        "test_pixel_iou": figures["pixel_iou"],
        **{f"test_dsb_{m}": metrics.by_modality.get(m, {}).get("dsb_score", math.nan) for m in MODALITIES},
    }


def fold_figures(run: Run, options: Any) -> dict[str, float]:
    """A fold's scores: the run's validation images of its folded source (``data.folds.source``; all of
    them with none named), scored once into ``evaluation_val/`` and read back from there after (scored
    again where that record predates one of the figures and the model is there to do it; a run restored
    from its record alone keeps NaN for those)."""
    from cellseg.evaluate.evaluation import evaluate_run

    source = run.config.data.folds.source

    def fold(metrics: Metrics) -> dict[str, Any]:
        return dict(metrics.by_source.get(source, {})) if source else metrics.headline()

    metrics = run.evaluation_metrics(run.evaluation_dir(val=True))
    stale = metrics is not None and not set(FOLD_FIGURES) <= fold(metrics).keys()
    if metrics is None or (stale and run.kept_model.is_file()):
        metrics = evaluate_run(run.path, None, options=options)[1]
    scores = fold(metrics)
    return {f"fold_{name}": scores.get(name, math.nan) for name in FOLD_FIGURES}


def _evaluator(spec: SweepSpec) -> Callable[[Path], dict[str, float]]:
    """Instance scores of a finished run: on its validation images, and on ``spec.test_data`` if given."""
    from cellseg.core.config import InferenceOptions
    from cellseg.evaluate.evaluation import evaluate_run, scored_on
    from cellseg.infer.segmenter import open_segmenter

    options = InferenceOptions()

    def evaluate(run_dir: Path) -> dict[str, float]:
        run = Run(run_dir)
        metrics = run.evaluation_metrics() if spec.test_data is not None else None
        if metrics is not None and not scored_on(metrics.data, spec.test_data):
            metrics = None  # an evaluation of other images: scored again
        if spec.test_data is not None and metrics is None:  # calibrates on validation first if needed
            metrics = evaluate_run(run_dir, spec.test_data, options=options)[1]
        elif run.postprocess is None:  # else: calibrated earlier, no model needed
            open_segmenter(run_dir, options)  # calibrates
        figures = {"val_dsb_score": run.postprocess.val_dsb_score}
        if spec.folds:
            figures.update(fold_figures(run, options))
        if spec.test_data is not None:
            figures.update(test_figures(metrics))
        return figures

    return evaluate


@contextlib.contextmanager
def _quiet(*names: str) -> Iterator[None]:
    """Only warnings from these loggers: a sweep says one line per run, which their lines would drown."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [one.level for one in loggers]
    for one in loggers:
        one.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for one, level in zip(loggers, levels, strict=True):
            one.setLevel(level)


#: A sweep worker process's data cache (set by :func:`_start_worker`): its runs share the prepared data.
_worker_cache: DataCache | None = None


def _job(
    spec: SweepSpec,
    job: Job,
    root: Path,
    verbose: int,
    cache: DataCache | None = None,
) -> RunRecord:
    """One run, start to finish, in whatever process runs it (keeps that process's graph small)."""
    import keras

    from cellseg.train.trainer import train

    with _quiet(
        "cellseg.train.trainer",
        "cellseg.data.prepare",
        "cellseg.infer.calibration",
        "cellseg.evaluate.evaluation",
    ):
        try:
            data_cache = cache if cache is not None else _worker_cache
            quiet_train = functools.partial(train, verbose=verbose, data_cache=data_cache)
            variant, seed, fold = job
            return run_one(spec, variant, seed, root, quiet_train, _evaluator(spec), fold)
        finally:
            keras.backend.clear_session()


def _start_worker(threads: int) -> None:
    """Give a worker process its share of the cores, a data cache its runs share, and the commands'
    TensorFlow settings (a Ray worker on another machine inherits no environment)."""
    global _worker_cache
    configure_process()
    if _worker_cache is None:  # a reused (Ray) worker keeps its cache
        _worker_cache = DataCache()
    use_threads(threads)


def _ray_job(spec: SweepSpec, job: Job, root: str, threads: int) -> RunRecord:
    _start_worker(threads)
    return _job(spec, job, Path(root), 0)


def _run_on_ray(
    spec: SweepSpec,
    jobs: list[Job],
    root: Path,
    threads: int,
    done: Callable[[RunRecord], None],
) -> None:
    """Every run as a Ray task reserving ``threads`` CPUs, on the cluster at ``spec.address``."""
    calls = [(spec, job, str(root.resolve()), threads) for job in jobs]
    try:
        ray_map(_ray_job, calls, threads, spec.address, done)
    except ImportError as exc:
        raise ConfigError(str(exc)) from exc


#: What a run's record keeps (no model): enough for a sweep to reuse the run and tabulate it.
RECORD_FILES = (
    runs.SUMMARY,
    runs.CONFIG,
    runs.HISTORY,
    runs.DIAGNOSTICS,
    runs.POSTPROCESS,
    f"{runs.EVALUATION}/{runs.EVALUATION_METRICS}",
    f"{runs.EVALUATION}/{runs.PER_IMAGE}",
    f"{runs.VAL_EVALUATION}/{runs.EVALUATION_METRICS}",  # with folds: the fold's scores
)


def _copy_record(src: Path, dst: Path) -> None:
    for name in RECORD_FILES:
        if (src / name).is_file():
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / name, dst / name)


def restore_records(results: Path, root: Path) -> int:
    """Copy the finished runs' records kept in ``results`` into the sweep folder where it has no such run
    (a fresh checkout): the sweep reuses them as finished runs. Returns how many were restored."""
    restored = 0
    for record in sorted((results / "runs").glob(f"*/{runs.SUMMARY}")):
        target = root / "runs" / record.parent.name
        if Run(target).status() == "new":
            _copy_record(record.parent, target)
            restored += 1
    return restored


def keep_results(root: Path, results: Path, record: RunRecord) -> None:
    """The sweep's tables, figures and ``sweep.yaml``, and the record (no model) of the run just done if
    it finished, in ``results``: a folder small enough to commit, from which the sweep resumes elsewhere."""
    results.mkdir(parents=True, exist_ok=True)
    for path in root.iterdir():
        if path.is_file() and path.suffix in (".csv", ".md", ".png", ".yaml"):
            shutil.copyfile(path, results / path.name)
    if record.run_dir and Run(record.run_dir).status() == "finished":
        _copy_record(Path(record.run_dir), results / "runs" / Path(record.run_dir).name)


def _open_folder(spec: SweepSpec, root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    path = root / SPEC
    if path.is_file():
        before = yaml.safe_load(path.read_text())
        if {k: before.get(k) for k in spec.comparable()} != spec.comparable():
            raise ConfigError(
                f"{root} holds a sweep with other data / test_data / --set overrides / data seed "
                f"({ {k: before.get(k) for k in spec.comparable()} }); give another --out"
            )
    files.write_text(path, yaml.safe_dump(asdict(spec), sort_keys=False))


def run_sweep(
    spec: SweepSpec, out: str | Path, verbose: int = 0, results: str | Path | None = None
) -> list[dict[str, Any]]:
    """Train and evaluate every (variant, seed[, fold]), seed-major, writing the comparison after each run;
    with ``results``, also keep the tables and run records there, and resume from the records found there."""
    root = Path(out)
    _open_folder(spec, root)
    if results is not None and (restored := restore_records(Path(results), root)):
        logger.info(f"{restored} finished runs restored from the records in {results}")
    folds, variants = spec.fold_indices(), spec.variants()
    # complete pairs first
    jobs = [(v, seed, fold) for seed in spec.seeds for fold in folds for v in variants]
    records: list[RunRecord] = []

    def done(record: RunRecord) -> None:
        records.append(record)
        status = "ok" if record.status == "ok" else f"FAILED ({record.reason})"
        fold = f", fold {record.fold}" if record.fold is not None else ""
        logger.info(f"[{len(records)}/{len(jobs)}] {record.variant}, seed {record.seed}{fold}: {status}")
        write_results(root, spec, records)
        if results is not None:
            keep_results(root, Path(results), record)

    threads = max(1, available_cores() // spec.workers)
    if spec.executor == "ray":
        where = f"the Ray cluster at {spec.address}" if spec.address else "a local Ray instance"
        logger.info(f"{len(jobs)} runs on {where}, {threads} CPUs each")
        _run_on_ray(spec, jobs, root, threads, done)
    elif spec.workers == 1:
        cache = DataCache()  # every run of the sweep prepares the same data: once
        for job in jobs:
            done(_job(spec, job, root, verbose, cache))
    else:
        logger.info(f"{len(jobs)} runs on {spec.workers} worker processes, {threads} cores each")
        with concurrent.futures.ProcessPoolExecutor(
            spec.workers, multiprocessing.get_context("spawn"), _start_worker, (threads,)
        ) as pool:
            futures = [pool.submit(_job, spec, job, root, 0) for job in jobs]
            for future in concurrent.futures.as_completed(futures):
                done(future.result())
    return compare(records, spec.baseline_variant(), spec.rank_by, spec.folds)

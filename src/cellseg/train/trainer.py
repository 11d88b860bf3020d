"""Train a U-Net from a :class:`Config` and leave a complete run folder behind.

The run folder (:class:`cellseg.core.runs.Run`) holds the resolved ``config.yaml``, ``split.json``,
``history.csv`` (one row per epoch), ``model.keras`` (the epoch ``train.keep_model`` picks),
``checkpoint/`` (for resuming), ``summary.json`` and ``loss_curve.png``. The jobs around training live
beside it: the optimiser and seeding in :mod:`cellseg.model.optim`, resuming in
:mod:`cellseg.train.checkpoint`, the data in :mod:`cellseg.data.prepare`,
what is kept in :mod:`cellseg.train.callbacks`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import platform
import shutil
import sys
import time
import zipfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

import cellseg
from cellseg.core import files, hardware, runs
from cellseg.core.config import Config, InferenceOptions
from cellseg.core.records import Summary
from cellseg.core.runs import Run, TrainingError
from cellseg.data.pipeline import PreparedData, one_hot_targets, train_dataset, val_dataset
from cellseg.data.prepare import DataCache, prepare_run_data
from cellseg.evaluate.plots import plot_run_history
from cellseg.infer.calibration import Choice
from cellseg.model.activations import parse_spec
from cellseg.model.optim import compile_model, make_schedule, make_strategy, seed_everything
from cellseg.model.unet import build_unet, check_model_config, load_model
from cellseg.train.callbacks import (
    Diagnostics,
    FreezeEncoder,
    HistoryWriter,
    KeepRule,
    ModelKeeper,
    ResumeCheckpoint,
    Snapshots,
    StopOnDivergence,
)
from cellseg.train.checkpoint import Checkpoint, read_checkpoint
from cellseg.train.crossfit import cross_fit
from cellseg.train.finetune import adopt_contract, keep_the_better, load_start_weights, provenance

logger = logging.getLogger(__name__)

__all__ = ["RunResult", "TrainingError", "train"]


@dataclass
class RunResult:
    run_dir: Path
    summary: Summary


def activation_label(cfg: Config) -> str:
    return parse_spec(cfg.model.activation)[0]


def _absolute_paths(cfg: Config) -> Config:
    """The config with its data paths absolute, so the saved run evaluates from any working directory."""
    path = cfg.data.path
    if path is not None:
        path = os.path.abspath(path) if isinstance(path, str) else [os.path.abspath(p) for p in path]
    rle_csv = None if cfg.data.rle_csv is None else os.path.abspath(cfg.data.rle_csv)
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, path=path, rle_csv=rle_csv))


def train(
    cfg: Config,
    out: str | Path = "runs",
    resume: str | Path | None = None,
    verbose: int | None = None,
    run_name: str | None = None,
    data_cache: DataCache | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    compare_with_start: bool = True,
) -> RunResult:
    """Train (or continue training) and return the run folder and its summary.

    The run folder is ``out/<timestamp>_<activation>_s<seed>``, or ``out/<run_name>`` when given (a
    sweep names its runs so an interrupted sweep finds them again).

    ``verbose`` is Keras's per-epoch output (None: a progress bar on a terminal, one line per epoch
    otherwise, 0: none). The few lines saying what the run uses and where it writes are logged
    (``cellseg.train.trainer``, INFO); the command-line tools show them.

    ``data_cache`` keeps the prepared data for the next run that prepares the same data the same way
    (a sweep passes one to all its runs: on the full DSB2018 set that saves ~15 s a run).

    ``callbacks`` are Keras callbacks added to the run's own (the napari plugin's progress bar and
    cancel button: an exception raised in one interrupts the run, which resumes like a killed one).

    A finished fine-tuned run then keeps the better of itself and its start, unless
    ``compare_with_start`` is false (a fold run of ``train.compare_folds``).
    """
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    start = time.perf_counter()
    cfg = _absolute_paths(adopt_contract(cfg))  # a fine-tuned run takes its starting model's contract
    check_model_config(cfg.model)  # a bad activation or option fails before any data is read
    with contextlib.ExitStack() as hold:
        if resume is not None:  # before anything in the folder is read: another process may be training
            hold.enter_context(runs.locked(resume))
        checkpoint = read_checkpoint(Path(resume), cfg.train.epochs) if resume is not None else None
        seed_everything(cfg)
        machine = hardware.this_machine(cfg.train.precision)
        logger.info(machine.line())
        data = prepare_run_data(cfg, data_cache)
        policy = keras.config.dtype_policy()
        keras.config.set_dtype_policy(machine.precision)  # layers built (or loaded) from here on use it
        try:
            strategy = make_strategy(cfg.train)
            if cfg.train.distribute != "none":
                logger.info(f"distribute: {cfg.train.distribute}, {strategy.num_replicas_in_sync} replicas")
            with strategy.scope():
                opened = _open_run(cfg, data, out, resume, checkpoint, run_name)
            hold.enter_context(runs.locked(opened.run_dir))  # a new folder: held from its first epoch
            try:
                result = _fit_and_summarize(cfg, data, opened, machine, start, verbose, callbacks)
            except files.WriteError as exc:
                fix = f"Fix that, then resume the run: train --resume {opened.run_dir}"
                raise TrainingError(f"{exc}. {fix}") from exc
            if cfg.train.init is not None and compare_with_start and result.summary.completed:
                result.summary.init_comparison = _compare_with_start(Run(result.run_dir), verbose)
            return result
        finally:
            keras.config.set_dtype_policy(policy)


def _compare_with_start(run: Run, verbose: int) -> dict[str, Any]:
    """A fine-tuned run keeps the better of itself and its starting model (:func:`keep_the_better`); with
    ``train.compare_folds``, a verdict for the start is checked out of fold (:func:`cross_fit`)."""

    def train_fold(fold_cfg: Config, folder: Path) -> None:
        interrupted = Run(folder).status() == "interrupted"
        resume, name = (folder, None) if interrupted else (None, folder.name)
        train(fold_cfg, folder.parent, resume, verbose, name, compare_with_start=False)

    def out_of_fold() -> Choice:
        logger.info("the validation images favour the starting model: checking on every image, out of fold")
        return cross_fit(run, train_fold, InferenceOptions())

    comparison = keep_the_better(run, out_of_fold if run.config.train.compare_folds else None)
    where = comparison.get("out_of_fold")
    tuned, before = comparison["fine_tuned_val_dsb"], comparison["start_val_dsb"]
    scores = (
        f"DSB {tuned:.3f} fine-tuned, {before:.3f} before, on {comparison['val_images']} validation images"
    )
    if where:
        scores += (
            f"; {where['fine_tuned_dsb']:.3f} and {where['start_dsb']:.3f} on all {where['images']} images, "
            "each predicted by a fold run without it"
        )
    if comparison["kept"] == "start":
        logger.warning(
            f"fine-tuning did not beat the model it started from ({scores}): model.keras holds the "
            f"starting model's weights, {run.fine_tuned_model.name} the fine-tuned ones (copy it over "
            "model.keras to use them: the next command calibrates it again)"
        )
    else:
        logger.info(f"fine-tuned model kept ({scores})")
    run.save_summary(dataclasses.replace(run.summary, init_comparison=comparison))
    return comparison


@dataclass
class _OpenRun:
    run_dir: Path
    model: keras.Model
    done: int = 0
    best_val_loss: float = math.inf
    elapsed_before: float = 0.0  # training seconds of the processes before this one
    session_starts: list[int] = dataclasses.field(default_factory=list)  # of those processes


def _open_run(
    cfg: Config,
    data: PreparedData,
    out: str | Path,
    resume: str | Path | None,
    checkpoint: Checkpoint | None,
    run_name: str | None,
) -> _OpenRun:
    """A new run folder with a fresh model, or the run being resumed with its last checkpoint."""
    if resume is not None:
        opened = _reopen_run(cfg, data, Path(resume), checkpoint)
    else:
        if run_name is None:
            run_dir = Run.create(out, f"{activation_label(cfg)}_s{cfg.seed}").path
        else:
            run_dir = Path(out) / run_name
            run_dir.mkdir(parents=True, exist_ok=True)  # a sweep may hold its lock already
            if Run(run_dir).status() != "new":
                raise TrainingError(f"{run_dir} already holds a run; resume it or choose another name")
        try:
            opened = _start_run(cfg, data, run_dir)
        except BaseException:
            shutil.rmtree(run_dir, ignore_errors=True)  # a failed start leaves no half-made run behind
            raise
    logger.info(
        f"model: U-Net depth {cfg.model.depth}, activation {activation_label(cfg)}, "
        f"{opened.model.count_params():,} params"
    )
    logger.info(f"run folder: {opened.run_dir}")
    return opened


def _start_run(cfg: Config, data: PreparedData, run_dir: Path) -> _OpenRun:
    """Record the config and split in ``run_dir`` and build a fresh, compiled model."""
    run = Run(run_dir)
    run.save_config(cfg)
    run.save_split(data.train_ids, data.val_ids)
    opened = _OpenRun(run_dir, build_unet(cfg.model, cfg.data.channels))
    if cfg.train.init is not None:
        load_start_weights(opened.model, cfg)
        logger.info(f"starting from the weights of {cfg.train.init}")
    compile_model(opened.model, cfg.train)
    return opened


def _reopen_run(cfg: Config, data: PreparedData, run_dir: Path, checkpoint: Checkpoint | None) -> _OpenRun:
    """The resumed run's last checkpoint, or, if no epoch had finished, a fresh start in its folder."""
    run = Run(run_dir)
    split_path = run.split_file
    if split_path.is_file() and run.split["val"] != data.val_ids:
        raise TrainingError(f"{run_dir}: the data no longer gives the validation split this run used")
    done = checkpoint.epoch if checkpoint else 0
    files.remove_temporaries(run_dir)
    runs.truncate_history(run_dir, done)
    runs.truncate_history(run_dir, done, runs.DIAGNOSTICS)
    if checkpoint is None:
        logger.info(f"{run_dir}: no epoch had finished; restarting it from epoch 1")
        run.kept_model.unlink(missing_ok=True)
        return _start_run(cfg, data, run_dir)
    if not split_path.is_file():
        raise TrainingError(f"{split_path} is missing, so the run's validation images are unknown")
    last = run.last_model
    try:
        model = load_model(last)
    except Exception as exc:  # a truncated or foreign file: Keras raises many types
        why = "truncated, or not a .keras file"
        if zipfile.is_zipfile(last):
            why = f"{type(exc).__name__}: {exc}"
        raise TrainingError(
            f"{last}: the checkpoint cannot be read ({why}); delete {last.parent} "
            "to restart this run from epoch 1, or start a new run"
        ) from exc
    planned = run.config.train.epochs
    if planned != cfg.train.epochs:
        if cfg.train.schedule == "cosine":  # the decay now spans the new length, as if planned so
            model.optimizer.learning_rate = make_schedule(cfg.train)
        change = "extending" if cfg.train.epochs > planned else "shortening"
        logger.info(f"{change} {run_dir} from {planned} to {cfg.train.epochs} epochs")
        run.save_config(cfg)
    logger.info(f"resuming {run_dir} after epoch {done}/{cfg.train.epochs}")
    return _OpenRun(
        run_dir, model, done, checkpoint.best_val_loss, checkpoint.wall_seconds, checkpoint.session_starts
    )


def _callbacks(
    cfg: Config,
    data: PreparedData,
    opened: _OpenRun,
    clock: Callable[[], float],
    sessions: list[int],
    on_first_step: Callable[[], None],
) -> tuple[list[keras.callbacks.Callback], StopOnDivergence]:
    """What runs beside ``fit``: the divergence guard first (every writer checks it), then the history,
    the kept model, the checkpoint and the optional snapshots, schedule, TensorBoard and diagnostics."""
    run = Run(opened.run_dir)
    history = run.history() if opened.done and run.history_file.is_file() else []
    guard = StopOnDivergence({k: history[0][k] for k in ("loss", "val_loss")} if history else None)
    keeper = ModelKeeper(run.kept_model, guard, cfg.train.keep_model, opened.best_val_loss)
    callbacks: list[keras.callbacks.Callback] = [
        *([FreezeEncoder(cfg.train.freeze_encoder_epochs)] if cfg.train.freeze_encoder_epochs else []),
        guard,
        HistoryWriter(run.path, guard),
        keeper,
        ResumeCheckpoint(run.path, guard, keeper, clock, sessions),
        keras.callbacks.LambdaCallback(on_train_batch_end=lambda *_, **__: on_first_step()),
    ]
    if cfg.train.snapshot_every:
        callbacks.append(Snapshots(run.path, cfg.train.snapshot_every, cfg.train.epochs, guard))
    if cfg.train.schedule == "plateau":
        callbacks.append(keras.callbacks.ReduceLROnPlateau("val_loss", factor=0.5, patience=3, min_lr=1e-6))
    if cfg.train.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(run.tensorboard_dir))
    if cfg.train.diagnostics:
        probe = slice(0, cfg.train.batch_size)  # a fixed batch of validation patches
        targets = one_hot_targets(data.val_masks[probe], data.num_classes).numpy()
        callbacks.append(Diagnostics(run.path, data.val_images[probe], targets, guard))
    return callbacks, guard


def _report_stop(cfg: Config, run: Run, guard: StopOnDivergence) -> None:
    """Name why training stopped early, what model is kept, and what to try."""
    kept = (
        f"{run.kept_model} holds the model kept before it (train.keep_model: {cfg.train.keep_model})."
        if run.kept_model.is_file()
        else "No epoch finished, so no model was saved."
    )
    fixes = "a lower train.learning_rate" + ("" if cfg.model.batch_norm else " or model.batch_norm=true")
    logger.warning(f"training stopped: {guard.reason}. {kept} Try {fixes}.")


def _fit_and_summarize(
    cfg: Config,
    data: PreparedData,
    opened: _OpenRun,
    machine: hardware.Machine,
    start: float,
    verbose: int,
    extra: Sequence[keras.callbacks.Callback] = (),
) -> RunResult:
    run, model, done = Run(opened.run_dir), opened.model, opened.done
    sessions = [*opened.session_starts, done + 1]  # this process traces the graph in epoch done + 1

    def clock() -> float:
        """Training seconds so far, over every process that trained this run (a kill loses none)."""
        return opened.elapsed_before + time.perf_counter() - start

    first_step: list[float] = []  # when the first training step finished: start-up cost

    def on_first_step() -> None:
        if not first_step:
            first_step.append(time.perf_counter() - start)

    callbacks, guard = _callbacks(cfg, data, opened, clock, sessions, on_first_step)
    batch = cfg.train.batch_size
    train_ds = train_dataset(
        data, cfg.data, batch, cfg.seed, start_patch=done * cfg.train.steps_per_epoch * batch
    )
    if done < cfg.train.epochs:
        model.fit(
            train_ds,
            validation_data=val_dataset(data, batch),
            epochs=cfg.train.epochs,
            initial_epoch=done,
            steps_per_epoch=cfg.train.steps_per_epoch,
            callbacks=[*callbacks, *extra],
            verbose=verbose,
            shuffle=False,  # the patch stream is already random; this silences Keras's warning
        )
    wall = clock()
    if run.state_file.exists():
        files.write_json(run.state_file, {**files.read_json(run.state_file), "wall_seconds": wall})
    if guard.where is not None:
        _report_stop(cfg, run, guard)
    first = round(first_step[0], 2) if first_step else None  # seconds from train() being called
    summary = write_summary(run.path, cfg, data, model, wall, guard.reason, machine, sessions, first)
    return RunResult(run.path, summary)


def write_summary(
    run_dir: Path,
    cfg: Config,
    data: PreparedData,
    model: keras.Model,
    wall: float,
    stopped: str | None,
    machine: hardware.Machine,
    session_starts: list[int],
    seconds_to_first_step: float | None = None,
) -> Summary:
    run = Run(run_dir)
    rows = run.history() if run.history_file.exists() else []
    finite = [r for r in rows if math.isfinite(r["val_loss"])]
    best = min(finite, key=lambda r: r["val_loss"]) if finite else None
    final = rows[-1] if rows else None
    summary = Summary(
        activation=activation_label(cfg),
        activation_spec=cfg.model.activation,
        data_source=data.source,
        epochs_run=len(rows),
        epochs_planned=cfg.train.epochs,
        best_epoch=best["epoch"] if best else None,
        kept_epoch=KeepRule.kept_epoch(rows, cfg.train.keep_model),
        best_val_loss=best["val_loss"] if best else None,
        best_val_iou=best["val_iou"] if best else None,
        best_val_dice=best["val_dice"] if best else None,
        max_val_iou=max((r["val_iou"] for r in finite), default=None),
        final={k: final[k] for k in runs.HISTORY_COLUMNS if k in final} if final else None,
        stopped_reason=stopped or "completed",
        params=int(model.count_params()),
        wall_seconds=round(wall, 2),
        session_starts=session_starts,
        seconds_to_first_step=seconds_to_first_step,
        train_images=len(data.train_ids),
        val_images=len(data.val_ids),
        val_patches=len(data.val_images),
        streamed=data.streaming,
        train_modalities=dict(Counter(data.train_modalities)),
        train_inverted=sum(data.train_inverted),
        skipped_samples=len(data.skipped),
        skipped=data.skipped,
        seed=cfg.seed,
        init=provenance(cfg),
        machine=machine.record(),
        versions={
            "cellseg": cellseg.__version__,
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "numpy": np.__version__,
        },
    )
    run.save_summary(summary)
    if rows:
        plot_run_history(rows, run.loss_plot, title=f"{summary.activation} — {run_dir.name}")
    return summary

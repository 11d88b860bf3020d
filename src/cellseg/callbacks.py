"""Keras callbacks that write the run folder as training goes: history, checkpoints, NaN guard."""

from __future__ import annotations

import csv
import math
import os
import time
from pathlib import Path
from typing import Any

import keras

from cellseg import runs
from cellseg.models import activation_parameters


class StopOnNaN(keras.callbacks.Callback):
    """Stop at the first non-finite batch loss and remember where, so the trainer can say so."""

    def __init__(self) -> None:
        super().__init__()
        self.where: str | None = None

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)) and self.where is None:
            self.where = f"epoch {self._epoch + 1}, batch {batch + 1}"
            self.model.stop_training = True

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = epoch


class HistoryWriter(keras.callbacks.Callback):
    """Append one history.csv row per finished epoch, with learning rate, time and activation params."""

    def __init__(self, run_dir: Path, nan_guard: StopOnNaN) -> None:
        super().__init__()
        self.path = run_dir / runs.HISTORY
        self.nan_guard = nan_guard

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.nan_guard.where is not None:
            return  # a diverged epoch is reported in summary.json, not logged as if it finished
        logs = logs or {}
        row: dict[str, Any] = {"epoch": epoch + 1}
        for key in runs.METRIC_COLUMNS:
            row[key] = float(logs[key])
        row["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        row["seconds"] = round(time.perf_counter() - self._start, 3)
        row.update(activation_parameters(self.model))
        new = not self.path.exists() or self.path.stat().st_size == 0
        with self.path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)


class ResumeCheckpoint(keras.callbacks.Callback):
    """After each epoch save the full model (weights + optimizer state) and then, last, the epoch count.

    ``state.json`` is written after the model file and atomically, so whatever instant a run is
    killed, the state on disk names an epoch whose model is complete.
    """

    def __init__(self, run_dir: Path, nan_guard: StopOnNaN, best: keras.callbacks.ModelCheckpoint) -> None:
        super().__init__()
        self.run_dir = run_dir
        self.nan_guard = nan_guard
        self.best = best
        (run_dir / runs.LAST_MODEL).parent.mkdir(exist_ok=True)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.nan_guard.where is not None:
            return
        last = self.run_dir / runs.LAST_MODEL
        tmp = last.with_name("last.tmp.keras")
        self.model.save(tmp)
        os.replace(tmp, last)
        runs.write_json(
            self.run_dir / runs.STATE, {"epoch": epoch + 1, "best_val_loss": float(self.best.best)}
        )

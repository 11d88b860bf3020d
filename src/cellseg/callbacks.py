"""Keras callbacks that write the run folder as training goes: history, checkpoints, NaN guard.

Every file is written through :func:`cellseg.runs.atomic_path`: a kill or a full disk at any instant
leaves the previous complete version in place.
"""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path
from typing import Any, Literal

import keras
import numpy as np
import tensorflow as tf

from cellseg import runs
from cellseg.models import activation_layers, activation_parameters


class StopOnNaN(keras.callbacks.Callback):
    """Stop at the first non-finite training or validation loss and remember where, to say so.

    A diverged network can keep a finite (clipped) training loss while its validation loss is NaN, so
    both are watched: such an epoch is neither logged as finished nor checkpointed.
    """

    def __init__(self) -> None:
        super().__init__()
        self.where: str | None = None

    def _check(self, logs: dict | None, key: str, where: str) -> None:
        value = (logs or {}).get(key)
        if value is not None and not math.isfinite(float(value)) and self.where is None:
            self.where = where
            self.model.stop_training = True

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self._check(logs, "loss", f"epoch {self._epoch + 1}, batch {batch + 1}")

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = epoch

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self._check(logs, "val_loss", f"epoch {epoch + 1}, in validation (val_loss)")


class ModelKeeper(keras.callbacks.Callback):
    """Save the model the run keeps (``model.keras``), atomically, so the previous one survives a kill.

    ``keep`` is ``train.keep_model``: ``val_loss`` saves whenever validation loss improves on ``best``;
    ``last`` saves after every finished epoch. ``best`` (the lowest validation loss) is tracked either
    way, for ``summary.json`` and ``--resume``. A diverged epoch is never kept.
    """

    def __init__(
        self,
        path: Path,
        nan_guard: StopOnNaN,
        keep: Literal["val_loss", "last"] = "val_loss",
        best: float = math.inf,
    ) -> None:
        super().__init__()
        self.path, self.nan_guard, self.keep, self.best = path, nan_guard, keep, best

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        loss = float((logs or {}).get("val_loss", math.nan))
        if not math.isfinite(loss) or self.nan_guard.where is not None:
            return
        if self.keep == "last" or loss < self.best:
            with runs.atomic_path(self.path) as tmp:
                self.model.save(tmp)
        self.best = min(self.best, loss)


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
        runs.append_row(self.path, row)


class ResumeCheckpoint(keras.callbacks.Callback):
    """After each epoch save the full model (weights + optimizer state) and then, last, the epoch count.

    ``state.json`` is written after the model file and atomically, so whatever instant a run is
    killed, the state on disk names an epoch whose model is complete.
    """

    def __init__(self, run_dir: Path, nan_guard: StopOnNaN, keeper: ModelKeeper) -> None:
        super().__init__()
        self.run_dir = run_dir
        self.nan_guard = nan_guard
        self.keeper = keeper
        (run_dir / runs.LAST_MODEL).parent.mkdir(exist_ok=True)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.nan_guard.where is not None:
            return
        with runs.atomic_path(self.run_dir / runs.LAST_MODEL) as tmp:
            self.model.save(tmp)
        runs.write_json(
            self.run_dir / runs.STATE, {"epoch": epoch + 1, "best_val_loss": float(self.keeper.best)}
        )


class Snapshots(keras.callbacks.Callback):
    """Keep a copy of the checkpoint every ``every`` epochs (and after the last), to score the model
    as training goes (``benchmarks/bench_quality.py`` draws quality against training time from them).

    Runs after :class:`ResumeCheckpoint`, whose complete ``last.keras`` it copies instead of saving again.
    """

    def __init__(self, run_dir: Path, every: int, epochs: int, nan_guard: StopOnNaN) -> None:
        super().__init__()
        self.run_dir, self.every, self.epochs, self.nan_guard = run_dir, every, epochs, nan_guard

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        done = epoch + 1
        if self.nan_guard.where is None and (done % self.every == 0 or done == self.epochs):
            with runs.atomic_path(runs.snapshot_path(self.run_dir, done)) as tmp:
                shutil.copyfile(self.run_dir / runs.LAST_MODEL, tmp)


class Diagnostics(keras.callbacks.Callback):
    """Per epoch and hidden layer, on one fixed validation batch: what the activations are doing.

    ``<layer>.dead``: share of channels whose output is exactly 0 everywhere on the batch (dying
    ReLUs); ``<layer>.mean`` / ``.std``: the activations' statistics (SELU's self-normalisation keeps them
    near 0 / 1); ``<conv>.grad_norm``: the loss gradient's norm at each convolution kernel (vanishing
    gradients show as a collapse towards the input). Inference-mode batch norm, so the probe does not
    disturb training. Written to ``diagnostics.csv``; one forward and backward pass per epoch.
    """

    def __init__(self, run_dir: Path, images: np.ndarray, targets: np.ndarray, nan_guard: StopOnNaN) -> None:
        super().__init__()
        self.path = run_dir / runs.DIAGNOSTICS
        self.images, self.targets = tf.constant(images), tf.constant(targets)
        self.nan_guard = nan_guard

    def on_train_begin(self, logs: dict | None = None) -> None:
        if getattr(self, "_traced_for", None) is self.model:
            return  # fit called again on the same model: keep the traced probe
        self._traced_for = self.model
        layers = activation_layers(self.model)
        self.names = [layer.name for layer in layers]
        outputs = [*(layer.output for layer in layers), self.model.outputs[0]]
        probe = keras.Model(self.model.inputs, outputs)
        convs = [
            layer
            for layer in self.model.layers
            if isinstance(layer, keras.layers.Conv2D | keras.layers.Conv2DTranspose)
        ]
        self.kernel_names = [layer.name for layer in convs]

        @tf.function  # one traced graph: an eager probe stalls the thread pools for seconds per epoch
        def measure() -> tuple[tf.Tensor, ...]:
            with tf.GradientTape() as tape:
                *acts, pred = probe(self.images, training=False)
                loss = self.model.loss(self.targets, pred)
            grads = tape.gradient(loss, [layer.kernel for layer in convs])
            acts = [tf.cast(a, tf.float32) for a in acts]
            dead = [
                tf.cast(tf.reduce_all(tf.equal(a, 0), axis=[0, 1, 2]), tf.float32) for a in acts
            ]  # channels
            stats = [
                tf.stack([tf.reduce_mean(d), tf.reduce_mean(a), tf.math.reduce_std(a)])
                for d, a in zip(dead, acts, strict=True)
            ]
            dead_fraction = tf.add_n([tf.reduce_sum(d) for d in dead]) / sum(int(a.shape[-1]) for a in acts)
            return tf.stack(stats), tf.stack([tf.norm(g) for g in grads]), dead_fraction

        self.measure = measure

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.nan_guard.where is not None:
            return
        stats, norms, dead_fraction = (t.numpy() for t in self.measure())
        row: dict[str, Any] = {"epoch": epoch + 1}
        for name, (dead, mean, std) in zip(self.names, stats, strict=True):
            row.update({f"{name}.dead": float(dead), f"{name}.mean": float(mean), f"{name}.std": float(std)})
        row.update({f"{name}.grad_norm": float(n) for name, n in zip(self.kernel_names, norms, strict=True)})
        row["dead_fraction"] = float(dead_fraction)
        runs.append_row(self.path, row)

"""Keras callbacks that write the run folder as training goes: history, checkpoints, NaN guard."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from cellseg import runs
from cellseg.models import activation_layers, activation_parameters


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
        runs.append_row(self.path, row)


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

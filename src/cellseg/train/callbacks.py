"""Keras callbacks that write the run folder as training goes: history, checkpoints, divergence guard.

Every file is written through :func:`cellseg.core.files.atomic_path`: a kill or a full disk at any instant
leaves the previous complete version in place.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import keras
import numpy as np
import tensorflow as tf

from cellseg.core import files, runs
from cellseg.model.unet import activation_layers, activation_parameters


class StopOnDivergence(keras.callbacks.Callback):
    """Stop at the first diverged loss, remember where and why: the run then fails, keeping its last
    sound model.

    Diverged means non-finite (NaN / inf) after any batch, or, at an epoch's end, a training or validation
    loss over ``FACTOR`` times the run's first epoch's (the first epoch's counted as at least 1 and at most
    ``FACTOR``, so over 1e6 always is): a cross-entropy plus Dice loss of a sound network stays within a
    few times its first value, while a blown-up one (SGD at a huge learning rate) reaches 1e18 and stays
    finite. A diverged network can keep a finite training loss
    while its validation loss is NaN, so both are watched; a diverged epoch is neither logged as finished
    nor checkpointed nor kept.
    """

    FACTOR = 1000.0

    def __init__(self, first_epoch: dict[str, float] | None = None) -> None:
        """``first_epoch``: the losses of epoch 1 when resuming (else they are read when it ends)."""
        super().__init__()
        self.where: str | None = None
        self.reason: str | None = None
        self.first = dict(first_epoch or {})

    def _stop(self, where: str, reason: str) -> None:
        if self.where is None:
            self.where, self.reason = where, reason
            self.model.stop_training = True

    def _check_finite(self, logs: dict | None, key: str, where: str) -> None:
        value = (logs or {}).get(key)
        if value is not None and not math.isfinite(float(value)):
            self._stop(where, f"non-finite {key} at {where}")

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self._check_finite(logs, "loss", f"epoch {self._epoch + 1}, batch {batch + 1}")

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = epoch

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        self._check_finite(logs, "val_loss", f"epoch {epoch + 1}, in validation")
        for key in ("loss", "val_loss"):
            if self.where is not None or key not in logs:
                continue
            value = float(logs[key])
            reference = min(max(self.first.setdefault(key, value), 1.0), self.FACTOR)
            if value > self.FACTOR * reference:
                why = (
                    f"over {self.FACTOR**2:g}, far beyond a sound loss"
                    if reference == self.FACTOR or epoch == 0
                    else f"over {self.FACTOR:g}x the first epoch's {self.first[key]:.3g}"
                )
                self._stop(f"epoch {epoch + 1}", f"diverged at epoch {epoch + 1}: {key} {value:.3g}, {why}")


class FreezeEncoder(keras.callbacks.Callback):
    """Train the decoder and head only for the first ``epochs`` epochs (``train.freeze_encoder_epochs``),
    then every layer.

    The encoder's layers (``enc*``, ``bottleneck*``: :func:`cellseg.model.unet.build_unet`'s names) are
    made untrainable while the training step is traced, so their weights and batch-norm statistics stay
    as they started; the optimiser is built for every variable first, so unfreezing needs no new one.
    Between epochs every layer is trainable again, so each model saved after an epoch (kept, checkpoint,
    snapshot) is a whole, trainable model and a resumed run's optimiser state matches it. Goes first
    among the callbacks: its ``on_epoch_end`` runs before those saves.
    """

    ENCODER = ("enc", "bottleneck")

    def __init__(self, epochs: int) -> None:
        super().__init__()
        self.epochs = epochs
        self._traced_frozen = False

    def _set(self, trainable: bool) -> None:
        for layer in self.model.layers:
            if layer.name.startswith(self.ENCODER):
                layer.trainable = trainable

    def on_train_begin(self, logs: dict | None = None) -> None:
        if not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)  # every variable, frozen or not

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if epoch < self.epochs:
            self._set(False)  # the step is traced at the first batch, with these flags
            self._traced_frozen = True
        elif self._traced_frozen:  # the first epoch of every layer: trace the step again
            self._set(True)
            self.model.make_train_function(force=True)
            self._traced_frozen = False

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self._set(True)  # what the savers after this callback write is the whole model


class KeepRule:
    """``train.keep_model``, the one place it is decided: which epoch ``model.keras`` holds.

    ``val_loss`` keeps an epoch whose validation loss improves on the lowest so far; ``last`` keeps every
    finished epoch. A diverged epoch (non-finite validation loss) is never kept. :class:`ModelKeeper`
    applies it as training goes, and the run summary replays the history through it.
    """

    def __init__(self, keep: Literal["val_loss", "last"] = "val_loss", best: float = math.inf) -> None:
        self.keep, self.best = keep, best

    def offer(self, val_loss: float) -> bool:
        """Whether the epoch with this validation loss becomes the kept one (and track the lowest)."""
        if not math.isfinite(val_loss):
            return False
        keeps = self.keep == "last" or val_loss < self.best
        self.best = min(self.best, val_loss)
        return keeps

    @classmethod
    def kept_epoch(cls, rows: list[dict[str, float]], keep: Literal["val_loss", "last"]) -> int | None:
        """The epoch a finished history's kept model holds."""
        rule, kept = cls(keep), None
        for row in rows:
            if rule.offer(row["val_loss"]):
                kept = int(row["epoch"])
        return kept


class ModelKeeper(keras.callbacks.Callback):
    """Save the model :class:`KeepRule` keeps (``model.keras``), atomically, so the previous one survives
    a kill. The lowest validation loss (``best``) is tracked for ``summary.json`` and ``--resume``."""

    def __init__(
        self,
        path: Path,
        guard: StopOnDivergence,
        keep: Literal["val_loss", "last"] = "val_loss",
        best: float = math.inf,
    ) -> None:
        super().__init__()
        self.path, self.guard, self.rule = path, guard, KeepRule(keep, best)

    @property
    def best(self) -> float:
        return self.rule.best

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.guard.where is not None:
            return
        if self.rule.offer(float((logs or {}).get("val_loss", math.nan))):
            with files.atomic_path(self.path) as tmp:
                self.model.save(tmp)


class HistoryWriter(keras.callbacks.Callback):
    """Append one history.csv row per finished epoch, with learning rate, time and activation params."""

    def __init__(self, run_dir: Path, guard: StopOnDivergence) -> None:
        super().__init__()
        self.path = runs.Run(run_dir).history_file
        self.guard = guard

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.guard.where is not None:
            return  # a diverged epoch is reported in summary.json, not logged as if it finished
        logs = logs or {}
        row: dict[str, Any] = {"epoch": epoch + 1}
        for key in runs.METRIC_COLUMNS:
            row[key] = float(logs[key])
        row["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        row["seconds"] = round(time.perf_counter() - self._start, 3)
        row.update(activation_parameters(self.model))
        files.append_row(self.path, row)


class ResumeCheckpoint(keras.callbacks.Callback):
    """After each epoch save the full model (weights + optimizer state) and then, last, the epoch count.

    ``state.json`` is written after the model file and atomically, so whatever instant a run is
    killed, the state on disk names an epoch whose model is complete. It also keeps the training time so
    far (``clock()``) and the first epoch of each process, so a kill loses neither.
    """

    def __init__(
        self,
        run_dir: Path,
        guard: StopOnDivergence,
        keeper: ModelKeeper,
        clock: Callable[[], float] = lambda: 0.0,
        session_starts: list[int] | None = None,
    ) -> None:
        super().__init__()
        self.run = runs.Run(run_dir)
        self.guard = guard
        self.keeper = keeper
        self.clock = clock
        self.session_starts = session_starts or [1]
        self.run.last_model.parent.mkdir(exist_ok=True)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.guard.where is not None:
            return
        with files.atomic_path(self.run.last_model) as tmp:
            self.model.save(tmp)
        state = {
            "epoch": epoch + 1,
            "best_val_loss": float(self.keeper.best),
            "wall_seconds": round(self.clock(), 2),
            "session_starts": self.session_starts,
        }
        files.write_json(self.run.state_file, state)


class Snapshots(keras.callbacks.Callback):
    """Keep a copy of the checkpoint every ``every`` epochs (and after the last), to score the model
    as training goes (``benchmarks/bench_quality.py`` draws quality against training time from them).

    Runs after :class:`ResumeCheckpoint`, whose complete ``last.keras`` it copies instead of saving again.
    """

    def __init__(self, run_dir: Path, every: int, epochs: int, guard: StopOnDivergence) -> None:
        super().__init__()
        self.run, self.every, self.epochs, self.guard = runs.Run(run_dir), every, epochs, guard

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        done = epoch + 1
        if self.guard.where is None and (done % self.every == 0 or done == self.epochs):
            with files.atomic_path(self.run.snapshot(done)) as tmp:
                shutil.copyfile(self.run.last_model, tmp)


class Diagnostics(keras.callbacks.Callback):
    """Per epoch and hidden layer, on one fixed validation batch: what the activations are doing.

    ``<layer>.dead``: share of channels whose output is exactly 0 everywhere on the batch (dying
    ReLUs); ``<layer>.mean`` / ``.std``: the activations' statistics (SELU's self-normalisation keeps them
    near 0 / 1); ``<conv>.grad_norm``: the loss gradient's norm at each convolution kernel (vanishing
    gradients show as a collapse towards the input). Inference-mode batch norm, so the probe does not
    disturb training. Written to ``diagnostics.csv``; one forward and backward pass per epoch.
    """

    def __init__(
        self, run_dir: Path, images: np.ndarray, targets: np.ndarray, guard: StopOnDivergence
    ) -> None:
        super().__init__()
        self.path = runs.Run(run_dir).diagnostics_file
        self.images, self.targets = tf.constant(images), tf.constant(targets)
        self.guard = guard

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

        # traced once, as the steps are: an eager probe of a real run stalls the thread pools for seconds
        # an epoch; a run stepping eagerly (train.run_eagerly) probes eagerly too, without the trace
        self.measure = measure if self.model.run_eagerly else tf.function(measure)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.guard.where is not None:
            return
        stats, norms, dead_fraction = (t.numpy() for t in self.measure())
        row: dict[str, Any] = {"epoch": epoch + 1}
        for name, (dead, mean, std) in zip(self.names, stats, strict=True):
            row.update({f"{name}.dead": float(dead), f"{name}.mean": float(mean), f"{name}.std": float(std)})
        row.update({f"{name}.grad_norm": float(n) for name, n in zip(self.kernel_names, norms, strict=True)})
        row["dead_fraction"] = float(dead_fraction)
        files.append_row(self.path, row)

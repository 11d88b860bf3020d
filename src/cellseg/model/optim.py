"""How a model is optimised: the learning-rate schedule, the optimiser, compilation, the distribution
strategy and the seeding that makes a run repeat exactly."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf

from cellseg.core.config import Config, TrainConfig
from cellseg.model.losses import BinaryDice, ForegroundIoU, make_loss


def make_schedule(cfg: TrainConfig) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """The learning rate over the whole planned run: constant, or cosine decay over epochs x steps."""
    if cfg.schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(
            cfg.learning_rate, cfg.epochs * cfg.steps_per_epoch, alpha=0.05
        )
    return cfg.learning_rate


#: Each optimiser ``train.optimizer`` names (the config's :data:`~cellseg.core.config.OPTIMIZERS`; a test
#: keeps the two alike), made from the learning rate (or schedule) and the train config.
OPTIMIZER_MAKERS: dict[str, Callable[[Any, TrainConfig], keras.optimizers.Optimizer]] = {
    "sgd": lambda lr, cfg: keras.optimizers.SGD(lr),
    "sgd_momentum": lambda lr, cfg: keras.optimizers.SGD(lr, momentum=cfg.momentum),
    "nesterov": lambda lr, cfg: keras.optimizers.SGD(lr, momentum=cfg.momentum, nesterov=True),
    "adagrad": lambda lr, cfg: keras.optimizers.Adagrad(lr),
    "rmsprop": lambda lr, cfg: keras.optimizers.RMSprop(lr),
    "adam": lambda lr, cfg: keras.optimizers.Adam(lr),
    "adamw": lambda lr, cfg: keras.optimizers.AdamW(lr, weight_decay=cfg.weight_decay),
}


def make_optimizer(cfg: TrainConfig) -> keras.optimizers.Optimizer:
    """The optimizer named in the config, with the learning rate of :func:`make_schedule`."""
    return OPTIMIZER_MAKERS[cfg.optimizer](make_schedule(cfg), cfg)


def compile_model(model: keras.Model, cfg: TrainConfig) -> None:
    model.compile(
        optimizer=make_optimizer(cfg),
        loss=make_loss(cfg.loss),
        metrics=[ForegroundIoU(), BinaryDice()],
        jit_compile=cfg.jit_compile,
        run_eagerly=cfg.run_eagerly,
    )


def make_strategy(cfg: TrainConfig) -> tf.distribute.Strategy:
    """The ``tf.distribute`` strategy of ``train.distribute``.

    ``mirrored`` replicates the model on every GPU of this machine (on a machine without GPUs, on every
    logical CPU device, which is how the tests exercise it); ``multi_worker`` spans the machines listed in
    the ``TF_CONFIG`` environment variable. The batch size is the global batch, split between replicas.
    """
    if cfg.distribute == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    if cfg.distribute == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()  # the default: no distribution


def seed_everything(cfg: Config) -> None:
    """Seed Keras, NumPy and Python; TensorFlow's op determinism on or off as ``train.deterministic``."""
    keras.utils.set_random_seed(cfg.seed)
    if cfg.train.deterministic:
        tf.config.experimental.enable_op_determinism()
    else:  # determinism is process-wide: an earlier run in this process may have switched it on
        from tensorflow.python.framework import config as tf_config  # the only way back off (TF 2.9+)

        tf_config.disable_op_determinism()

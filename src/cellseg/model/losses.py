"""Segmentation loss and foreground metrics, registered so saved models reload with their compile state."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from cellseg.core.config import LOSSES
from cellseg.data.hover import HOVER_CHANNELS

register = keras.saving.register_keras_serializable(package="cellseg")


@register
class BCEDiceLoss(keras.losses.Loss):
    """Cross-entropy plus soft Dice loss, the usual pairing for nucleus masks.

    Cross-entropy gives well-behaved per-pixel gradients; the Dice term counters the imbalance of sparse
    nuclei. ``bce_weight`` / ``dice_weight`` select either alone. A one-channel (sigmoid) output gets
    binary cross-entropy and the foreground Dice; a softmax output (background / interior / boundary)
    gets categorical cross-entropy and the mean Dice of its non-background classes, so the thin
    boundary class is not drowned by the background. A HoVer output (three classes and two maps, see
    :mod:`cellseg.data.hover`) adds HoVer-Net's map losses: the maps' mean squared error everywhere, plus
    twice the squared error of their gradients (horizontal map along x, vertical along y) inside nuclei,
    which is what makes the maps jump where nuclei touch.
    """

    def __init__(self, bce_weight: float = 1.0, dice_weight: float = 1.0, name: str = "bce_dice", **kw: Any):
        super().__init__(name=name, **kw)
        self.bce_weight = bce_weight
        self.dice_weight = dice_weight

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        y_true = tf.cast(y_true, y_pred.dtype)
        loss = tf.zeros(tf.shape(y_pred)[:1], y_pred.dtype)
        if y_pred.shape[-1] == HOVER_CHANNELS:
            loss += map_loss(y_true[..., 3:], y_pred[..., 3:], 1.0 - y_true[..., 0])
            y_true, y_pred = y_true[..., :3], y_pred[..., :3]
        binary = y_pred.shape[-1] == 1
        if self.bce_weight:
            ce = (
                keras.losses.binary_crossentropy(y_true, y_pred)  # mean over channels -> (B, H, W)
                if binary
                else keras.losses.categorical_crossentropy(y_true, y_pred)
            )
            loss += self.bce_weight * tf.reduce_mean(ce, axis=[1, 2])
        if self.dice_weight:
            if not binary:  # drop the background channel
                y_true, y_pred = y_true[..., 1:], y_pred[..., 1:]
            inter = tf.reduce_sum(y_true * y_pred, [1, 2])
            total = tf.reduce_sum(y_true + y_pred, [1, 2])
            dice = (2.0 * inter + 1.0) / (total + 1.0)  # (B, classes)
            loss += self.dice_weight * (1.0 - tf.reduce_mean(dice, axis=-1))
        return loss

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "bce_weight": self.bce_weight, "dice_weight": self.dice_weight}


def map_loss(true: tf.Tensor, pred: tf.Tensor, nuclei: tf.Tensor) -> tf.Tensor:
    """HoVer-Net's loss of (B, H, W, 2) maps per sample: MSE + 2 x MSE of the gradients in ``nuclei``."""
    mse = tf.reduce_mean(tf.square(pred - true), axis=[1, 2, 3])
    # sobel_edges: (B, H, W, 2 maps, [d/dy, d/dx]); the horizontal map along x, the vertical along y
    grad_true, grad_pred = tf.image.sobel_edges(true), tf.image.sobel_edges(pred)
    along = tf.stack(
        [grad_pred[..., 0, 1] - grad_true[..., 0, 1], grad_pred[..., 1, 0] - grad_true[..., 1, 0]], -1
    )
    inside = tf.reduce_sum(nuclei[..., None] * tf.square(along), axis=[1, 2, 3])
    msge = inside / (2.0 * tf.reduce_sum(nuclei, axis=[1, 2]) + 1e-6)
    return mse + 2.0 * msge


def make_loss(name: str) -> BCEDiceLoss:
    bce, dice = LOSSES[name]
    return BCEDiceLoss(bce, dice, name=name)


def foreground(y: tf.Tensor) -> tf.Tensor:
    """Foreground probability (..., 1) of a model output or target: itself, or 1 - background."""
    return y if y.shape[-1] == 1 else 1.0 - y[..., :1]


@register
class ForegroundIoU(keras.metrics.BinaryIoU):
    """Pixel IoU of the foreground, accumulated over all pixels of the epoch (not averaged per batch).

    Works for both heads: a softmax output's foreground is everything but the background class.
    """

    def __init__(self, threshold: float = 0.5, name: str = "iou", dtype: Any = None, **kw: Any) -> None:
        kw.pop("target_class_ids", None)
        super().__init__(target_class_ids=[1], threshold=threshold, name=name, dtype=dtype, **kw)

    def update_state(self, y_true: tf.Tensor, y_pred: tf.Tensor, sample_weight: Any = None) -> Any:
        return super().update_state(foreground(y_true), foreground(y_pred), sample_weight)


@register
class BinaryDice(ForegroundIoU):
    """Foreground Dice = 2 TP / (2 TP + FP + FN), from the same confusion counts as :class:`ForegroundIoU`."""

    def __init__(self, threshold: float = 0.5, name: str = "dice", dtype: Any = None, **kw: Any) -> None:
        super().__init__(threshold=threshold, name=name, dtype=dtype, **kw)

    def result(self) -> tf.Tensor:
        iou = super().result()
        return 2.0 * iou / (1.0 + iou)

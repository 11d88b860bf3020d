"""Segmentation loss and foreground metrics, registered so saved models reload with their compile state."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

register = keras.saving.register_keras_serializable(package="cellseg")


@register
class BCEDiceLoss(keras.losses.Loss):
    """Binary cross-entropy plus soft Dice loss, the usual pairing for nucleus masks.

    BCE gives well-behaved per-pixel gradients; the Dice term counters the foreground/background
    imbalance of sparse nuclei. ``bce_weight`` / ``dice_weight`` select either alone.
    """

    def __init__(self, bce_weight: float = 1.0, dice_weight: float = 1.0, name: str = "bce_dice", **kw: Any):
        super().__init__(name=name, **kw)
        self.bce_weight = bce_weight
        self.dice_weight = dice_weight

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        y_true = tf.cast(y_true, y_pred.dtype)
        loss = tf.zeros(tf.shape(y_pred)[:1], y_pred.dtype)
        if self.bce_weight:
            bce = keras.losses.binary_crossentropy(y_true, y_pred)  # mean over channels -> (B, H, W)
            loss += self.bce_weight * tf.reduce_mean(bce, axis=[1, 2])
        if self.dice_weight:
            axes = [1, 2, 3]
            inter = tf.reduce_sum(y_true * y_pred, axes)
            total = tf.reduce_sum(y_true + y_pred, axes)
            loss += self.dice_weight * (1.0 - (2.0 * inter + 1.0) / (total + 1.0))
        return loss

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "bce_weight": self.bce_weight, "dice_weight": self.dice_weight}


LOSS_WEIGHTS = {"bce_dice": (1.0, 1.0), "bce": (1.0, 0.0), "dice": (0.0, 1.0)}


def make_loss(name: str) -> BCEDiceLoss:
    bce, dice = LOSS_WEIGHTS[name]
    return BCEDiceLoss(bce, dice, name=name)


def foreground_iou(threshold: float = 0.5) -> keras.metrics.Metric:
    """Pixel IoU of the foreground, accumulated over all pixels of the epoch (not averaged per batch)."""
    return keras.metrics.BinaryIoU(target_class_ids=[1], threshold=threshold, name="iou")


@register
class BinaryDice(keras.metrics.BinaryIoU):
    """Foreground Dice = 2 TP / (2 TP + FP + FN), from the same confusion counts as :func:`foreground_iou`."""

    def __init__(self, threshold: float = 0.5, name: str = "dice", dtype: Any = None, **kw: Any) -> None:
        kw.pop("target_class_ids", None)
        super().__init__(target_class_ids=[1], threshold=threshold, name=name, dtype=dtype, **kw)

    def result(self) -> tf.Tensor:
        iou = super().result()
        return 2.0 * iou / (1.0 + iou)

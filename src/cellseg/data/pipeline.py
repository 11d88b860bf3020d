"""Turn samples into training and validation ``tf.data`` pipelines.

Training patches are drawn with stateless random ops keyed by (seed, patch number): the stream is
reproducible, and a resumed run picks it up at the exact patch where it stopped. Validation uses a fixed
grid of patches over each validation image, so val_loss is comparable between epochs and between runs.
The split is by image, never by patch, so no validation pixel is ever seen in training.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf
from skimage import measure

from cellseg.config import DataConfig
from cellseg.data.augment import PatchAugmenter
from cellseg.data.sample import DataError, Sample, normalize, to_channels


@dataclass
class PreparedData:
    """Normalised arrays ready for the pipelines, plus what the run records about them."""

    train_images: np.ndarray  # (N, Hmax, Wmax, C) float32, zero-padded past each image's own size
    train_masks: np.ndarray  # (N, Hmax, Wmax, 1) uint8 foreground
    train_shapes: np.ndarray  # (N, 2) int32 valid (H, W) of each image
    train_centroids: np.ndarray  # (K, 2) int32 nucleus centres (y, x) of all training images, image by image
    train_centroid_offsets: np.ndarray  # (N + 1,) int32: image i's centres are rows offsets[i]:offsets[i+1]
    val_images: np.ndarray  # (M, P, P, C) fixed validation patches
    val_masks: np.ndarray  # (M, P, P, 1)
    source: str
    train_ids: list[str] = field(default_factory=list)
    val_ids: list[str] = field(default_factory=list)


def split_samples(samples: list[Sample], val_fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Seeded split by image; at least one image on each side."""
    if len(samples) < 2:
        raise DataError(
            f"need at least 2 annotated images to split into train and validation, got {len(samples)}"
        )
    order = np.random.default_rng(seed).permutation(len(samples))
    n_val = min(len(samples) - 1, max(1, round(len(samples) * val_fraction)))
    val = sorted(order[:n_val])
    train = sorted(order[n_val:])
    return [samples[i] for i in train], [samples[i] for i in val]


def _pad_to(array: np.ndarray, size: int) -> np.ndarray:
    """Reflect-pad the first two axes up to ``size`` where smaller (tiny images still give full patches)."""
    ph, pw = max(0, size - array.shape[0]), max(0, size - array.shape[1])
    if not ph and not pw:
        return array
    pad = [(0, ph), (0, pw)] + [(0, 0)] * (array.ndim - 2)
    return np.pad(array, pad, mode="reflect" if min(array.shape[:2]) > 1 else "edge")


def _arrays(sample: Sample, channels: int, patch: int) -> tuple[np.ndarray, np.ndarray]:
    image = normalize(to_channels(sample.image, channels, sample.id))
    if image.shape[:2] != sample.labels.shape:
        raise DataError(f"{sample.id}: mask size {sample.labels.shape} differs from image {image.shape[:2]}")
    return _pad_to(image, patch), _pad_to(sample.foreground[..., None], patch)


def grid_starts(length: int, patch: int) -> list[int]:
    """Patch offsets covering [0, length) with the last patch flush with the end."""
    starts = list(range(0, max(1, length - patch + 1), patch))
    if starts[-1] + patch < length:
        starts.append(length - patch)
    return starts


def prepare(train: list[Sample], val: list[Sample], channels: int, patch: int, source: str) -> PreparedData:
    pairs = [_arrays(s, channels, patch) for s in train]
    shapes = np.array([img.shape[:2] for img, _ in pairs], np.int32)
    hmax, wmax = shapes.max(axis=0)
    images = np.zeros((len(pairs), hmax, wmax, channels), np.float32)
    masks = np.zeros((len(pairs), hmax, wmax, 1), np.uint8)
    for i, (img, msk) in enumerate(pairs):
        images[i, : img.shape[0], : img.shape[1]] = img
        masks[i, : msk.shape[0], : msk.shape[1]] = msk
    centres = [np.round([r.centroid for r in measure.regionprops(s.labels)]).reshape(-1, 2) for s in train]
    offsets = np.cumsum([0] + [len(c) for c in centres]).astype(np.int32)
    centroids = np.concatenate([*centres, np.zeros((1, 2))]).astype(np.int32)  # one spare row: never empty
    vx, vy = [], []
    for s in val:
        img, msk = _arrays(s, channels, patch)
        for y in grid_starts(img.shape[0], patch):
            for x in grid_starts(img.shape[1], patch):
                vx.append(img[y : y + patch, x : x + patch])
                vy.append(msk[y : y + patch, x : x + patch])
    return PreparedData(
        images,
        masks,
        shapes,
        centroids,
        offsets,
        np.stack(vx),
        np.stack(vy),
        source,
        [s.id for s in train],
        [s.id for s in val],
    )


def train_dataset(
    data: PreparedData, cfg: DataConfig, batch_size: int, seed: int, start_patch: int = 0
) -> tf.data.Dataset:
    """Endless stream of augmented (image, foreground) patch batches, starting at patch ``start_patch``.

    A share ``cfg.foreground_bias`` of the patches is centred (with jitter) on a random nucleus of the
    chosen image; the rest are placed uniformly.
    """
    patch = cfg.patch_size
    images = tf.constant(data.train_images)
    masks = tf.constant(data.train_masks)
    shapes = tf.constant(data.train_shapes)
    centroids = tf.constant(data.train_centroids)
    offsets = tf.constant(data.train_centroid_offsets)
    n = len(data.train_images)
    augmenter = PatchAugmenter(cfg.augment, seed)
    channels = data.train_images.shape[-1]

    def place(
        u_uniform: tf.Tensor, length: tf.Tensor, centre: tf.Tensor, u_jitter: tf.Tensor, biased: tf.Tensor
    ):
        uniform = tf.cast(u_uniform * tf.cast(length - patch + 1, tf.float32), tf.int32)
        jitter = tf.cast((u_jitter - 0.5) * patch / 2, tf.int32)
        centred = tf.clip_by_value(centre - patch // 2 + jitter, 0, length - patch)
        return tf.where(biased, centred, uniform)

    def sample(i: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        key = tf.stack([tf.constant(seed, tf.int64), i])
        u = tf.random.stateless_uniform([9], seed=key)
        k = tf.minimum(tf.cast(u[0] * n, tf.int32), n - 1)
        h, w = shapes[k][0], shapes[k][1]
        count = offsets[k + 1] - offsets[k]
        biased = (u[5] < cfg.foreground_bias) & (count > 0)
        centre = centroids[
            offsets[k] + tf.minimum(tf.cast(u[6] * tf.cast(count, tf.float32), tf.int32), count)
        ]
        y = place(u[1], h, centre[0], u[7], biased)
        x = place(u[2], w, centre[1], u[8], biased)
        img = images[k, y : y + patch, x : x + patch]
        msk = masks[k, y : y + patch, x : x + patch]
        if cfg.augment.dihedral:  # rot90 x flip covers all 8 symmetries of the square
            both = tf.concat([img, tf.cast(msk, tf.float32)], axis=-1)
            both = tf.image.rot90(both, tf.cast(u[3] * 4, tf.int32) % 4)
            both = tf.cond(u[4] < 0.5, lambda: tf.reverse(both, [1]), lambda: both)
            img, msk = both[..., :-1], tf.cast(both[..., -1:], tf.uint8)
        if augmenter.enabled:
            img, msk = tf.numpy_function(augmenter, [img, msk, i], [tf.float32, tf.uint8], stateful=False)
            img.set_shape((patch, patch, channels))
            msk.set_shape((patch, patch, 1))
        return img, tf.cast(msk, tf.float32)

    ds = tf.data.Dataset.range(start_patch, np.iinfo(np.int64).max)
    ds = ds.map(sample, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def val_dataset(data: PreparedData, batch_size: int) -> tf.data.Dataset:
    masks = data.val_masks.astype(np.float32)
    return tf.data.Dataset.from_tensor_slices((data.val_images, masks)).batch(batch_size).cache()

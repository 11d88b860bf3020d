"""Turn samples into training and validation ``tf.data`` pipelines.

Training patches are drawn with stateless random ops keyed by (seed, patch number): the stream is
reproducible, and a resumed run picks it up at the exact patch where it stopped. Validation uses a fixed
grid of patches over each validation image, so val_loss is comparable between epochs and between runs.
The split is by image, never by patch, so no validation pixel is ever seen in training.
"""

from __future__ import annotations

import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import tensorflow as tf
from skimage import measure

from cellseg.core.config import DataConfig, FoldConfig
from cellseg.core.parallel import cpu_budget
from cellseg.data.augment import NOT_STAINED, STAINED, STAINED_INVERTED, PatchAugmenter
from cellseg.data.hover import patch_maps
from cellseg.data.preprocessing import Preprocessing, modality
from cellseg.data.sample import DataError, Sample, SampleRef, image_id, source_of, targets
from cellseg.data.scale import annotated_factor, resize_labels
from cellseg.data.tiles import grid_starts, pad_to

T = TypeVar("T", Sample, SampleRef)

#: How training images are held in memory (see :class:`PreparedData`).
TRAIN_DTYPE = np.float16

#: Batches made ahead: fixed, because tf.data's autotuning is off (see :func:`without_autotune`); patches
#: are made by :func:`cellseg.core.parallel.cpu_budget` threads. The pipeline still makes patches far faster
#: than training uses them.
PREFETCH_BATCHES = 4


def without_autotune(ds: tf.data.Dataset) -> tf.data.Dataset:
    """The dataset with tf.data's autotuning switched off.

    Autotuning runs a model thread per iterator whose optimisation period doubles up to a minute, and
    deleting the iterator waits for that thread: at the end of ``fit`` the training iterator took up to
    a minute to go (TensorFlow 2.21; ``benchmarks/bench_teardown.py``), a tenth of the 10-minute recipe.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.with_options(options)


@dataclass
class PreparedData:
    """What the pipelines need, plus what the run records about the data.

    Training images are either held in memory or, when streaming, re-read from ``train_refs`` as
    training goes; shapes, nucleus centres and modalities are known up front in both cases. In memory,
    images of any mix of sizes are stored back to back in one flat buffer (``train_pixels``, image i at
    rows ``train_offsets[i]:train_offsets[i + 1]``), never padded to the largest one, in float16: half
    the memory, and its rounding (at most 2.4e-4 on [0, 1]) is below one grey level of an 8-bit image.
    """

    train_shapes: np.ndarray  # (N, 2) int32 valid (H, W) of each image (after padding to the patch size)
    train_centroids: np.ndarray  # (K + 1, 2) int32 nucleus centres (y, x), image by image, plus a spare row
    train_centroid_offsets: np.ndarray  # (N + 1,) int32: image i's centres are rows offsets[i]:offsets[i+1]
    val_images: np.ndarray  # (M, P, P, C) fixed validation patches
    val_masks: np.ndarray  # (M, P, P, T) uint8 targets (see cellseg.data.sample.targets)
    source: str
    train_ids: list[str]
    val_ids: list[str]
    train_pixels: np.ndarray | None = None  # (sum of H x W, C) float16 network inputs, image after image
    train_target_pixels: np.ndarray | None = None  # (sum of H x W, T) uint8 targets, the same way
    train_offsets: np.ndarray | None = None  # (N + 1,) int64 first row of each image in the two buffers
    train_modalities: list[str] = field(default_factory=list)  # each training image's modality
    train_inverted: list[bool] = field(default_factory=list)  # each training image's Preprocessing.inverts
    train_factors: list[float] = field(default_factory=list)  # each training image's zoom (data.nucleus_size)
    train_refs: list[SampleRef] = field(default_factory=list)  # streaming: where to re-read the images
    train_targets: list[np.ndarray] = field(default_factory=list)  # streaming: (H, W, T) targets
    skipped: list[dict[str, str]] = field(default_factory=list)  # bad samples skipped: id and reason
    num_classes: int = 1  # 1: masks are foreground 0/1; 3: background / interior / boundary

    @property
    def streaming(self) -> bool:
        return self.train_pixels is None

    def train_image(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Training image ``i`` held in memory and its targets, as (H, W, C) and (H, W, T) views."""
        if self.train_pixels is None or self.train_target_pixels is None or self.train_offsets is None:
            raise ValueError("training images are streamed from disk, not held in memory")
        h, w = self.train_shapes[i]
        rows = slice(self.train_offsets[i], self.train_offsets[i + 1])
        return self.train_pixels[rows].reshape(h, w, -1), self.train_target_pixels[rows].reshape(h, w, -1)

    def stain_codes(self) -> np.ndarray:
        """Each training image's stain for :class:`PatchAugmenter`: whether it is stained (by its masks)
        and whether preprocessing inverted it (by its look), as recorded when it was loaded."""
        return np.array(
            [
                NOT_STAINED if m != "stained" else STAINED_INVERTED if inverted else STAINED
                for m, inverted in zip(self.train_modalities, self.train_inverted, strict=True)
            ],
            np.int8,
        )

    def sampling_groups(self) -> list[str]:
        """Each training image's group for ``data.balance``: its modality, prefixed by its source
        (``source_of``) when there are several, so a small source is not drowned by a large one."""
        return [
            f"{source_of(i)}:{m}" if source_of(i) else m
            for i, m in zip(self.train_ids, self.train_modalities, strict=True)
        ]


def sampling_weights(groups: list[str], balance: float) -> np.ndarray:
    """Probability of drawing each image: proportional to (images of its group) ** -balance, where a
    group is a modality, or a (source, modality) pair when training mixes sources
    (``PreparedData.sampling_groups``).

    0 draws every image alike, so the most common group dominates; 1 draws every group alike.
    """
    counts = Counter(groups)
    weights = np.array([counts[g] ** -balance for g in groups], np.float64)
    return weights / weights.sum()


def assign_folds(ids: list[str], k: int, seed: int, group: str | None = None) -> list[int]:
    """Each image's fold, 0..k-1: groups of images (equal first group of the regular expression
    ``group`` in their ids, else each image alone) dealt largest first, in a seeded order, to the fold
    holding fewest images so far, so folds are as even as the groups allow."""
    pattern = re.compile(group) if group else None

    def key(sample_id: str) -> str:
        found = pattern.search(image_id(sample_id)) if pattern else None
        return found.group(1) if found else sample_id

    keys = [key(i) for i in ids]
    sizes = Counter(keys)
    if len(sizes) < k:
        raise DataError(f"{k} folds need at least {k} groups of images, found {len(sizes)}")
    order = [sorted(sizes)[i] for i in np.random.default_rng(seed).permutation(len(sizes))]
    held, fold_of = [0] * k, {}
    for name in sorted(order, key=lambda g: -sizes[g]):  # stable: ties keep the seeded order
        fold_of[name] = int(np.argmin(held))
        held[fold_of[name]] += sizes[name]
    return [fold_of[name] for name in keys]


def split_samples(
    samples: list[T],
    val_fraction: float,
    seed: int,
    val_min: int = 1,
    ids: list[str] | None = None,
    folds: FoldConfig | None = None,
) -> tuple[list[T], list[T]]:
    """Seeded split by image, within each data source (see :func:`source_of`; ``ids`` name the samples):
    ``val_fraction`` of each source's images, at least ``val_min`` of them, and at least one image left
    for training. A small source mixed with a large one so always gets validation images of its own.
    With ``folds`` (``k`` > 0), its source validates on fold ``index`` of :func:`assign_folds` instead."""
    if len(samples) < 2:
        raise DataError(
            f"need at least 2 annotated images to split into train and validation, got {len(samples)}"
        )
    ids = ids or [""] * len(samples)
    groups: dict[str, list[int]] = {}
    for i, sample_id in enumerate(ids):
        groups.setdefault(source_of(sample_id), []).append(i)
    folded = folds is not None and folds.k > 0
    if folded and folds.source is not None and folds.source not in groups:
        named = ", ".join(repr(g) for g in groups if g) or "one unnamed source (a single data.path)"
        raise DataError(f"data.folds.source {folds.source!r} is none of the data sources: {named}")
    rng = np.random.default_rng(seed)
    train, val = [], []
    for source, members in groups.items():  # in data.path order: the first source splits as it would alone
        order = [members[i] for i in rng.permutation(len(members))]
        if folded and folds.source in (None, source):
            fold = assign_folds([ids[i] for i in members], folds.k, seed, folds.group)
            val += [m for m, f in zip(members, fold, strict=True) if f == folds.index]
            train += [m for m, f in zip(members, fold, strict=True) if f != folds.index]
            continue
        n_val = min(max(len(members) - 1, 1), max(val_min, round(len(members) * val_fraction)))
        val += order[:n_val]
        train += order[n_val:]
    if not train:
        raise DataError(f"no image left for training after {len(val)} validation images")
    return [samples[i] for i in sorted(train)], [samples[i] for i in sorted(val)]


def _image_array(
    image: np.ndarray, cfg: DataConfig, name: str, factor: float = 1.0
) -> tuple[np.ndarray, bool]:
    """The float32 network input for an image (see :class:`Preprocessing`), padded up to a patch, and
    whether preprocessing inverted it."""
    array, inverted = Preprocessing.from_config(cfg).prepare(image, name, factor)
    return pad_to(array, cfg.patch_size), inverted


def _arrays(
    sample: Sample, cfg: DataConfig, num_classes: int, hover: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, bool]:
    """A checked sample's network input, targets, instance labels and zoom, all at the zoomed size,
    and whether preprocessing inverted it (data.polarity).

    With ``cfg.nucleus_size`` the zoom brings the sample's annotated nuclei to that width; else it is 1.
    """
    factor = 1.0
    if cfg.nucleus_size is not None:
        factor = annotated_factor(sample.labels, num_classes, cfg.nucleus_size)
    image, inverted = _image_array(sample.image, cfg, sample.id, factor)  # rejects bad channels first
    size = sample.image.shape[:2]
    if size != sample.labels.shape:
        raise DataError(f"{sample.id}: mask size {sample.labels.shape} differs from image {size}")
    labels = resize_labels(sample.labels, factor)
    target = pad_to(targets(labels, num_classes, hover), cfg.patch_size)
    return image, target, labels, factor, inverted


def one_hot_targets(masks: tf.Tensor | np.ndarray, num_classes: int) -> tf.Tensor:
    """uint8 targets (..., T) as the model's float32 output: foreground, or one-hot classes (followed,
    for the HoVer head, by the maps of its stored nucleus ids, patch by patch)."""
    if num_classes == 1:
        return tf.cast(masks, tf.float32)
    classes = tf.one_hot(tf.cast(masks[..., 0], tf.int32), num_classes, dtype=tf.float32)
    if masks.shape[-1] == 1:
        return classes
    maps = tf.numpy_function(patch_maps, [masks[..., 1]], tf.float32, stateful=False)
    return tf.concat([classes, tf.ensure_shape(maps, [*masks.shape[:-1], 2])], axis=-1)


@dataclass
class _Loaded:
    """A sample read and checked once: its network input (None past the memory budget), target, centres."""

    ref: Sample | SampleRef
    image: np.ndarray | None
    target: np.ndarray
    centres: np.ndarray
    modality: str
    factor: float  # zoom applied to image and target (data.nucleus_size)
    inverted: bool  # whether preprocessing inverted the image (data.polarity)

    @property
    def id(self) -> str:
        return self.ref.id


class _Loader:
    """Loads samples one by one, applying the bad-sample policy and the memory budget for images.

    ``cfg.stream`` true keeps no image, false keeps all, null keeps them until they pass
    ``memory_limit_mb``; after that every image is dropped and re-read from disk when needed.
    """

    def __init__(self, cfg: DataConfig, num_classes: int, hover: bool = False) -> None:
        self.cfg = cfg
        self.num_classes = num_classes
        self.hover = hover
        self.skipped: list[dict[str, str]] = []
        self.limit = np.inf if cfg.stream is False else (0 if cfg.stream else cfg.memory_limit_mb * 2**20)
        self.held = 0
        self.kept: list[_Loaded] = []

    @property
    def streaming(self) -> bool:
        return self.held > self.limit

    def _load(self, ref: Sample | SampleRef) -> _Loaded | None:
        try:
            sample = ref.load()
            image, target, labels, factor, inverted = _arrays(sample, self.cfg, self.num_classes, self.hover)
        except DataError as exc:
            if self.cfg.on_bad_sample == "error":
                raise DataError(f"{exc} (set data.on_bad_sample: skip to leave bad samples out)") from exc
            warnings.warn(f"skipping sample {ref.id}: {exc}", stacklevel=3)
            self.skipped.append({"id": ref.id, "reason": str(exc)})
            return None
        centres = np.round([r.centroid for r in measure.regionprops(labels)]).reshape(-1, 2)
        self.held += image.size * np.dtype(TRAIN_DTYPE).itemsize  # as held for training
        item = _Loaded(ref, image, target, centres, modality(sample.image, sample.labels), factor, inverted)
        self.kept.append(item)
        if self.streaming:  # over budget: stream every image from disk instead
            for kept in self.kept:
                kept.image = None
            self.kept.clear()
        return item

    def load_all(self, refs: list[Sample] | list[SampleRef]) -> list[_Loaded]:
        return [item for ref in refs if (item := self._load(ref)) is not None]

    def image_of(self, item: _Loaded) -> np.ndarray:
        if item.image is not None:
            return item.image
        return _image_array(item.ref.load_image(), self.cfg, item.id, item.factor)[0]


def prepare(
    train: list[Sample] | list[SampleRef],
    val: list[Sample] | list[SampleRef],
    cfg: DataConfig,
    source: str,
    num_classes: int = 1,
    hover: bool = False,
) -> PreparedData:
    """Read and check every sample of a given split once; keep training images in memory unless too big;
    ``hover`` adds the HoVer head's maps to the targets."""
    load = _Loader(cfg, num_classes, hover)
    return _assemble(load.load_all(train), load.load_all(val), load, source)


def prepare_split(
    samples: list[Sample] | list[SampleRef],
    cfg: DataConfig,
    source: str,
    num_classes: int,
    seed: int,
    hover: bool = False,
) -> PreparedData:
    """Read and check every sample, leave out bad ones (``on_bad_sample: skip``), then split the rest.

    Skipping before splitting means one bad image can never empty the validation side, and the split
    of a clean data set is the same as :func:`split_samples` of all of it.
    """
    load = _Loader(cfg, num_classes, hover)
    good = load.load_all(samples)
    if len(good) < 2 and load.skipped:
        raise DataError(f"no usable images left to split ({len(load.skipped)} skipped as bad): {source}")
    ids = [item.id for item in good]
    train, val = split_samples(good, cfg.val_fraction, seed, cfg.val_min, ids, cfg.folds)
    return _assemble(train, val, load, source)


def _assemble(train: list[_Loaded], val: list[_Loaded], load: _Loader, source: str) -> PreparedData:
    if not train or not val:
        side = "training" if not train else "validation"
        raise DataError(f"no usable {side} images left ({len(load.skipped)} skipped as bad): {source}")
    patch, channels = load.cfg.patch_size, load.cfg.channels
    vx, vy = [], []
    for item in val:
        img, msk = load.image_of(item), item.target
        for y in grid_starts(img.shape[0], patch):
            for x in grid_starts(img.shape[1], patch):
                vx.append(img[y : y + patch, x : x + patch])
                vy.append(msk[y : y + patch, x : x + patch])
    centres = [item.centres for item in train]
    data = PreparedData(
        train_shapes=np.array([item.target.shape[:2] for item in train], np.int32),
        train_centroids=np.concatenate([*centres, np.zeros((1, 2))]).astype(np.int32),
        train_centroid_offsets=np.cumsum([0] + [len(c) for c in centres]).astype(np.int32),
        val_images=np.stack(vx),
        val_masks=np.stack(vy),
        source=source,
        train_ids=[item.id for item in train],
        val_ids=[item.id for item in val],
        skipped=load.skipped,
        num_classes=load.num_classes,
        train_modalities=[item.modality for item in train],
        train_inverted=[item.inverted for item in train],
        train_factors=[item.factor for item in train],
    )
    if load.streaming:
        data.train_refs = [item.ref for item in train]
        data.train_targets = [item.target for item in train]
        return data
    data.train_pixels = np.concatenate(
        [item.image.reshape(-1, channels).astype(TRAIN_DTYPE) for item in train]
    )
    data.train_target_pixels = np.concatenate(
        [item.target.reshape(-1, item.target.shape[-1]) for item in train]
    )
    data.train_offsets = np.cumsum([0] + [item.target.shape[0] * item.target.shape[1] for item in train])
    return data


def _patch_maker(data: PreparedData, cfg: DataConfig, seed: int):
    """A function cutting (and augmenting) training patch ``number`` out of image ``k``.

    A share ``cfg.foreground_bias`` of the patches is centred (with jitter) on a random nucleus of the
    image; the rest are placed uniformly. All randomness is keyed by (seed, patch number).
    """
    patch = cfg.patch_size
    centroids = tf.constant(data.train_centroids)
    offsets = tf.constant(data.train_centroid_offsets)
    augmenter = PatchAugmenter(cfg.augment, seed)
    stains = tf.constant(data.stain_codes())
    channels, kinds = data.val_images.shape[-1], data.val_masks.shape[-1]

    def place(
        u_uniform: tf.Tensor, length: tf.Tensor, centre: tf.Tensor, u_jitter: tf.Tensor, biased: tf.Tensor
    ):
        uniform = tf.cast(u_uniform * tf.cast(length - patch + 1, tf.float32), tf.int32)
        jitter = tf.cast((u_jitter - 0.5) * patch / 2, tf.int32)
        centred = tf.clip_by_value(centre - patch // 2 + jitter, 0, length - patch)
        return tf.where(biased, centred, uniform)

    def make(image: tf.Tensor, mask: tf.Tensor, h: tf.Tensor, w: tf.Tensor, k: tf.Tensor, number: tf.Tensor):
        u = tf.random.stateless_uniform([9], seed=tf.stack([tf.constant(seed, tf.int64), number]))
        count = offsets[k + 1] - offsets[k]
        biased = (u[5] < cfg.foreground_bias) & (count > 0)
        centre = centroids[
            offsets[k] + tf.minimum(tf.cast(u[6] * tf.cast(count, tf.float32), tf.int32), count)
        ]
        y = place(u[1], h, centre[0], u[7], biased)
        x = place(u[2], w, centre[1], u[8], biased)
        img = image[y : y + patch, x : x + patch]
        msk = mask[y : y + patch, x : x + patch]
        if cfg.augment.dihedral:  # rot90 x flip covers all 8 symmetries of the square
            both = tf.concat([img, tf.cast(msk, tf.float32)], axis=-1)
            both = tf.image.rot90(both, tf.cast(u[3] * 4, tf.int32) % 4)
            both = tf.cond(u[4] < 0.5, lambda: tf.reverse(both, [1]), lambda: both)
            img, msk = both[..., :channels], tf.cast(both[..., channels:], tf.uint8)
        if augmenter.enabled:
            img, msk = tf.numpy_function(
                augmenter, [img, msk, number, stains[k]], [tf.float32, tf.uint8], stateful=False
            )
        img = tf.ensure_shape(img, (patch, patch, channels))
        msk = tf.ensure_shape(msk, (patch, patch, kinds))
        return img, one_hot_targets(msk, data.num_classes)

    return make


def _image_picker(data: PreparedData, cfg: DataConfig, seed: int):
    """A function giving the image that patch (or image read) ``number`` comes from, per ``data.balance``."""
    cdf = tf.constant(np.cumsum(sampling_weights(data.sampling_groups(), cfg.balance)), tf.float64)
    last = len(data.train_modalities) - 1

    def pick(number: tf.Tensor) -> tf.Tensor:
        u = tf.random.stateless_uniform(
            [1], seed=tf.stack([tf.constant(seed + 7919, tf.int64), number]), dtype=tf.float64
        )
        return tf.minimum(tf.cast(tf.searchsorted(cdf, u, side="right")[0], tf.int32), last)

    return pick


def train_dataset(
    data: PreparedData, cfg: DataConfig, batch_size: int, seed: int, start_patch: int = 0
) -> tf.data.Dataset:
    """Endless stream of augmented (image, foreground) patch batches, starting at patch ``start_patch``.

    In memory, every patch comes from an image drawn at random, and the stream resumes exactly. When
    streaming, each image read gives ``cfg.patches_per_image`` patches and 8 images are interleaved; a
    resumed stream restarts at the image where it stopped.
    """
    make = _patch_maker(data, cfg, seed)
    pick = _image_picker(data, cfg, seed)
    shapes = tf.constant(data.train_shapes)
    n, channels, kinds = len(data.train_shapes), data.val_images.shape[-1], data.val_masks.shape[-1]
    if not data.streaming:
        pixels, targets = tf.constant(data.train_pixels), tf.constant(data.train_target_pixels)
        offsets = tf.constant(data.train_offsets)

        def sample(i: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            k = pick(i)
            h, w = shapes[k][0], shapes[k][1]
            rows = slice(offsets[k], offsets[k + 1])  # an outer-axis slice: a view, no copy
            image = tf.cast(tf.reshape(pixels[rows], tf.stack([h, w, channels])), tf.float32)
            mask = tf.reshape(targets[rows], tf.stack([h, w, kinds]))
            return make(image, mask, h, w, k, i)

        ds = tf.data.Dataset.range(start_patch, np.iinfo(np.int64).max)
        ds = ds.map(sample, num_parallel_calls=cpu_budget(), deterministic=True)
    else:
        refs, per_image = data.train_refs, cfg.patches_per_image

        def read(k: np.int32) -> tuple[np.ndarray, np.ndarray]:
            image = _image_array(refs[k].load_image(), cfg, refs[k].id, data.train_factors[k])[0]
            return image, data.train_targets[k]

        def patches_of(c: tf.Tensor) -> tf.data.Dataset:
            k = pick(c)
            image, mask = tf.numpy_function(read, [k], [tf.float32, tf.uint8], stateful=False)
            image = tf.ensure_shape(image, (None, None, channels))
            numbers = tf.data.Dataset.range(c * per_image, (c + 1) * per_image)
            return numbers.map(lambda i: make(image, mask, shapes[k][0], shapes[k][1], k, i))

        ds = tf.data.Dataset.range(start_patch // per_image, np.iinfo(np.int64).max // per_image)
        ds = ds.interleave(
            patches_of, cycle_length=min(8, n), num_parallel_calls=cpu_budget(), deterministic=True
        )
    return without_autotune(ds.batch(batch_size, drop_remainder=True).prefetch(PREFETCH_BATCHES))


def val_dataset(data: PreparedData, batch_size: int) -> tf.data.Dataset:
    masks = one_hot_targets(data.val_masks, data.num_classes)
    return without_autotune(
        tf.data.Dataset.from_tensor_slices((data.val_images, masks)).batch(batch_size).cache()
    )

"""The napari plugin's work, without Qt: segment a layer's planes, label them again from kept
probabilities, keep corrected labels as annotations, fine-tune on them, segment large images in chunks.

The widget (:mod:`cellseg.napari.widget`) runs these in napari's thread workers; scripts and tests call
them directly. Every plane of a stack gets its own nucleus ids, unique in the stack, so a layer's
feature table has one row per nucleus.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cellseg.core.config import Config, SlideOptions, load_config
from cellseg.data import DataError
from cellseg.labels.outputs import nucleus_table
from cellseg.labels.postprocess import PostprocessParams, Probabilities, instances

if TYPE_CHECKING:
    from cellseg.infer.segmenter import Segmenter

#: a plane with more pixels than this (or any plane of a multiscale layer) is segmented chunk by chunk,
#: as a whole slide is (:mod:`cellseg.infer.slides`), never loaded whole
LARGE_PIXELS = 4096 * 4096
#: (done, total) after each unit of work
Progress = Callable[[int, int], None]
#: probability maps of one raw 2-D image (and its name, for messages)
Predict = Callable[[np.ndarray, str], Probabilities]


class Cancelled(Exception):
    """Raised from a progress callback when the user cancels; the work stops where it is."""


def plane_indices(shape: tuple[int, ...], rgb: bool) -> list[tuple[int, ...]]:
    """The index of each 2-D plane (grey or RGB) of a layer's data: one () for a single image."""
    lead = shape[:-3] if rgb else shape[:-2]
    return list(np.ndindex(*lead))


def plane_shape(shape: tuple[int, ...], rgb: bool) -> tuple[int, int]:
    """(height, width) of a layer's planes."""
    return (shape[-3], shape[-2]) if rgb else (shape[-2], shape[-1])


def is_large(shape: tuple[int, ...], rgb: bool, multiscale: bool) -> bool:
    """Whether a layer goes the chunked way (:func:`segment_large`)."""
    return multiscale or math.prod(plane_shape(shape, rgb)) > LARGE_PIXELS


@dataclass
class Segmented:
    """A layer's planes as the network saw them: kept so that post-processing changes label them again
    without running the network (the slow part)."""

    indices: list[tuple[int, ...]]
    probabilities: list[Probabilities]

    @property
    def zooms(self) -> list[float]:
        """The zoom each plane was predicted at."""
        return [p.factor for p in self.probabilities]


def predict_planes(predict: Predict, data: Any, rgb: bool, progress: Progress | None = None) -> Segmented:
    """``predict`` every plane of ``data`` (a layer's array: numpy, dask or zarr, read one plane at a
    time); ``progress(done, total)`` after each plane (it may raise :class:`Cancelled` to stop)."""
    indices = plane_indices(tuple(data.shape), rgb)
    probabilities = []
    for i, index in enumerate(indices):
        probabilities.append(predict(np.asarray(data[index]), f"plane {index}" if index else "image"))
        if progress is not None:
            progress(i + 1, len(indices))
    return Segmented(indices, probabilities)


def predictor(segment: Segmenter, zoom: float | None = None) -> Predict:
    """The model's probability maps at ``zoom`` (None: its own estimate, per image)."""
    if zoom is None:
        return segment.predictor.__call__
    return lambda image, name: segment.predictor.at_zoom(image, zoom, name)


def label_planes(result: Segmented, params: PostprocessParams, shape: tuple[int, ...]) -> np.ndarray:
    """Instance labels of every plane (``shape``: the layer's without its colour axis), ids unique in
    the stack: 0 background, 1..N."""
    labels = np.zeros(shape, np.uint32)
    offset = 0
    for index, probs in zip(result.indices, result.probabilities, strict=True):
        found = instances(probs, params).astype(np.uint32)
        labels[index] = np.where(found > 0, found + offset, 0)
        offset += int(found.max())
    return labels


def feature_table(labels: np.ndarray, data: Any, indices: Sequence[tuple[int, ...]]) -> dict[str, list]:
    """One row per nucleus of every plane (:func:`cellseg.labels.outputs.nucleus_table`, plus ``plane``), as
    columns for a napari layer's ``features``; ``index`` holds each row's label id (napari's key)."""
    rows: list[dict[str, Any]] = []
    for index in indices:
        plane_rows = nucleus_table(labels[index], np.asarray(data[index]))
        rows += [{"index": r["label"], "plane": str(index) if index else "", **r} for r in plane_rows]
    columns = ["index", "plane", *(k for k in (rows[0] if rows else {}) if k not in ("index", "plane"))]
    return {c: [r[c] for r in rows] for c in columns} if rows else {"index": [], "plane": []}


def _safe(name: str) -> str:
    """A layer name as a file name."""
    return re.sub(r"[^A-Za-z0-9.-]+", "_", name).strip("_") or "image"


def save_annotation(
    folder: str | Path,
    name: str,
    image: np.ndarray,
    labels: np.ndarray,
    box: tuple[slice, slice] | None = None,
) -> Path:
    """Keep corrected labels as a training annotation in ``folder``: ``<name>.tif`` and
    ``<name>_labels.tif`` side by side (the ``beside`` layout fine-tuning reads), cropped to ``box``
    (a drawn region) when given. Saving the same name again replaces it. Returns the image's path."""
    import tifffile

    if image.shape[:2] != labels.shape:
        raise DataError(f"{name}: labels {labels.shape} do not match the image {image.shape[:2]}")
    if box is not None:
        image, labels = image[box], labels[box]
        if min(labels.shape) < 16:
            raise DataError(
                f"{name}: the region is {labels.shape[0]} x {labels.shape[1]} px; draw a larger one"
            )
    if not labels.any():
        raise DataError(f"{name}: the labels hold no nucleus; paint the nuclei (or segment first), then keep")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stem = _safe(name)
    path = folder / f"{stem}.tif"
    tifffile.imwrite(path, np.ascontiguousarray(image))
    tifffile.imwrite(folder / f"{stem}_labels.tif", labels.astype(np.uint32), compression="zlib")
    return path


def annotation_count(folder: str | Path) -> int:
    """How many annotated images ``folder`` holds (as fine-tuning will read them)."""
    from cellseg.data.annotations import scan_beside

    folder = Path(folder)
    return len(scan_beside(folder)) if folder.is_dir() else 0


def finetune_config(start: str | Path, folder: str | Path, overrides: Sequence[str] = ()) -> Config:
    """The fine-tuning recipe (:data:`cellseg.train.finetune.RECIPE`) from ``start`` on the annotations in
    ``folder``, with ``overrides`` (``KEY=VALUE``, as ``train.py --set``)."""
    from cellseg.train.finetune import RECIPE

    count = annotation_count(folder)
    if count < 2:
        raise DataError(
            f"{folder}: {count} annotated image(s); fine-tuning needs at least 2 (one validates): keep "
            "another corrected image, or two drawn regions of this one"
        )
    cfg = load_config(RECIPE, list(overrides))
    return dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, path=str(folder)),
        train=dataclasses.replace(cfg.train, init=str(start)),
    )


def finetune(cfg: Config, out: str | Path, progress: Progress | None = None) -> Path:
    """Train ``cfg`` (:func:`finetune_config`) into a new run folder under ``out`` and return it.

    ``progress(step, steps)`` follows the training steps; raising :class:`Cancelled` in it stops at that
    step (the run folder can be resumed: ``train.py --resume``)."""
    import keras

    from cellseg.train.trainer import TrainingError, train

    per_epoch = cfg.train.steps_per_epoch
    steps = cfg.train.epochs * per_epoch

    class Follow(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.epoch = epoch

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            progress(self.epoch * per_epoch + batch + 1, steps)

    result = train(cfg, out=out, verbose=0, callbacks=[Follow()] if progress is not None else [])
    if not result.summary.completed:
        raise TrainingError(f"fine-tuning stopped: {result.summary.stopped_reason} ({result.run_dir})")
    return result.run_dir


def segment_large(
    segment: Segmenter,
    levels: Sequence[Any],
    rgb: bool,
    name: str,
    out: str | Path,
    options: SlideOptions | None = None,
    progress: Progress | None = None,
) -> Any:
    """Segment a large 2-D layer (``levels``: its data, full resolution first; numpy, dask or zarr)
    chunk by chunk into ``out`` as a slide is (:func:`cellseg.infer.slides.segment.segment_levels`: bounded
    memory, seams stitched, resumable), returning its :class:`~cellseg.infer.slides.segment.SlideResult`."""
    from cellseg.infer.slides.reader import Slide
    from cellseg.infer.slides.segment import segment_levels

    if levels[0].ndim != (3 if rgb else 2):
        raise DataError(
            f"{name}: a large image is segmented one 2-D plane at a time, but its data has shape "
            f"{tuple(levels[0].shape)}; select a single plane (e.g. a new layer of layer.data[t])"
        )
    stem = _safe(name)
    slide = Slide(stem, list(levels), "YXC" if rgb else "YX", source="napari layer")
    return segment_levels(segment, slide, stem, f"napari layer {name}", out, options, progress)

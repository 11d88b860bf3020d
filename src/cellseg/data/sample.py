"""One annotated image (or a reference to one on disk), its ids and its training target.

How an image becomes the network's input is :mod:`cellseg.data.preprocessing`'s."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from skimage.segmentation import find_boundaries

from cellseg.data.hover import stored_ids


class DataError(ValueError):
    """A data set, file or sample is missing or malformed; the message names it."""


@dataclass
class Sample:
    """An image (H, W, C) of any dtype and its instance labels (H, W), 0 = background."""

    id: str
    image: np.ndarray
    labels: np.ndarray

    @property
    def foreground(self) -> np.ndarray:
        return (self.labels > 0).astype(np.uint8)

    def load(self) -> Sample:
        """A sample in memory is its own reference (see :class:`SampleRef`)."""
        return self

    def load_image(self) -> np.ndarray:
        return self.image

    @property
    def sources(self) -> tuple[Path, ...]:
        """Made in memory: no files (see :attr:`SampleRef.sources`)."""
        return ()


@dataclass
class SampleRef:
    """A sample not yet read: ``load()`` decodes and checks it, raising DataError naming the file.

    Scanning a data set yields references only, so a large set never has to sit in memory at once.
    ``load_image()`` reads the image alone: streaming re-reads images but keeps the small masks, which
    in the DSB2018 layout cost ten times the image to read (one PNG per nucleus).
    """

    id: str
    load: Callable[[], Sample]
    load_image: Callable[[], np.ndarray]
    sources: tuple[Path, ...] = ()  # files and folders it is decoded from: the cache's key (data.cache)


def source_of(sample_id: str) -> str:
    """The data source (``data.path`` entry) of a sample: ids carry the root's name when there are
    several roots (:func:`cellseg.data.readers.scan_samples`), else there is one source, ``""``."""
    return sample_id.split("/", 1)[0] if "/" in sample_id else ""


def image_id(sample_id: str) -> str:
    """A sample's id within its data source (``sample_id`` without the root's name :func:`source_of`
    reads): the same image has it whether it was scanned alone or beside other roots."""
    return sample_id.split("/", 1)[1] if "/" in sample_id else sample_id


def target_map(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """The per-pixel training target (H, W) uint8 for a model with ``num_classes`` outputs.

    1: foreground (0/1). 3: 0 background, 1 nucleus interior, 2 nucleus boundary: each nucleus's own
    outermost pixels, so two touching nuclei are always parted by boundary pixels, which is what lets
    post-processing split them.
    """
    target = (labels > 0).astype(np.uint8)
    if num_classes == 3:
        target[find_boundaries(labels, mode="inner")] = 2
    elif num_classes != 1:
        raise ValueError(f"num_classes must be 1 or 3, got {num_classes}")
    return target


def targets(labels: np.ndarray, num_classes: int, hover: bool = False) -> np.ndarray:
    """The training targets (H, W, T) uint8: the :func:`target_map` and, for the HoVer head
    (``model.head: hover``), the nucleus ids its maps are computed from once a patch is cut
    (:func:`cellseg.data.hover.stored_ids`)."""
    classes = target_map(labels, num_classes)[..., None]
    if not hover:
        return classes
    return np.concatenate([classes, stored_ids(labels)[..., None]], axis=-1)

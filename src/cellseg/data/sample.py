"""One annotated image, and the normalisation every source goes through before training."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from skimage.segmentation import find_boundaries


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


def to_channels(image: np.ndarray, channels: int, name: str = "image") -> np.ndarray:
    """Return (H, W, channels): grey is replicated, RGBA loses alpha, RGB becomes grey for 1 channel."""
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3:
        raise DataError(f"{name}: expected a 2-D image (H, W[, C]), got an array of shape {image.shape}")
    if image.shape[-1] == 4:
        image = image[..., :3]
    if image.shape[-1] not in (1, 3):
        raise DataError(f"{name}: expected 1, 3 or 4 channels, got {image.shape[-1]} (shape {image.shape})")
    if channels == 1:
        return image.mean(axis=-1, keepdims=True) if image.shape[-1] == 3 else image
    return np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image


def normalize(image: np.ndarray, low: float = 1.0, high: float = 99.8) -> np.ndarray:
    """Scale an image of any bit depth to float32 so its [low, high] percentiles map to [0, 1].

    Percentiles over all channels keep colour balance and make 8- and 16-bit data comparable; values
    outside are clipped so a few hot pixels cannot squash the nuclei into a narrow range.
    """
    image = image.astype(np.float32)
    lo, hi = np.percentile(image, [low, high]).astype(np.float32)  # float64 would upcast the image
    if hi - lo < 1e-6:
        return np.zeros_like(image)
    return np.clip((image - lo) / (hi - lo), 0.0, 1.0)


def equalize(image: np.ndarray, tile: int = 64) -> np.ndarray:
    """Local histogram equalisation (CLAHE) of a [0, 1] image, channel by channel, over ``tile`` px tiles.

    A dim nucleus beside bright ones is nearly black after a global normalisation; equalised within
    its neighbourhood it stands out as much as they do.
    """
    grid = (max(1, image.shape[1] // tile), max(1, image.shape[0] // tile))
    clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=grid)
    levels = np.round(image * 255).astype(np.uint8)
    out = np.stack([clahe.apply(np.ascontiguousarray(levels[..., c])) for c in range(image.shape[-1])], -1)
    return out.astype(np.float32) / 255


def dark_nuclei(image: np.ndarray) -> bool:
    """Whether a raw image shows dark nuclei on a light background (brightfield, stained tissue).

    Read off the image alone (see :func:`modality`): it agreed with the masks on all 702 annotated
    DSB2018 images (``stage1_train_full`` and ``stage1_test``) and all 13 MoNuSeg H&E images, and reads
    DSB2018 fluorescence images tinted blue, green or magenta as bright nuclei (2026-12-03).
    """
    return modality(image) != "fluorescence"


MODALITIES = ("fluorescence", "brightfield", "stained")


def modality(image: np.ndarray, labels: np.ndarray | None = None) -> str:
    """The imaging modality of a raw image, from its look: the groups nucleus data sets mix.

    fluorescence: nuclei brighter than their background; brightfield: darker nuclei on a grey
    background; stained: darker nuclei in colour (H&E, haematoxylin). With instance ``labels`` the
    nuclei are compared with their background directly (right for dense images too). Without, a grey
    image with a dark median has a dark background; in a colour image, colour that grows with
    brightness is emitted (fluorescence) and colour that grows with darkness is absorbed (a stain),
    which holds where dense tissue leaves the median no clue (MoNuSeg H&E: medians 0.34-0.47). Used to
    balance training patches across modalities (``data.balance``), because one usually dominates a data
    set, and for polarity (:func:`dark_nuclei`).
    """
    step = max(1, int(np.sqrt(image.shape[0] * image.shape[1] / 65536)))  # a subsample tells the look
    rgb = normalize(to_channels(image[::step, ::step], 3))
    grey = rgb.mean(axis=-1)
    chroma = np.abs(rgb - grey[..., None]).mean(axis=-1)
    coloured = float(chroma.mean()) > 0.02  # grey images: below 1e-7; stained DSB2018 / MoNuSeg: 0.039+
    nuclei = None if labels is None else labels[::step, ::step] > 0
    if nuclei is not None and nuclei.any() and not nuclei.all():
        bright_nuclei = grey[nuclei].mean() > grey[~nuclei].mean()
    elif coloured:  # the extreme 2 %: chroma(darkest) - chroma(brightest) was 0.028+ in stained images
        darkest, brightest = np.percentile(grey, [2, 98])  # and -0.074 or less in tinted fluorescence
        bright_nuclei = chroma[grey <= darkest].mean() < chroma[grey >= brightest].mean()
    else:
        bright_nuclei = float(np.median(grey)) < 0.5
    if bright_nuclei:
        return "fluorescence"
    return "stained" if coloured else "brightfield"

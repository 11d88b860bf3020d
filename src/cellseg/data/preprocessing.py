"""The preprocessing contract: how a raw image becomes the network's input, one object for every stage.

Training patches, whole-image prediction and the exported bioimage.io package must prepare an image the
same way, or a model sees something it was never trained on. :class:`Preprocessing` is built once from a
run's ``data`` config (and so stored with the run, in ``config.yaml``); everything that prepares an image
asks it. A new preprocessing key touches the config, this class and a test. The pixel operations it is made of
(channels, intensity normalisation, local equalisation, polarity and modality, zoom) live here too, so
nothing else re-declares them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from cellseg.core.config import DataConfig
from cellseg.data import stains
from cellseg.data.sample import DataError
from cellseg.data.stains import Stains

#: Intensity normalisation: these percentiles of an image (over all channels) map to 0 and 1.
NORMALIZE_PERCENTILES = (1.0, 99.8)

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Decided:
    """What a whole slide decides once for all its chunks, which must agree at their seams: whether to
    invert (``invert``) and, for a model that normalises stains, its stains. None: each image decides."""

    invert: bool | None = None
    stains: Stains | None = None


@dataclass(frozen=True)
class Preprocessing:
    """``channels``, ``nucleus_size`` (px; None: native scale), ``equalize``, ``bright_nuclei``
    (``data.polarity: bright_nuclei``) and ``macenko`` (``data.stain_normalization: macenko``) of a
    run's data config."""

    channels: int = 3
    nucleus_size: float | None = None
    equalize: bool = False
    bright_nuclei: bool = False
    macenko: bool = False

    @classmethod
    def from_config(cls, data: DataConfig) -> Preprocessing:
        return cls(
            data.channels,
            data.nucleus_size,
            data.equalize,
            data.polarity == "bright_nuclei",
            data.stain_normalization == "macenko",
        )

    def inverts(self, image: np.ndarray) -> bool:
        """Whether this image is inverted: dark nuclei on a light ground, with ``bright_nuclei``."""
        return self.bright_nuclei and dark_nuclei(image)

    def oriented(
        self, image: np.ndarray, name: str = "image", decided: Decided | None = None
    ) -> tuple[np.ndarray, bool]:
        """The raw image in the network's channels (a stained image's stains first normalised with
        ``macenko``), and whether it is to be inverted: as ``decided`` for its whole slide where that says,
        else read off the image: :meth:`inverts` on the converted image (what the network is fed, also by
        an exported model's user), its own stains if it reads as stained."""
        decided = decided or Decided()
        if self.macenko and _colour(image) and (decided.stains is not None or modality(image) == "stained"):
            image = macenko(image[..., :3], name, decided.stains)
        image = to_channels(image, self.channels, name)
        invert = self.inverts(image) if decided.invert is None else decided.invert and self.bright_nuclei
        return image, invert

    def stains_of(self, image: np.ndarray, name: str = "image") -> Stains | None:
        """The stains of an image of stained tissue (a slide's sample of its tissue), for a model that
        normalises them (``macenko``); None for other models and grey images, or if there is too little
        tissue."""
        if not (self.macenko and _colour(image)):
            return None
        return stains.estimate(_rgb8(image[..., :3]), name)

    def apply(
        self, image: np.ndarray, name: str = "image", factor: float = 1.0, decided: Decided | None = None
    ) -> np.ndarray:
        """A raw image as the network sees it: its channels, zoomed by ``factor`` (nucleus size, see
        :mod:`cellseg.data.scale`), inverted as :meth:`oriented` decides, normalised to [0, 1], equalised
        locally with ``equalize``."""
        return self.prepare(image, name, factor, decided)[0]

    def prepare(
        self, image: np.ndarray, name: str = "image", factor: float = 1.0, decided: Decided | None = None
    ) -> tuple[np.ndarray, bool]:
        """:meth:`apply`, and whether it inverted the image (training records it per image)."""
        image, inverted = self.oriented(image, name, decided)
        if inverted:  # negated before normalising: what any tool's "invert" gives, since
            image = -image.astype(np.float32)  # normalize() ignores offsets (see describe)
        normalized = normalize(resize(image, factor))
        return (equalize(normalized) if self.equalize else normalized), inverted

    def describe(self) -> list[str]:
        """What a user of the exported model must do by hand, one paragraph each (the package README):
        the steps bioimage.io preprocessing operations cannot express."""
        notes = []
        if self.nucleus_size is not None:
            notes.append(
                f"Scale: the model was trained on images zoomed so that their nuclei are about "
                f"{self.nucleus_size:g} px\nwide (twice the largest inscribed radius of a nucleus interior). "
                "Zoom an image by that width over its own\nnuclei's width before prediction, and the output "
                "back; no bioimage.io operation describes this.\ncellseg's `predict` command estimates each "
                "image's zoom from the model's output and applies it."
            )
        if self.macenko:
            notes.append(
                "Stain: images of stained tissue (dark nuclei in colour, e.g. H&E) were stain-normalised "
                "before everything\nelse: Macenko et al. 2009, to the reference stain vectors of its "
                "original implementation (torchstain's\nMacenkoNormalizer, numpy backend, unfitted). "
                "Do the same before prediction; cellseg's `predict` does it."
            )
        if self.bright_nuclei:
            notes.append(
                "Polarity: the model was trained on bright nuclei on a dark background. Invert images with "
                "dark nuclei on\na light background (brightfield, H&E or haematoxylin stained tissue) before "
                "prediction, e.g. Fiji's\nEdit > Invert: any inversion gives the same input after "
                "`scale_range`. cellseg's `predict` command\nrecognises such images and inverts them itself."
            )
        return notes


def macenko(image: np.ndarray, name: str = "image", slide_stains: Stains | None = None) -> np.ndarray:
    """An RGB image of stained tissue as 8-bit RGB with its two stains (haematoxylin, eosin) mapped to
    the reference of Macenko et al. (:mod:`cellseg.data.stains`): with its own stains, estimated on
    it, or with ``slide_stains``, its slide's. An image whose stains cannot be estimated (too little
    tissue) is left as it is, with a warning naming it."""
    rgb = _rgb8(image)
    found = slide_stains or stains.estimate(rgb, name)
    return image if found is None else stains.normalise(rgb, found)


def _colour(image: np.ndarray) -> bool:
    return image.ndim == 3 and image.shape[-1] in (3, 4)


def _rgb8(image: np.ndarray) -> np.ndarray:
    return image if image.dtype == np.uint8 else np.round(normalize(image, 0.0, 100.0) * 255).astype(np.uint8)


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


def normalize(
    image: np.ndarray, low: float = NORMALIZE_PERCENTILES[0], high: float = NORMALIZE_PERCENTILES[1]
) -> np.ndarray:
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


def resized_shape(shape: tuple[int, ...], factor: float) -> tuple[int, int]:
    return max(1, round(shape[0] * factor)), max(1, round(shape[1] * factor))


def resize(array: np.ndarray, factor: float, size: tuple[int, int] | None = None) -> np.ndarray:
    """An image (H, W[, C]) zoomed by ``factor`` (or to ``size``, (H, W)): area-averaged when shrinking."""
    h, w = size or resized_shape(array.shape, factor)
    if (h, w) == array.shape[:2]:
        return array
    if array.ndim == 3 and array.shape[-1] > 4:  # OpenCV interpolates at most 4 channels at once
        return np.concatenate(
            [resize(array[..., c : c + 4], factor, (h, w)) for c in range(0, array.shape[-1], 4)], -1
        )
    shrink = h * w < array.shape[0] * array.shape[1]
    out = cv2.resize(array, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return out[..., None] if array.ndim == 3 and out.ndim == 2 else out

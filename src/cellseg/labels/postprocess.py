"""From per-pixel probabilities to nucleus instance labels: threshold, seeds, watershed, size filter.

Touching nuclei form one connected foreground blob, so a plain connected-components labelling merges
them. The blob is split by a marker watershed: seeded from the nucleus-interior probability when the
model has the three-class head, otherwise from peaks of the distance transform (nuclei are roughly
convex, so each has one distance maximum). With the HoVer head the interior seeds are also cut where
its maps fall (:func:`cellseg.data.hover.falls`), which they do only where two nuclei meet.
Foreground components no seed reaches are kept as they are.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.measure import label
from skimage.segmentation import relabel_sequential, watershed

from cellseg.data.hover import falls
from cellseg.data.preprocessing import modality


@dataclass(frozen=True)
class Probabilities:
    """A model's output for one image: foreground probability and, with the three-class head, interior
    (and with the HoVer head its two maps)."""

    foreground: np.ndarray  # (H, W) float32
    interior: np.ndarray | None = None  # (H, W) float32, three-class head only
    factor: float = 1.0  # the zoom the image was predicted at (data.nucleus_size); min_size counts at it
    hv: np.ndarray | None = None  # (H, W, 2) float32 horizontal and vertical maps, HoVer head only


@dataclass(frozen=True)
class PostprocessParams:
    """The knobs of :func:`instances`; chosen on the run's validation images by :func:`grid`."""

    threshold: float = 0.5  # foreground probability
    split: Literal["none", "distance", "interior", "hover"] = "distance"
    min_distance: int = 4  # px between distance-transform peaks (split: distance)
    seed_threshold: float = 0.5  # interior probability of a seed (split: interior, hover)
    min_size: int = 10  # px as the network saw them (times zoom^2 on the image); smaller objects are dropped

    def to_dict(self) -> dict[str, float | int | str]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class PostprocessPlan:
    """A run's post-processing: one setting for every image, and a modality's own setting where
    calibration found that it beats the common one on held-out validation images (stained tissue's
    nuclei, for one, are drawn smaller). The modality is read off each image (:func:`modality`), as
    it must be for images without masks."""

    default: PostprocessParams = PostprocessParams()
    by_modality: dict[str, PostprocessParams] = field(default_factory=dict)

    def params_for(self, image: np.ndarray) -> PostprocessParams:
        """The setting for one raw image."""
        return self.for_modality(modality(image)) if self.by_modality else self.default

    def for_modality(self, kind: str) -> PostprocessParams:
        """The setting for images of modality ``kind``."""
        return self.by_modality.get(kind, self.default)

    def to_dict(self) -> dict[str, Any]:
        return {
            "params": self.default.to_dict(),
            "by_modality": {k: v.to_dict() for k, v in self.by_modality.items()},
        }

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> PostprocessPlan:
        """From :meth:`to_dict`'s keys (``postprocess.json``; one calibrated before modalities: no
        ``by_modality``)."""
        by_modality = {k: PostprocessParams(**v) for k, v in saved.get("by_modality", {}).items()}
        return cls(PostprocessParams(**saved["params"]), by_modality)


def instances(probs: Probabilities, params: PostprocessParams) -> np.ndarray:
    """Instance labels (H, W) int32, 1..N, 0 = background."""
    mask = probs.foreground > params.threshold
    if params.split in ("interior", "hover"):
        if params.split == "hover" and (probs.hv is None or probs.interior is None):
            raise ValueError("split 'hover' needs the HoVer head (model.head: hover)")
        if probs.interior is None:
            raise ValueError("split 'interior' needs the three-class head (model.num_classes: 3)")
        seeds = mask & (probs.interior > params.seed_threshold)
        if params.split == "hover":  # ... kept clear of where the maps fall: where nuclei meet
            seeds &= ~falls(probs.hv)
        labels = watershed(-probs.interior, label(seeds), mask=mask)
    elif params.split == "distance":
        distance = ndi.distance_transform_edt(mask)
        blobs = label(mask)
        peaks = peak_local_max(
            ndi.gaussian_filter(distance, 1.0),  # smoothing stops ragged edges from making extra peaks
            min_distance=params.min_distance,
            labels=blobs,
            exclude_border=False,
        )
        seeds = np.zeros(mask.shape, np.int32)
        seeds[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
        labels = watershed(-distance, seeds, mask=mask)
    else:
        labels = label(mask)
    unreached = label(mask & (labels == 0))  # blobs without a seed stay whole
    labels = np.where(unreached > 0, unreached + labels.max(), labels)
    labels = labels.astype(np.int32)
    min_size = params.min_size / probs.factor**2  # in the image's pixels: zoomed-in nuclei cover fewer
    labels[np.bincount(labels.ravel())[labels] < min_size] = 0  # background is never that small
    return relabel_sequential(labels)[0]


def grid(outputs: str) -> list[PostprocessParams]:
    """Candidate settings searched on the validation images for a model predicting ``outputs``
    (:attr:`cellseg.core.config.ModelConfig.outputs`)."""
    thresholds = (0.4, 0.5, 0.6, 0.7, 0.8)
    sizes = (10, 30, 60)
    if outputs in ("three_class", "hover"):
        splits = [PostprocessParams(split="interior", seed_threshold=s) for s in (0.5, 0.7, 0.85)] + [
            PostprocessParams(split="none")
        ]
        if outputs == "hover":
            splits += [PostprocessParams(split="hover", seed_threshold=s) for s in (0.3, 0.5, 0.7)]
    else:
        splits = [PostprocessParams(split="distance", min_distance=d) for d in (3, 5, 8)] + [
            PostprocessParams(split="none")
        ]
    return [
        dataclasses.replace(base, threshold=t, min_size=m)
        for base, t, m in itertools.product(splits, thresholds, sizes)
    ]

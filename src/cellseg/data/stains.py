"""Macenko stain normalisation (Macenko et al., ISBI 2009) in two steps: estimate, then map.

Labs, scanners and protocols colour H&E differently; normalised, every image shows the same two colours.
The method finds an image's two stain vectors (haematoxylin, eosin) in optical-density space and the
99th percentile of each stain's concentration, then re-colours every pixel with reference vectors and
concentrations. The numbers are those of torchstain's ``NumpyMacenkoNormalizer`` (unfitted), which the
tests check this against; the two steps are split here because one slide must be normalised with one
estimate, taken on its tissue, not with one per chunk (a chunk of mostly glass or of one tissue type
would pull its own colours, and neighbouring chunks would disagree at their seam).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

#: The reference every image is mapped to: stain vectors (rows R, G, B optical density; columns
#: haematoxylin, eosin) and 99th-percentile concentrations of Macenko's original implementation.
REFERENCE_VECTORS = np.array([[0.5626, 0.2159], [0.7201, 0.8012], [0.4062, 0.5581]])
REFERENCE_MAX = np.array([1.9705, 1.0308])
LIGHT = 240  # transmitted light intensity (Io)
GLASS_OD = 0.15  # pixels with an optical density below this in any channel are glass (beta)
ANGLE_PERCENTILE = 1.0  # the robust extremes of the stains' angles in the OD plane (alpha)
#: Fewer stained pixels than this and there is nothing to estimate stains from.
MIN_STAINED_PIXELS = 500


@dataclass(frozen=True, eq=False)
class Stains:
    """An image's (or a slide's) stain vectors, (3, 2), and their 99th-percentile concentrations, (2,)."""

    vectors: np.ndarray
    max_concentration: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        return {"vectors": self.vectors.tolist(), "max_concentration": self.max_concentration.tolist()}

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> Stains:
        return cls(np.asarray(saved["vectors"], float), np.asarray(saved["max_concentration"], float))


def _optical_density(rgb: np.ndarray) -> np.ndarray:
    return -np.log((rgb.reshape(-1, 3).astype(np.float64) + 1) / LIGHT)


def estimate(rgb: np.ndarray, name: str = "image") -> Stains | None:
    """The stains of an 8-bit RGB image of stained tissue; None, with a warning naming it, when it has
    too little tissue to estimate them from."""
    od = _optical_density(rgb)
    tissue = od[(od >= GLASS_OD).all(axis=1)]
    if len(tissue) < MIN_STAINED_PIXELS:
        logger.warning(
            f"{name}: stains not normalised: {len(tissue)} stained pixels, too few to estimate them"
        )
        return None
    plane = np.linalg.eigh(np.cov(tissue.T))[1][:, 1:3]  # the two largest principal directions
    projected = tissue @ plane
    angles = np.arctan2(projected[:, 1], projected[:, 0])
    low, high = np.percentile(angles, (ANGLE_PERCENTILE, 100 - ANGLE_PERCENTILE))
    v_low, v_high = (plane @ np.array([np.cos(a), np.sin(a)]) for a in (low, high))
    # haematoxylin first: the vector with the larger red optical density
    vectors = np.stack((v_low, v_high) if v_low[0] > v_high[0] else (v_high, v_low), axis=1)
    concentrations = np.linalg.lstsq(vectors, od.T, rcond=None)[0]
    return Stains(vectors, np.percentile(concentrations, 99, axis=1))


def normalise(rgb: np.ndarray, stains: Stains) -> np.ndarray:
    """An 8-bit RGB image with ``stains`` (its own, or its slide's) re-coloured to the reference."""
    concentrations = np.linalg.lstsq(stains.vectors, _optical_density(rgb).T, rcond=None)[0]
    concentrations /= (stains.max_concentration / REFERENCE_MAX)[:, None]
    out = np.minimum(LIGHT * np.exp(-REFERENCE_VECTORS @ concentrations), 255)
    return out.T.reshape(rgb.shape).astype(np.uint8)

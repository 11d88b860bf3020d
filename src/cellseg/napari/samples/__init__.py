"""Sample images for napari (File > Open Sample > cellseg): one per modality the shipped models know,
from the DSB2018 stage-1 training set (BBBC038, CC0; see ``README.md`` here for which images)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).parent
MODALITIES = ("fluorescence", "brightfield", "stained")


def read(kind: str) -> np.ndarray:
    """The sample image of modality ``kind`` as an array."""
    from cellseg.data.images import read_image_2d

    if kind not in MODALITIES:
        raise ValueError(f"no sample '{kind}'; samples: {', '.join(MODALITIES)}")
    return read_image_2d(HERE / f"{kind}.png")


def _layer(kind: str) -> list[tuple[Any, dict[str, Any], str]]:
    image = read(kind)
    return [(image, {"name": f"{kind} nuclei (DSB2018)", "rgb": image.ndim == 3}, "image")]


def fluorescence() -> list[tuple[Any, dict[str, Any], str]]:
    """Fluorescent nuclei (bright on dark)."""
    return _layer("fluorescence")


def brightfield() -> list[tuple[Any, dict[str, Any], str]]:
    """Brightfield nuclei (dark on grey)."""
    return _layer("brightfield")


def stained() -> list[tuple[Any, dict[str, Any], str]]:
    """Stained tissue (H&E-like colour)."""
    return _layer("stained")

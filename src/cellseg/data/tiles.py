"""Cutting images into tiles and patches: pure NumPy, shared by the training pipeline and prediction."""

from __future__ import annotations

import numpy as np


def pad_to(array: np.ndarray, height: int, width: int | None = None) -> np.ndarray:
    """Reflect-pad the first two axes (at the end) up to ``height`` x ``width`` where smaller.

    Tiny images still give full patches; reflection keeps the padding looking like the image.
    """
    width = height if width is None else width
    ph, pw = max(0, height - array.shape[0]), max(0, width - array.shape[1])
    if not ph and not pw:
        return array
    pad = [(0, ph), (0, pw)] + [(0, 0)] * (array.ndim - 2)
    return np.pad(array, pad, mode="reflect" if min(array.shape[:2]) > 1 else "edge")


def grid_starts(length: int, patch: int, stride: int | None = None) -> list[int]:
    """Offsets every ``stride`` (default ``patch``) covering [0, length), the last one flush with the end."""
    starts = list(range(0, max(1, length - patch + 1), stride or patch))
    if starts[-1] + patch < length:
        starts.append(length - patch)
    return starts

"""Kaggle run-length encoding of nucleus masks (``ImageId,EncodedPixels``), as used by DSB2018.

Pixels are numbered from 1, top to bottom and then left to right (column-major); a row of the CSV is
one nucleus, written as ``start length start length ...``.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import numpy as np

from cellseg.data.sample import DataError


def rle_decode(rle: str, shape: tuple[int, int], where: str = "run-length mask") -> np.ndarray:
    """Binary (H, W) uint8 mask from a run-length string; malformed or out-of-bounds runs raise."""
    try:
        numbers = np.asarray(rle.split(), dtype=np.int64)
    except ValueError:
        raise DataError(f"{where}: run-length string has a non-integer entry: {rle[:60]!r}") from None
    if numbers.size % 2:
        raise DataError(f"{where}: run-length string has an odd number of entries ({numbers.size})")
    starts, lengths = numbers[0::2] - 1, numbers[1::2]
    size = shape[0] * shape[1]
    if numbers.size and (starts.min() < 0 or lengths.min() < 1 or (starts + lengths).max() > size):
        raise DataError(f"{where}: a run falls outside the {shape[0]}x{shape[1]} image")
    flat = np.zeros(size, np.uint8)
    for start, length in zip(starts, lengths, strict=True):
        flat[start : start + length] = 1
    return flat.reshape(shape[1], shape[0]).T


def rle_encode(mask: np.ndarray) -> str:
    """Run-length string of a binary mask (the inverse of :func:`rle_decode`)."""
    pixels = np.concatenate([[0], (mask.T.ravel() > 0).astype(np.int8), [0]])
    changes = np.flatnonzero(pixels[1:] != pixels[:-1]) + 1
    changes[1::2] -= changes[0::2]
    return " ".join(map(str, changes))


def read_rle_csv(path: Path) -> dict[str, list[str]]:
    """ImageId -> list of run-length strings, one per nucleus, in file order."""
    if not path.is_file():
        raise DataError(f"run-length CSV not found: {path}")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = {"ImageId", "EncodedPixels"} - set(reader.fieldnames or ())
        if missing:
            raise DataError(f"{path}: missing column(s) {sorted(missing)}; expected ImageId,EncodedPixels")
        masks: dict[str, list[str]] = defaultdict(list)
        for row in reader:
            if row["EncodedPixels"] and row["EncodedPixels"].strip():
                masks[row["ImageId"]].append(row["EncodedPixels"])
            else:
                masks.setdefault(row["ImageId"], [])
    return dict(masks)

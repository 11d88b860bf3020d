"""Image and mask files read into arrays, each failure a DataError that names the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from skimage import io as skio

from cellseg.data.sample import DataError

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
#: Smallest image side accepted: below it there is no nucleus to segment, only a broken file.
MIN_SIDE = 8


def _decoder_reason(exc: Exception) -> str:
    """A decoder's complaint in one line: imageio's 'no backend' advice (install pyav) is no help for a
    file that is simply not an image."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "Could not find a backend" in text:
        return "no image decoder recognises its contents"
    return text


def read_image(path: Path) -> np.ndarray:
    """Read an image file, turning any decoder failure into a DataError that names the file.

    Floating-point files (TIFF) with NaN or infinite pixels are refused here, by name, instead of
    surfacing later as a NaN loss.
    """
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        array = np.asarray(skio.imread(path))
    except Exception as exc:  # decoders raise many types for truncated or corrupt files
        raise DataError(f"{path}: not a readable image ({_decoder_reason(exc)})") from exc
    if np.issubdtype(array.dtype, np.inexact) and not np.isfinite(array).all():
        bad = int(array.size - np.isfinite(array).sum())
        raise DataError(f"{path}: {bad} pixels are NaN or infinite; fix or remove the file")
    return array


def _check_2d(array: np.ndarray, path: Path, kind: str) -> np.ndarray:
    if array.ndim == 2 or (kind == "image" and array.ndim == 3 and array.shape[-1] in (1, 3, 4)):
        plane = array
    elif kind == "mask" and array.ndim == 3 and array.shape[-1] in (3, 4):
        plane = array[..., 0]  # masks saved as RGB(A) carry the label in every channel
    else:
        raise DataError(
            f"{path}: expected a 2-D {kind}, got an array of shape {array.shape} "
            "(a 3-D stack? split it into 2-D planes first)"
        )
    if min(plane.shape[:2]) < MIN_SIDE:
        raise DataError(
            f"{path}: the {kind} is only {plane.shape[0]}x{plane.shape[1]} px; "
            f"at least {MIN_SIDE}x{MIN_SIDE} is needed"
        )
    return plane


def read_image_2d(path: Path) -> np.ndarray:
    """An image file that must hold one 2-D image (grey, RGB or RGBA)."""
    return _check_2d(read_image(path), path, "image")


def read_mask_2d(path: Path) -> np.ndarray:
    """A mask file that must hold one 2-D mask (RGB(A) masks keep their first channel)."""
    return _check_2d(read_image(path), path, "mask")

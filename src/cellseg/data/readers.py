"""Readers for annotated nucleus images on disk: DSB2018 / BBBC038, paired folders, run-length CSV.

DSB2018: ``<root>/<id>/images/<id>.png`` with one binary PNG per nucleus in ``<root>/<id>/masks/``.
Paired:  ``<root>/images/<stem>.<ext>`` and ``<root>/masks/<stem>.<ext>``; a mask is either binary
(nuclei are then its connected components) or an instance label image, PNG or TIFF, 8 or 16 bit.
Run-length: a Kaggle ``ImageId,EncodedPixels`` CSV (one row per nucleus) gives the masks of the images.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
from skimage import io as skio
from skimage import measure

from cellseg.data.sample import DataError, Sample

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")


def read_image(path: Path) -> np.ndarray:
    """Read an image file, turning any decoder failure into a DataError that names the file."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        return np.asarray(skio.imread(path))
    except Exception as exc:  # decoders raise many types for truncated or corrupt files
        raise DataError(f"{path}: cannot read image ({type(exc).__name__}: {exc})") from exc


def _check_2d(array: np.ndarray, path: Path, kind: str) -> np.ndarray:
    if array.ndim == 3 and array.shape[-1] in (1, 3, 4) and kind == "image":
        return array
    if array.ndim == 2:
        return array
    if kind == "mask" and array.ndim == 3 and array.shape[-1] in (3, 4):
        return array[..., 0]  # masks saved as RGB(A) carry the label in every channel
    raise DataError(
        f"{path}: expected a 2-D {kind}, got an array of shape {array.shape} "
        "(a 3-D stack? split it into 2-D planes first)"
    )


def detect_layout(root: Path) -> str:
    """'paired' if root has images/ and masks/ folders, 'dsb2018' if its sub-folders each have images/."""
    if not root.is_dir():
        raise DataError(f"data folder not found: {root}")
    if (root / "images").is_dir() and (root / "masks").is_dir():
        return "paired"
    if any((child / "images").is_dir() for child in root.iterdir() if child.is_dir()):
        return "dsb2018"
    raise DataError(
        f"{root}: cannot tell the data layout: expected either images/ and masks/ folders (paired) or "
        "one folder per image holding images/ and masks/ (DSB2018). Set data.layout to choose."
    )


def read_dsb2018(root: Path) -> list[Sample]:
    """Every image of a DSB2018-layout folder, with its per-nucleus masks merged into one label map."""
    samples = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        image_path = folder / "images" / f"{folder.name}.png"
        image = _check_2d(read_image(image_path), image_path, "image")
        mask_paths = sorted((folder / "masks").glob("*.png")) if (folder / "masks").is_dir() else []
        if not mask_paths:
            raise DataError(f"{folder}: image has no masks (expected PNGs in {folder / 'masks'})")
        labels = np.zeros(image.shape[:2], np.int32)
        for i, mask_path in enumerate(mask_paths, start=1):
            mask = _check_2d(read_image(mask_path), mask_path, "mask")
            if mask.shape != labels.shape:
                raise DataError(f"{mask_path}: mask size {mask.shape} differs from its image {labels.shape}")
            labels[mask > 0] = i
        samples.append(Sample(folder.name, image, labels))
    return samples


def read_paired(root: Path) -> list[Sample]:
    """Images in ``root/images`` matched by file stem to masks in ``root/masks``."""
    masks = {p.stem: p for p in sorted((root / "masks").iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
    samples = []
    for image_path in sorted((root / "images").iterdir()):
        if image_path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if image_path.stem not in masks:
            raise DataError(f"{image_path}: no mask named '{image_path.stem}.*' in {root / 'masks'}")
        image = _check_2d(read_image(image_path), image_path, "image")
        mask_path = masks[image_path.stem]
        mask = _check_2d(read_image(mask_path), mask_path, "mask")
        if mask.shape != image.shape[:2]:
            raise DataError(f"{mask_path}: mask size {mask.shape} differs from its image {image.shape[:2]}")
        values = np.unique(mask)
        labels = measure.label(mask > 0) if len(values) <= 2 else mask.astype(np.int32)
        samples.append(Sample(image_path.stem, image, labels.astype(np.int32)))
    return samples


def _find_image(root: Path, image_id: str) -> Path:
    """The image of ``image_id``: Kaggle's ``<id>/images/<id>.png``, or ``[images/]<id>.<ext>``."""
    candidates = [root / image_id / "images" / f"{image_id}.png"]
    candidates += [
        folder / f"{image_id}{ext}" for folder in (root / "images", root) for ext in IMAGE_SUFFIXES
    ]
    for path in candidates:
        if path.is_file():
            return path
    raise DataError(
        f"{root}: no image for ImageId '{image_id}' (looked for {candidates[0]} and images/{image_id}.*)"
    )


def read_rle(root: Path, csv_path: Path) -> list[Sample]:
    """Images under ``root`` whose nuclei are given as run-length strings in a Kaggle CSV."""
    from cellseg.data.rle import read_rle_csv, rle_decode

    samples = []
    for image_id, encoded in sorted(read_rle_csv(csv_path).items()):
        image_path = _find_image(root, image_id)
        image = _check_2d(read_image(image_path), image_path, "image")
        if not encoded:
            raise DataError(f"{csv_path}: ImageId '{image_id}' has no nuclei (empty EncodedPixels)")
        labels = np.zeros(image.shape[:2], np.int32)
        for i, rle in enumerate(encoded, start=1):
            labels[rle_decode(rle, labels.shape, f"{csv_path}, ImageId {image_id}, nucleus {i}") > 0] = i
        samples.append(Sample(image_id, image, labels))
    return samples


READERS = {"dsb2018": read_dsb2018, "paired": read_paired}


def read_samples(
    paths: str | Iterable[str], layout: str = "auto", rle_csv: str | None = None
) -> list[Sample]:
    """Read every annotated image under one or several roots; ids are prefixed by root when several.

    With ``rle_csv`` the masks come from that run-length CSV and the roots only supply images.
    """
    roots = [Path(paths)] if isinstance(paths, str | Path) else [Path(p) for p in paths]
    if layout == "rle" and rle_csv is None:
        raise DataError(
            "data.layout is 'rle' but data.rle_csv is not set; give the ImageId,EncodedPixels CSV"
        )
    samples: list[Sample] = []
    for root in roots:
        if not root.is_dir():
            raise DataError(f"data folder not found: {root}")
        if rle_csv is not None:
            found = read_rle(root, Path(rle_csv))
        else:
            found = READERS[detect_layout(root) if layout == "auto" else layout](root)
        if len(roots) > 1:
            for s in found:
                s.id = f"{root.name}/{s.id}"
        samples.extend(found)
    if not samples:
        raise DataError(f"no annotated images found under {', '.join(map(str, roots))}")
    return samples

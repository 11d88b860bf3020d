"""Readers for annotated nucleus images on disk: DSB2018 / BBBC038, paired folders, run-length CSV.

DSB2018: ``<root>/<id>/images/<id>.png`` with one binary PNG per nucleus in ``<root>/<id>/masks/``.
Paired:  ``<root>/images/<stem>.<ext>`` and ``<root>/masks/<stem>.<ext>``; a mask is either binary
(nuclei are then its connected components) or an instance label image, PNG or TIFF, 8 or 16 bit.
Run-length: a Kaggle ``ImageId,EncodedPixels`` CSV (one row per nucleus) gives the masks of the images.
Beside:  ``<root>/<stem>.<ext>`` with its annotation next to it, as QuPath, napari, Cellpose or Fiji write
it (:mod:`cellseg.data.annotations`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
from skimage import measure

from cellseg.data.annotations import has_annotations_beside, scan_beside
from cellseg.data.images import IMAGE_SUFFIXES, read_image_2d, read_mask_2d
from cellseg.data.sample import DataError, Sample, SampleRef


def detect_layout(root: Path) -> str:
    """'paired' if root has images/ and masks/ folders, 'dsb2018' if its sub-folders each have images/,
    'beside' if its images have annotation files beside them (:mod:`cellseg.data.annotations`)."""
    if not root.is_dir():
        raise DataError(f"data folder not found: {root}")
    if (root / "images").is_dir() and (root / "masks").is_dir():
        return "paired"
    if any((child / "images").is_dir() for child in root.iterdir() if child.is_dir()):
        return "dsb2018"
    if has_annotations_beside(root):
        return "beside"
    raise DataError(
        f"{root}: cannot tell the data layout: expected images/ and masks/ folders (paired), one folder "
        "per image holding images/ and masks/ (DSB2018), or images with their annotations beside them "
        "(X.geojson from QuPath, X_labels.tif from napari, X_masks.png or X_seg.npy from Cellpose, "
        "X.zip from Fiji's ROI Manager). Set data.layout to choose."
    )


def _dsb2018_image(folder: Path) -> np.ndarray:
    """``<id>/images/<id>.png``; a missing one is named, with what the folder holds instead."""
    path = folder / "images" / f"{folder.name}.png"
    if not path.is_file():
        found = sorted(p.name for p in path.parent.iterdir()) if path.parent.is_dir() else []
        holds = f"images/ holds {', '.join(found[:3])}" if found else "there is no image in images/"
        raise DataError(
            f"{path}: image file missing ({holds}); the DSB2018 layout needs <id>/images/<id>.png"
        )
    return read_image_2d(path)


def _load_dsb2018(folder: Path) -> Sample:
    image = _dsb2018_image(folder)
    mask_paths = sorted((folder / "masks").glob("*.png")) if (folder / "masks").is_dir() else []
    if not mask_paths:
        raise DataError(f"{folder}: image has no masks (expected PNGs in {folder / 'masks'})")
    labels = np.zeros(image.shape[:2], np.int32)
    for i, mask_path in enumerate(mask_paths, start=1):
        mask = read_mask_2d(mask_path)
        if mask.shape != labels.shape:
            raise DataError(f"{mask_path}: mask size {mask.shape} differs from its image {labels.shape}")
        labels[mask > 0] = i
    return Sample(folder.name, image, labels)


def scan_dsb2018(root: Path) -> list[SampleRef]:
    """One reference per ``<root>/<id>/`` folder; per-nucleus masks are merged into a label map on load."""
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    return [
        SampleRef(
            f.name,
            partial(_load_dsb2018, f),
            partial(_dsb2018_image, f),
            (f / "images" / f"{f.name}.png", f / "masks"),
        )
        for f in folders
    ]


def _load_paired(image_path: Path, mask_path: Path | None) -> Sample:
    if mask_path is None:
        raise DataError(
            f"{image_path}: no mask named '{image_path.stem}.*' in {image_path.parent.parent / 'masks'}"
        )
    image = read_image_2d(image_path)
    mask = read_mask_2d(mask_path)
    if mask.shape != image.shape[:2]:
        raise DataError(f"{mask_path}: mask size {mask.shape} differs from its image {image.shape[:2]}")
    labels = measure.label(mask > 0) if len(np.unique(mask)) <= 2 else mask
    return Sample(image_path.stem, image, labels.astype(np.int32))


def scan_paired(root: Path) -> list[SampleRef]:
    """Images in ``root/images`` matched by file stem to masks in ``root/masks``."""
    masks = {p.stem: p for p in sorted((root / "masks").iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
    images = [p for p in sorted((root / "images").iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    return [
        SampleRef(
            p.stem,
            partial(_load_paired, p, masks.get(p.stem)),
            partial(read_image_2d, p),
            (p, *([masks[p.stem]] if p.stem in masks else [])),
        )
        for p in images
    ]


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


def _load_rle_image(root: Path, image_id: str) -> np.ndarray:
    return read_image_2d(_find_image(root, image_id))


def _load_rle(root: Path, image_id: str, encoded: list[str], csv_path: Path) -> Sample:
    from cellseg.data.rle import rle_decode

    image = _load_rle_image(root, image_id)
    if not encoded:
        raise DataError(f"{csv_path}: ImageId '{image_id}' has no nuclei (empty EncodedPixels)")
    labels = np.zeros(image.shape[:2], np.int32)
    for i, rle in enumerate(encoded, start=1):
        labels[rle_decode(rle, labels.shape, f"{csv_path}, ImageId {image_id}, nucleus {i}") > 0] = i
    return Sample(image_id, image, labels)


def scan_rle(root: Path, csv_path: Path) -> list[SampleRef]:
    """Images under ``root`` whose nuclei are given as run-length strings in a Kaggle CSV."""
    from cellseg.data.rle import read_rle_csv

    return [
        SampleRef(
            image_id,
            partial(_load_rle, root, image_id, encoded, csv_path),
            partial(_load_rle_image, root, image_id),
        )
        for image_id, encoded in sorted(read_rle_csv(csv_path).items())
    ]


SCANNERS = {"dsb2018": scan_dsb2018, "paired": scan_paired, "beside": scan_beside}


def scan_samples(
    paths: str | Iterable[str], layout: str = "auto", rle_csv: str | None = None
) -> list[SampleRef]:
    """References to every annotated image under one or several roots, without decoding any of them.

    Ids are prefixed by the root's name when several roots are given. With ``rle_csv`` the masks come
    from that run-length CSV and the roots only supply images.
    """
    roots = [Path(paths)] if isinstance(paths, str | Path) else [Path(p) for p in paths]
    if layout == "rle" and rle_csv is None:
        raise DataError(
            "data.layout is 'rle' but data.rle_csv is not set; give the ImageId,EncodedPixels CSV"
        )
    refs: list[SampleRef] = []
    for root in roots:
        if not root.is_dir():
            raise DataError(f"data folder not found: {root}")
        if rle_csv is not None:
            found = scan_rle(root, Path(rle_csv))
        else:
            found = SCANNERS[detect_layout(root) if layout == "auto" else layout](root)
        if len(roots) > 1:
            found = [replace(r, id=f"{root.name}/{r.id}") for r in found]
        refs.extend(found)
    if not refs:
        raise DataError(f"no annotated images found under {', '.join(map(str, roots))}")
    return refs


def read_samples(
    paths: str | Iterable[str], layout: str = "auto", rle_csv: str | None = None
) -> list[Sample]:
    """Decode every annotated image under the roots (see :func:`scan_samples`); the first problem raises."""
    samples = []
    for ref in scan_samples(paths, layout, rle_csv):
        sample = ref.load()
        sample.id = ref.id
        samples.append(sample)
    return samples

"""Files a segmentation leaves for people and other tools: label images, outline overlays, nucleus tables.

Every file is written atomically (see :func:`cellseg.core.files.atomic_path`), so a killed run never leaves
half an image that Fiji, QuPath or napari would then fail to open.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import tifffile
from scipy import ndimage as ndi
from skimage.measure import regionprops_table
from skimage.segmentation import mark_boundaries

from cellseg.core.files import atomic_path, write_text
from cellseg.data.preprocessing import normalize, to_channels

logger = logging.getLogger(__name__)

LABEL_FORMATS = ("png", "tif")

#: regionprops_table's names -> the per-nucleus table's columns (y is the row, x the column, in pixels)
NUCLEUS_COLUMNS = {
    "label": "label",
    "centroid-0": "centroid_y",
    "centroid-1": "centroid_x",
    "area": "area",
    "perimeter": "perimeter",
    "eccentricity": "eccentricity",
    "solidity": "solidity",
    "intensity_mean": "mean_intensity",
    "intensity_max": "max_intensity",
    "bbox-0": "bbox_min_y",
    "bbox-1": "bbox_min_x",
    "bbox-2": "bbox_max_y",
    "bbox-3": "bbox_max_x",
}


def save_labels(path: Path, labels: np.ndarray) -> Path:
    """An instance label image that any other tool can read and score: 16-bit PNG or TIFF (by suffix)
    while the nuclei fit, else a 32-bit TIFF, since PNG has no 32-bit grey (a large image's labels are
    written, never lost: ``<id>.tif`` instead of ``<id>.png``, with a warning). Returns the path written."""
    wide = labels.max() > np.iinfo(np.uint16).max
    if wide and path.suffix.lower() not in (".tif", ".tiff"):
        logger.warning(
            f"{path.name}: {labels.max()} nuclei do not fit a 16-bit PNG; written as a 32-bit TIFF"
        )
        path = path.with_suffix(".tif")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        if path.suffix.lower() in (".tif", ".tiff"):
            tifffile.imwrite(tmp, labels.astype(np.uint32 if wide else np.uint16), compression="zlib")
        elif not cv2.imwrite(str(tmp), labels.astype(np.uint16)):
            raise OSError(f"could not write {path}")
    return path


def save_overlay(path: Path, image: np.ndarray, pred: np.ndarray, truth: np.ndarray | None = None) -> None:
    """The image with predicted outlines in magenta (outside) and, if given, true ones in green (inside)."""
    rgb = normalize(to_channels(image, 3, path.stem)).astype(np.float64)
    if truth is not None:
        rgb = mark_boundaries(rgb, truth, color=(0, 1, 0), mode="inner")
    rgb = mark_boundaries(rgb, pred, color=(1, 0, 1), mode="outer")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), np.round(rgb[..., ::-1] * 255).astype(np.uint8)):
            raise OSError(f"could not write {path}")


def nucleus_table(labels: np.ndarray, image: np.ndarray) -> list[dict[str, Any]]:
    """One row per nucleus: position, size, shape and intensity (of the image's grey level, in its units).

    ``eccentricity`` is that of the ellipse with the nucleus's second moments (as scikit-image's);
    ``solidity`` its area over that of the convex hull of its pixel squares (QuPath's, on the pixel
    outline). Both are computed here for all nuclei at once: scikit-image's per-region ones took two
    thirds of a slide chunk's measuring time.
    """
    grey = to_channels(image, 1)[..., 0].astype(np.float64)
    table = regionprops_table(labels, intensity_image=grey, properties=_PROPERTIES)
    table["eccentricity"], table["solidity"] = _shape(labels, table["label"], table["area"])
    columns = {new: table[old] for old, new in NUCLEUS_COLUMNS.items()}
    return [
        {k: (int(v[i]) if k in _INTEGER_COLUMNS else round(float(v[i]), 4)) for k, v in columns.items()}
        for i in range(len(columns["label"]))
    ]


def nucleus_features(
    labels: np.ndarray,
    table: list[dict[str, Any]],
    measurements: list[dict[str, Any]] | None = None,
    origin: tuple[float, float] = (0.0, 0.0),
    scale: float = 1.0,
) -> list[dict[str, Any]]:
    """One GeoJSON Feature per row of ``table`` (:func:`nucleus_table` of ``labels``): the nucleus's
    outline as a detection, with its row (or the matching row of ``measurements``) as measurements.

    Outlines follow pixel edges in QuPath's and ImageJ's coordinates ((0, 0) is the corner of the first
    pixel), so rasterising them again (:func:`cellseg.data.annotations.read_geojson`) gives back every
    pixel; a nucleus in several pieces keeps its largest. ``labels`` may be a crop at ``origin`` (y, x)
    of an image ``scale`` times smaller than the coordinates wanted (a slide's level).
    """
    from skimage.measure import find_contours

    features = []
    for i, row in enumerate(table):
        y0, x0, y1, x1 = (row[k] for k in ("bbox_min_y", "bbox_min_x", "bbox_max_y", "bbox_max_x"))
        mask = np.pad(labels[y0:y1, x0:x1] == row["label"], 1).astype(np.float32)
        ring = max(find_contours(mask, 0.5), key=len)  # (row, col) in the padded crop, centres at integers
        ring = _turns(ring)  # straight runs as one segment: the same polygon
        oy, ox = origin[0] + y0 - 0.5, origin[1] + x0 - 0.5
        points = [[round((x + ox) * scale, 3), round((y + oy) * scale, 3)] for y, x in ring.tolist()]
        shown = row if measurements is None else measurements[i]
        features.append({
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": [points]},
            "properties": {
                "objectType": "detection",
                "classification": {"name": "Nucleus"},
                "measurements": {k: v for k, v in shown.items() if not k.startswith("bbox")},
            },
        })  # fmt: skip
    return features


def _turns(ring: np.ndarray) -> np.ndarray:
    """A contour's first and last point and every point where it turns: the points in the middle of a
    straight run dropped, as scikit-image's ``approximate_polygon`` with a zero tolerance drops them
    (the same points, for contours on a half-pixel grid), vectorised (that function took 70 % of a
    slide's measuring time)."""
    if len(ring) < 3:
        return ring
    before, after = ring[1:-1] - ring[:-2], ring[2:] - ring[1:-1]
    turns = before[:, 0] * after[:, 1] - before[:, 1] * after[:, 0] != 0
    return ring[np.concatenate([[True], turns, [True]])]


def _shape(labels: np.ndarray, ids: np.ndarray, areas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eccentricity and solidity of the nuclei ``ids`` (see :func:`nucleus_table`)."""
    if len(ids) == 0:
        return np.zeros(0), np.zeros(0)
    ys, xs = np.nonzero(labels)
    owner = labels[ys, xs].astype(np.int64)
    count = np.bincount(owner)[ids]

    def mean(values: np.ndarray) -> np.ndarray:
        return np.bincount(owner, values.astype(np.float64))[ids] / count

    my, mx = mean(ys), mean(xs)
    vy, vx, cov = mean(ys * ys) - my**2, mean(xs * xs) - mx**2, mean(ys * xs) - my * mx
    half, root = (vy + vx) / 2, np.sqrt(((vy - vx) / 2) ** 2 + cov**2)
    major, minor = half + root, np.maximum(half - root, 0.0)
    eccentricity = np.sqrt(1 - np.divide(minor, major, out=np.ones_like(major), where=major > 0))
    solidity = np.ones(len(ids))
    boxes = ndi.find_objects(labels)
    corners = np.array([[0, 0], [1, 0], [0, 1], [1, 1]], np.float32)
    for i, label in enumerate(ids):
        box = boxes[label - 1]
        py, px = np.nonzero(labels[box] == label)
        points = (np.stack([px, py], -1).astype(np.float32)[:, None, :] + corners).reshape(-1, 1, 2)
        solidity[i] = areas[i] / max(cv2.contourArea(cv2.convexHull(points)), 1.0)
    return eccentricity, solidity


def nuclei_geojson(labels: np.ndarray, table: list[dict[str, Any]]) -> dict[str, Any]:
    """The nuclei as a GeoJSON FeatureCollection that QuPath imports as detections (drag and drop, or
    File > Import objects): :func:`nucleus_features` of the whole image."""
    return {"type": "FeatureCollection", "features": nucleus_features(labels, table)}


def save_geojson(path: Path, labels: np.ndarray, table: list[dict[str, Any]]) -> None:
    """:func:`nuclei_geojson` written to ``path`` (compact: a slide has hundreds of thousands)."""
    import json

    write_text(path, json.dumps(nuclei_geojson(labels, table), separators=(",", ":")))


_PROPERTIES = (
    "label",
    "centroid",
    "area",
    "perimeter",
    "intensity_mean",
    "intensity_max",
    "bbox",
)
_INTEGER_COLUMNS = {"label", "area", "bbox_min_y", "bbox_min_x", "bbox_max_y", "bbox_max_x"}

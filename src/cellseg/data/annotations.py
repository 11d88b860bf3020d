"""Nucleus annotations as the tools people annotate with write them, found beside each image.

The "beside" layout is a folder of images, each with its annotation next to it (``X`` is the image's
file name without its extension):

=======================================  ==========================================  ====================
file beside ``X.<ext>``                  written by                                  read as
=======================================  ==========================================  ====================
``X.geojson`` (or ``X.json``)            QuPath, "Export objects as GeoJSON"         polygons, rasterised
``X_labels.tif`` / ``.tiff`` / ``.png``  napari (Labels layer), Fiji label images    instance labels
``X_masks.tif`` / ``.tiff`` / ``.png``   Cellpose (``--save_png`` / ``--save_tif``)  instance labels
``X_seg.npy``                            Cellpose GUI                                its ``masks`` array
``X.zip`` / ``X_RoiSet.zip`` / ``.roi``  Fiji / ImageJ ROI Manager                   polygons, rasterised
=======================================  ==========================================  ====================

Polygons are rasterised in pixel coordinates whose (0, 0) is the corner of the first pixel (QuPath's and
ImageJ's convention): a pixel belongs to a nucleus when its centre lies inside. Holes are cut out, every
part of a multi-polygon belongs to the same nucleus, and where nuclei overlap the smaller keeps the shared
pixels. In a QuPath file, detections and cells are the nuclei (a cell's ``nucleusGeometry`` where it has
one), and annotation objects beside them mark the region of interest: a rectangle to which image and
nuclei are cropped, so only what was annotated is trained on and scored (:func:`region_box`). In a file
without detections (a hand-drawn one), the annotation objects are the nuclei and the whole image counts.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from skimage import draw

from cellseg.data.images import IMAGE_SUFFIXES, read_image_2d, read_mask_2d
from cellseg.data.sample import DataError, Sample, SampleRef

#: Annotation file name endings, in the order they are looked for beside an image.
ANNOTATION_ENDINGS = (
    ".geojson", ".json",
    "_labels.tif", "_labels.tiff", "_labels.png",
    "_masks.tif", "_masks.tiff", "_masks.png",
    "_seg.npy",
    "_RoiSet.zip", ".zip", ".roi",
)  # fmt: skip

Polygon = Sequence[Sequence[Sequence[float]]]  # GeoJSON: exterior ring, then holes; rings of (x, y)


def annotation_for(image: Path) -> Path | None:
    """The annotation file beside ``image`` (the first of :data:`ANNOTATION_ENDINGS`), or None."""
    for ending in ANNOTATION_ENDINGS:
        candidate = image.with_name(image.stem + ending)
        if candidate.is_file():
            return candidate
    return None


def is_annotation(path: Path) -> bool:
    """Whether ``path`` is named as an annotation of some image (``*_labels.tif``, ``*_masks.png``...)."""
    name = path.name
    return any(name.endswith(e) for e in ANNOTATION_ENDINGS if e.startswith("_"))


def _ring(mask: np.ndarray, ring: Sequence[Sequence[float]], value: bool) -> None:
    points = np.asarray(ring, np.float64)
    if points.ndim != 2 or points.shape[0] < 3 or points.shape[1] < 2:
        return  # a degenerate ring covers no pixel centre
    rows, cols = draw.polygon(points[:, 1] - 0.5, points[:, 0] - 0.5, mask.shape)
    mask[rows, cols] = value


def polygon_mask(polygons: Iterable[Polygon], shape: tuple[int, int]) -> np.ndarray:
    """Boolean mask of the pixels whose centres lie inside any of ``polygons`` (their holes excluded)."""
    mask = np.zeros(shape, bool)
    for rings in polygons:
        part = np.zeros(shape, bool)
        _ring(part, rings[0], True)
        for hole in rings[1:]:
            _ring(part, hole, False)
        mask |= part
    return mask


def labels_from_masks(masks: Sequence[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Instance labels from one boolean mask per nucleus: larger nuclei first, so where two overlap the
    smaller keeps the shared pixels. Empty masks (too small to cover a pixel centre) are left out."""
    labels = np.zeros(shape, np.int32)
    kept = [m for m in masks if m.any()]
    for i, mask in enumerate(sorted(kept, key=lambda m: -int(m.sum())), start=1):
        labels[mask] = i
    return labels


def _geojson_polygons(geometry: dict[str, Any] | None, where: str) -> list[Polygon]:
    if not geometry:
        return []
    kind = geometry.get("type")
    if kind == "Polygon":
        return [geometry["coordinates"]]
    if kind == "MultiPolygon":
        return list(geometry["coordinates"])
    if kind == "GeometryCollection":
        return [p for g in geometry.get("geometries", []) for p in _geojson_polygons(g, where)]
    if kind in ("Point", "MultiPoint", "LineString", "MultiLineString"):
        return []  # points and lines outline no nucleus
    raise DataError(f"{where}: unknown GeoJSON geometry type {kind!r}")


def _features(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A QuPath GeoJSON file's nuclei and its regions: detections (cells, tiles) are nuclei and
    annotation objects beside them regions; in a file without detections the annotations are nuclei."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not a readable GeoJSON file ({exc})") from exc
    features = data.get("features", [data]) if isinstance(data, dict) else data
    if not isinstance(features, list) or not all(isinstance(f, dict) for f in features):
        raise DataError(f"{path}: expected a GeoJSON FeatureCollection or a list of features")

    def kind(feature: dict[str, Any]) -> str:
        return str((feature.get("properties") or {}).get("objectType", "annotation"))

    detected = [f for f in features if kind(f) in ("detection", "cell", "tile")]
    annotations = [f for f in features if kind(f) == "annotation"]
    return (detected, annotations) if detected else (annotations, [])


def region_box(path: Path, shape: tuple[int, int]) -> tuple[slice, slice] | None:
    """The annotated region of a QuPath file (its annotation objects beside detections), as the rows and
    columns of its rectangle; None when the whole image is annotated (or the file is not QuPath's).

    Only what lies inside the region is trained on and scored. A region must be a rectangle (QuPath's
    rectangle tool): the pixels of a free-form region's bounding box outside it would count as
    background, so one is refused with the fix.
    """
    if not path.name.endswith((".geojson", ".json")):
        return None
    _, regions = _features(path)
    if not regions:
        return None
    polygons = [
        p for i, f in enumerate(regions) for p in _geojson_polygons(f.get("geometry"), f"{path}, region {i}")
    ]
    inside = polygon_mask(polygons, shape)
    if not inside.any():
        raise DataError(f"{path}: its region of interest covers no pixel of the {shape[1]}x{shape[0]} image")
    rows, cols = np.flatnonzero(inside.any(axis=1)), np.flatnonzero(inside.any(axis=0))
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    if inside[box].mean() < 0.99:
        raise DataError(
            f"{path}: the region of interest (its annotation objects) is not a rectangle; draw it with "
            "QuPath's rectangle tool, or annotate its whole bounding box"
        )
    return box


def read_geojson(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """Instance labels from a QuPath GeoJSON export (a FeatureCollection, a list of features or one)."""
    nuclei, _ = _features(path)
    masks = []
    for i, feature in enumerate(nuclei):
        geometry = feature.get("nucleusGeometry") or feature.get("geometry")
        masks.append(polygon_mask(_geojson_polygons(geometry, f"{path}, feature {i}"), shape))
    return labels_from_masks(masks, shape)


def read_imagej_rois(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """Instance labels from an ImageJ ROI set (``.zip``) or a single ``.roi`` file (via roifile)."""
    from roifile import ROI_TYPE, ImagejRoi

    try:
        rois = ImagejRoi.fromfile(path)
    except Exception as exc:  # roifile raises several types for damaged files
        raise DataError(f"{path}: not a readable ImageJ ROI file ({exc})") from exc
    areas = (ROI_TYPE.POLYGON, ROI_TYPE.FREEHAND, ROI_TYPE.TRACED, ROI_TYPE.RECT, ROI_TYPE.OVAL)
    masks = []
    for roi in rois if isinstance(rois, list) else [rois]:
        if roi.roitype not in areas:
            continue  # points and lines outline no nucleus
        rings = roi.coordinates(multi=True)  # a composite ROI: its shapes; an oval: its outline
        masks.append(polygon_mask([[ring] for ring in rings], shape))
    return labels_from_masks(masks, shape)


def read_cellpose_seg(path: Path) -> np.ndarray:
    """The ``masks`` of a Cellpose GUI ``_seg.npy`` (a pickled dict: open only files you trust)."""
    try:
        data = np.load(path, allow_pickle=True).item()
        return np.asarray(data["masks"]).astype(np.int32)
    except Exception as exc:
        raise DataError(f"{path}: not a Cellpose _seg.npy file with a 'masks' array ({exc})") from exc


def read_annotation(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """Instance labels (int32, 0 background) of the image of size ``shape`` from its annotation file."""
    name = path.name
    if name.endswith((".geojson", ".json")):
        labels = read_geojson(path, shape)
    elif name.endswith((".zip", ".roi")):
        labels = read_imagej_rois(path, shape)
    elif name.endswith("_seg.npy"):
        labels = read_cellpose_seg(path)
    else:
        labels = read_mask_2d(path).astype(np.int32)
    if labels.shape != shape:
        raise DataError(f"{path}: annotation size {labels.shape} differs from its image {shape}")
    return labels


def _image_beside(image_path: Path, annotation: Path | None) -> np.ndarray:
    """The image, cropped to its annotation's region of interest if it has one (:func:`region_box`)."""
    image = read_image_2d(image_path)
    box = None if annotation is None else region_box(annotation, image.shape[:2])
    return image if box is None else image[box]


def _load_beside(image_path: Path, annotation: Path | None) -> Sample:
    if annotation is None:
        endings = ", ".join(image_path.stem + e for e in ANNOTATION_ENDINGS[:3])
        raise DataError(f"{image_path}: no annotation beside it (looked for {endings}, ...)")
    image = read_image_2d(image_path)
    labels = read_annotation(annotation, image.shape[:2])
    box = region_box(annotation, image.shape[:2])
    if box is not None:
        image, labels = image[box], labels[box]
    return Sample(image_path.stem, image, labels)


def _images(root: Path) -> list[Path]:
    """The image files directly in ``root``, annotations named as such (``X_labels.tif``...) left out."""
    return [
        p for p in sorted(root.iterdir())
        if p.suffix.lower() in IMAGE_SUFFIXES and not is_annotation(p) and p.is_file()
    ]  # fmt: skip


def scan_beside(root: Path) -> list[SampleRef]:
    """One reference per image in ``root`` with its annotation beside it (see the module docstring)."""
    refs = []
    for image in _images(root):
        annotation = annotation_for(image)
        refs.append(
            SampleRef(
                image.stem,
                partial(_load_beside, image, annotation),
                partial(_image_beside, image, annotation),
                (image, *([annotation] if annotation else [])),
            )
        )
    return refs


def has_annotations_beside(root: Path) -> bool:
    """Whether some image directly in ``root`` has an annotation file beside it."""
    return any(annotation_for(p) is not None for p in _images(root))

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
one), and annotation objects beside them mark the regions of interest: image and nuclei are cropped to
each (a free-form region: to the largest rectangles inside it), so only what was annotated is trained on
and scored (:func:`region_boxes`). In a file
without detections (a hand-drawn one), the annotation objects are the nuclei and the whole image counts.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi
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


#: A free-form region is covered by the largest rectangles inside it (each one sample) until they cover
#: this share of it, or the next would be narrower than :data:`MIN_REGION_SIDE` px.
REGION_COVER = 0.9
MIN_REGION_SIDE = 32
_GRID = 256  # a free-form region is searched for rectangles on a grid of at most this many cells a side

Box = tuple[slice, slice]


def region_boxes(path: Path) -> list[Box] | None:
    """The annotated regions of a QuPath file (its annotation objects beside detections) as rectangles
    of pixel rows and columns, one sample each; None when the whole image is annotated (or the file is
    not QuPath's).

    Only what lies inside a region is trained on and scored. A rectangle (QuPath's rectangle tool) is
    one box; a free-form region is covered by the largest rectangles that fit inside it
    (:data:`REGION_COVER`, :data:`MIN_REGION_SIDE`), since the pixels of its bounding box outside it
    would count as background. Boxes may reach past the image; the image's size clips them when read.
    """
    if not path.name.endswith((".geojson", ".json")):
        return None
    _, regions = _features(path)
    if not regions:
        return None
    polygons = [
        p for i, f in enumerate(regions) for p in _geojson_polygons(f.get("geometry"), f"{path}, region {i}")
    ]
    corners = [xy for rings in polygons for xy in rings[0]] if polygons else []
    far = np.ceil(np.max(np.asarray(corners, np.float64)[:, :2], axis=0)).astype(int) if corners else (0, 0)
    inside = polygon_mask(polygons, (max(int(far[1]), 0), max(int(far[0]), 0)))
    if not inside.any():
        raise DataError(f"{path}: its region of interest covers no pixel")
    return cover(inside, f"{path}: a region of interest")


def cover(inside: np.ndarray, what: str = "the region") -> list[Box]:
    """Rectangles of pixel rows and columns within the True pixels of ``inside``: each connected part
    that is a rectangle whole, each other part by the largest rectangles that fit in it
    (:data:`REGION_COVER`, :data:`MIN_REGION_SIDE`); a part that holds none is named (``what``)."""
    boxes = []
    for part in ndi.find_objects(ndi.label(inside)[0]):
        if inside[part].mean() >= 0.99:  # a rectangle: all of it
            boxes.append(part)
        else:
            boxes += _cover(inside[part], (part[0].start, part[1].start), what)
    return boxes


def _cover(inside: np.ndarray, origin: tuple[int, int], what: str) -> list[Box]:
    """The largest rectangles inside a free-form region, greedily, on a grid of cells wholly inside it."""
    cell = max(1, -(-max(inside.shape) // _GRID))
    rows, cols = inside.shape[0] // cell, inside.shape[1] // cell
    grid = inside[: rows * cell, : cols * cell].reshape(rows, cell, cols, cell).all(axis=(1, 3))
    boxes: list[Box] = []
    covered, area = 0, int(inside.sum())
    while covered < REGION_COVER * area:
        top, left, height, width = _largest_rectangle(grid)
        if min(height, width) * cell < MIN_REGION_SIDE:
            break
        grid[top : top + height, left : left + width] = False
        y, x = origin[0] + top * cell, origin[1] + left * cell
        boxes.append((slice(y, y + height * cell), slice(x, x + width * cell)))
        covered += height * width * cell * cell
    if not boxes:
        raise DataError(
            f"{what} holds no rectangle of {MIN_REGION_SIDE} x {MIN_REGION_SIDE} px: draw it larger, or "
            "with QuPath's rectangle tool"
        )
    return boxes


def _largest_rectangle(grid: np.ndarray) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the largest all-True rectangle of ``grid``: per row, the heights of
    the True columns ending there, and the largest rectangle under that histogram (a stack of rising bars)."""
    best, best_area = (0, 0, 0, 0), 0
    heights = np.zeros(grid.shape[1], int)
    for row in range(grid.shape[0]):
        heights = np.where(grid[row], heights + 1, 0)
        bars = [*heights.tolist(), 0]  # the closing 0 empties the stack
        stack: list[int] = []
        for col, height in enumerate(bars):
            while stack and bars[stack[-1]] >= height:
                tall = bars[stack.pop()]
                left = stack[-1] + 1 if stack else 0
                if tall * (col - left) > best_area:
                    best, best_area = (row - tall + 1, left, tall, col - left), tall * (col - left)
            stack.append(col)
    return best


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


def _clip(box: Box | None, shape: tuple[int, int], annotation: Path) -> Box | None:
    """``box`` within an image of ``shape`` (None: the whole image); one outside it is named."""
    if box is None:
        return None
    rows, cols = (slice(max(s.start, 0), min(s.stop, n)) for s, n in zip(box, shape, strict=True))
    if rows.start >= rows.stop or cols.start >= cols.stop:
        raise DataError(
            f"{annotation}: its region of interest covers no pixel of the {shape[1]}x{shape[0]} image"
        )
    return rows, cols


def _image_beside(image_path: Path, annotation: Path | None, box: Box | None = None) -> np.ndarray:
    """The image, cropped to the region ``box`` of its annotation if it has one (:func:`region_boxes`)."""
    image = read_image_2d(image_path)
    box = None if annotation is None else _clip(box, image.shape[:2], annotation)
    return image if box is None else image[box]


def _load_beside(image_path: Path, annotation: Path | None, box: Box | None = None, name: str = "") -> Sample:
    if annotation is None:
        endings = ", ".join(image_path.stem + e for e in ANNOTATION_ENDINGS[:3])
        raise DataError(f"{image_path}: no annotation beside it (looked for {endings}, ...)")
    image = read_image_2d(image_path)
    labels = read_annotation(annotation, image.shape[:2])
    box = _clip(box, image.shape[:2], annotation)
    if box is not None:
        image, labels = image[box], labels[box]
    return Sample(name or image_path.stem, image, labels)


def _failing(error: DataError) -> Callable[[], Any]:
    """A loader that raises ``error``: a damaged annotation fails when its sample is read, as every
    bad file does (so ``data.on_bad_sample: skip`` can leave it out), not while the folder is listed."""

    def load() -> Any:
        raise error

    return load


def _images(root: Path) -> list[Path]:
    """The image files directly in ``root``, annotations named as such (``X_labels.tif``...) left out."""
    return [
        p for p in sorted(root.iterdir())
        if p.suffix.lower() in IMAGE_SUFFIXES and not is_annotation(p) and p.is_file()
    ]  # fmt: skip


def scan_beside(root: Path) -> list[SampleRef]:
    """One reference per image in ``root`` with its annotation beside it (see the module docstring), or
    one per region of interest when its annotation marks several (ids ``<image>_r1``, ``_r2``, ...)."""
    refs = []
    for image in _images(root):
        annotation = annotation_for(image)
        sources = (image, *([annotation] if annotation else []))
        try:
            boxes: list[Box | None] = (region_boxes(annotation) if annotation else None) or [None]
        except DataError as exc:
            refs.append(SampleRef(image.stem, _failing(exc), _failing(exc), sources))
            continue
        names = [image.stem] if len(boxes) == 1 else [f"{image.stem}_r{i}" for i in range(1, len(boxes) + 1)]
        for name, box in zip(names, boxes, strict=True):
            refs.append(
                SampleRef(
                    name,
                    partial(_load_beside, image, annotation, box, name),
                    partial(_image_beside, image, annotation, box),
                    sources,
                )
            )
    return refs


def has_annotations_beside(root: Path) -> bool:
    """Whether some image directly in ``root`` has an annotation file beside it."""
    return any(annotation_for(p) is not None for p in _images(root))

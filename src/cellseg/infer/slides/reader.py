"""Whole-slide images read lazily: a region of a pyramid level at a time, never the whole slide.

TIFF-based slides (pyramidal OME-TIFF, BigTIFF, Aperio SVS, Hamamatsu NDPI) are read with tifffile as a
zarr store, so a region costs only the tiles it covers; OME-Zarr folders with zarr; any other image file
is read whole (it is small enough to be an ordinary image). Each level keeps its own axes and is
presented as (H, W) or (H, W, C) with at most 4 channels, as :func:`cellseg.data.preprocessing.to_channels`
expects.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cellseg.data import DataError
from cellseg.data.images import read_image_2d

#: Files read as slides whatever their size; a plain TIFF is one when it is tiled or has a pyramid.
SLIDE_SUFFIXES = (".svs", ".ndpi", ".btf", ".ome.tif", ".ome.tiff", ".ome.zarr", ".zarr")
_TIFF_SUFFIXES = (".tif", ".tiff", ".svs", ".ndpi", ".btf")
#: A TIFF with more pixels than this is read as a slide (lazily) even without tiles or a pyramid.
LARGE_IMAGE_PIXELS = 64_000_000
_UNIT_UM = {"nm": 1e-3, "nanometer": 1e-3, "µm": 1.0, "um": 1.0, "micrometer": 1.0, "micron": 1.0,
            "mm": 1e3, "millimeter": 1e3, "cm": 1e4, "centimeter": 1e4}  # fmt: skip


def _suffix(path: Path) -> str:
    name = path.name.lower().rstrip("/")
    return next((s for s in SLIDE_SUFFIXES + _TIFF_SUFFIXES if name.endswith(s)), path.suffix.lower())


def slide_id(path: Path) -> str:
    """A slide's name without its format's suffix (``a.ome.tif`` -> ``a``): its outputs are named by it."""
    name = path.name.rstrip("/")
    suffix = _suffix(path)
    return name[: -len(suffix)] if suffix and name.lower().endswith(suffix) else path.stem


def is_slide(path: Path) -> bool:
    """Whether ``path`` is read as a slide: a slide format, an OME-Zarr folder, or a TIFF that is tiled,
    pyramidal or larger than :data:`LARGE_IMAGE_PIXELS`."""
    suffix = _suffix(path)
    if suffix in SLIDE_SUFFIXES:
        return True
    if suffix not in _TIFF_SUFFIXES or not path.is_file():
        return False
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            return (
                len(series.levels) > 1
                or tif.pages[0].is_tiled
                or math.prod(series.shape) / max(1, _channel_count(series.axes, series.shape))
                > LARGE_IMAGE_PIXELS
            )
    except Exception:  # not a readable TIFF: the ordinary reader names the problem
        return False


def _channel_count(axes: str, shape: tuple[int, ...]) -> int:
    return math.prod(n for a, n in zip(axes, shape, strict=True) if a not in "YX")


@dataclass
class Slide:
    """A slide's pyramid: ``levels[0]`` is full resolution, each level (H, W[, C]) after :meth:`read`.

    ``pixel_size_um`` is the width of a full-resolution pixel in micrometres (None when the file does
    not say). ``levels`` are lazily indexed arrays (zarr or numpy) in the file's own ``axes``.
    """

    name: str
    levels: list[Any]
    axes: str
    pixel_size_um: float | None = None
    source: str = "image"
    _closers: list[Any] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        extra = {
            a: n for a, n in zip(self.axes, self.levels[0].shape, strict=True) if a not in "YXSC" and n > 1
        }
        if extra:
            raise DataError(
                f"{self.name}: a slide must be one 2-D plane, but it has axes {extra}; "
                "export the plane to segment (e.g. with Fiji or bfconvert)"
            )
        channels = _channel_count(self.axes, self.levels[0].shape)
        if channels > 4:
            raise DataError(f"{self.name}: {channels} channels; expected grey, RGB or RGBA")

    def shape(self, level: int = 0) -> tuple[int, int]:
        """(height, width) of a level."""
        dims = dict(zip(self.axes, self.levels[level].shape, strict=True))
        return dims["Y"], dims["X"]

    def downsample(self, level: int) -> float:
        """How many full-resolution pixels one pixel of ``level`` spans (along x)."""
        return self.shape(0)[1] / self.shape(level)[1]

    def read(self, level: int, y0: int, y1: int, x0: int, x1: int, step: int = 1) -> np.ndarray:
        """The region [y0, y1) x [x0, x1) of a level as (H, W) or (H, W, C), every ``step``-th pixel."""
        index = tuple(
            slice(y0, y1, step) if a == "Y" else slice(x0, x1, step) if a == "X" else slice(None)
            for a in self.axes
        )
        return self.as_yxc(np.asarray(self.levels[level][index]))

    def as_yxc(self, array: Any) -> Any:
        """An array in the file's ``axes`` as (H, W) or (H, W, C): Y, X first, the other axes (samples
        or channels; any others are 1) merged last. Works on NumPy and, lazily, on dask arrays."""
        order = [self.axes.index("Y"), self.axes.index("X")]
        array = array.transpose(order + [i for i in range(array.ndim) if i not in order])
        array = array.reshape(array.shape[0], array.shape[1], -1)
        return array[..., 0] if array.shape[-1] == 1 else array

    def thumbnail(self, max_side: int = 2048) -> tuple[np.ndarray, float]:
        """A low-resolution view of the whole slide (at most ``max_side`` px a side) and its scale
        relative to full resolution (thumbnail px per full-resolution px), read from the smallest level
        that is at least that large, subsampled."""
        candidates = [i for i in range(len(self.levels)) if max(self.shape(i)) >= max_side] or [0]
        level = max(candidates, key=lambda i: self.downsample(i))
        h, w = self.shape(level)
        step = max(1, math.ceil(max(h, w) / max_side))
        image = self.read(level, 0, h, 0, w, step)
        return image, image.shape[1] / self.shape(0)[1]

    def close(self) -> None:
        for closer in self._closers:
            closer.close()
        self._closers.clear()

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_slide(path: str | Path, pixel_size_um: float | None = None) -> Slide:
    """A :class:`Slide` of a TIFF-based slide, an OME-Zarr folder or an ordinary image file.

    ``pixel_size_um`` overrides what the file says (or fills in what it does not).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    suffix = _suffix(path)
    if path.is_dir() or suffix == ".zarr":
        slide = _open_ome_zarr(path)
    elif suffix in _TIFF_SUFFIXES or suffix in (".ome.tif", ".ome.tiff"):
        slide = _open_tiff(path)
    else:
        image = read_image_2d(path)
        slide = Slide(path.name, [image], "YX" if image.ndim == 2 else "YXS")
    if pixel_size_um is not None:
        if not pixel_size_um > 0:
            raise ValueError(f"pixel size {pixel_size_um} µm: must be positive")
        slide.pixel_size_um = pixel_size_um
    return slide


def _open_tiff(path: Path) -> Slide:
    import tifffile
    import zarr

    try:
        tif = tifffile.TiffFile(path)
        series = tif.series[0]
        store = tif.aszarr(series=0)
        group = zarr.open(store, mode="r")
    except Exception as exc:
        raise DataError(f"{path}: not a readable TIFF slide ({exc})") from exc
    levels = [group] if isinstance(group, zarr.Array) else [group[str(i)] for i in range(len(series.levels))]
    kind = "OME-TIFF" if tif.is_ome else "Aperio SVS" if tif.is_svs else "NDPI" if tif.is_ndpi else "TIFF"
    slide = Slide(path.name, levels, series.axes, _tiff_pixel_size(tif), kind)
    slide._closers += [store, tif]
    return slide


def _tiff_pixel_size(tif: Any) -> float | None:
    """Micrometres per pixel from OME-XML, an Aperio description (MPP) or the resolution tags."""
    if tif.is_ome:
        pixels = ET.fromstring(tif.ome_metadata).find(".//{*}Pixels")
        if pixels is not None and pixels.get("PhysicalSizeX"):
            return float(pixels.get("PhysicalSizeX")) * _UNIT_UM.get(
                pixels.get("PhysicalSizeXUnit", "µm"), 1.0
            )
    page = tif.pages[0]
    found = re.search(r"MPP\s*=\s*([0-9.]+)", page.description or "")
    if found:
        return float(found.group(1))
    resolution, unit = page.tags.get("XResolution"), page.tags.get("ResolutionUnit")
    if resolution is None or unit is None or int(unit.value) not in (2, 3):  # 1: no absolute unit
        return None
    numerator, denominator = resolution.value
    if not numerator:
        return None
    per_unit = numerator / denominator  # pixels per inch (2) or per centimetre (3)
    return (25400.0 if int(unit.value) == 2 else 1e4) / per_unit


def _open_ome_zarr(path: Path) -> Slide:
    import zarr

    try:
        group = zarr.open_group(path, mode="r")
    except Exception as exc:
        raise DataError(f"{path}: not a readable zarr group ({exc})") from exc
    attrs = dict(group.attrs)
    multiscales = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
    if not multiscales:
        raise DataError(f"{path}: a zarr group without OME-Zarr 'multiscales' metadata")
    scales = multiscales[0]
    axes = scales.get("axes", [{"name": "y"}, {"name": "x"}])
    names = "".join((a["name"] if isinstance(a, dict) else a).upper() for a in axes)
    levels = [group[d["path"]] for d in scales["datasets"]]
    pixel_size = None
    x_axis = names.index("X")
    transforms = scales["datasets"][0].get("coordinateTransformations", [])
    unit = axes[x_axis].get("unit") if isinstance(axes[x_axis], dict) else None
    for transform in transforms:
        if transform.get("type") == "scale" and unit in _UNIT_UM:
            pixel_size = float(transform["scale"][x_axis]) * _UNIT_UM[unit]
    return Slide(path.name, levels, names, pixel_size, "OME-Zarr")

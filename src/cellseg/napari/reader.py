"""napari reader for whole slides (SVS, NDPI, BTF, OME-TIFF, tiled or pyramidal TIFF, OME-Zarr): a lazy
multiscale Image layer from :func:`cellseg.infer.slides.open_slide`, never the whole slide in memory.

The layer keeps its file as ``layer.source.path``, so the widget hands the file itself to the model
process (:func:`cellseg.infer.slides.segment_slide`), which reads it chunk by chunk.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from cellseg.infer.slides.reader import Slide, is_slide, open_slide, slide_id

LayerData = tuple[Any, dict[str, Any], str]


def get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData]] | None:
    """:func:`read_slide` for one slide file or OME-Zarr folder; None for anything else (napari's own
    readers take ordinary images)."""
    if isinstance(path, list):
        return None if len(path) != 1 or not is_slide(Path(path[0])) else read_slide
    return read_slide if is_slide(Path(path)) else None


def _yxc(slide: Slide, level: Any) -> Any:
    """A level as (H, W[, C]) (:meth:`Slide.as_yxc`), lazily through dask where the file stores other
    axes; as it is where it already is that."""
    if slide.axes in ("YX", "YXS", "YXC"):
        return level
    import dask.array as da

    return slide.as_yxc(da.from_array(level))


def layer_data(slide: Slide, name: str) -> LayerData:
    """The slide as a napari Image layer: its pyramid, RGB when it has 3 or 4 samples, scaled in
    micrometres when its pixel size is known."""
    levels = [_yxc(slide, level) for level in slide.levels]
    rgb = levels[0].ndim == 3 and levels[0].shape[-1] in (3, 4)
    size = slide.pixel_size_um
    meta: dict[str, Any] = {"name": name, "rgb": rgb, "multiscale": len(levels) > 1}
    if size:
        meta.update(scale=(size, size), units="um", metadata={"pixel_size_um": size})
    return (levels if len(levels) > 1 else levels[0], meta, "image")


def read_slide(path: str | list[str]) -> list[LayerData]:
    """The slide at ``path`` as one lazy layer (its file stays open while napari reads it)."""
    file = Path(path[0] if isinstance(path, list) else path)
    return [layer_data(open_slide(file), slide_id(file))]

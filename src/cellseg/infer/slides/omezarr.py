"""A slide's label image as a chunked, pyramidal OME-Zarr (NGFF 0.4, zarr format 2): napari (with
napari-ome-zarr), QuPath and Fiji (via Bio-Formats / MoBIE) open it, and it is written chunk by chunk
while a slide is segmented, so a label image never has to fit in memory and a killed run keeps its
finished chunks.

Labels are 32-bit: a slide holds hundreds of thousands of nuclei, past what 16-bit images count.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

LABEL_DTYPE = np.uint32
CHUNK = 1024  # px a side of a stored chunk


def _metadata(name: str, levels: int, pixel_size_um: float | None) -> dict[str, Any]:
    unit = {"unit": "micrometer"} if pixel_size_um else {}
    size = pixel_size_um or 1.0
    return {
        "multiscales": [
            {
                "version": "0.4",
                "name": name,
                "axes": [{"name": "y", "type": "space", **unit}, {"name": "x", "type": "space", **unit}],
                "datasets": [
                    {
                        "path": str(i),
                        "coordinateTransformations": [{"type": "scale", "scale": [size * 2**i, size * 2**i]}],
                    }
                    for i in range(levels)
                ],
            }
        ],
        "image-label": {"version": "0.4"},  # napari-ome-zarr opens it as a Labels layer
    }


def open_labels(path: Path, shape: tuple[int, int]) -> Any:
    """The full-resolution label array of ``path`` (created, all 0, if the folder does not exist yet)."""
    import zarr

    if (path / "0").is_dir():
        array = zarr.open_group(path, mode="r+")["0"]
        if tuple(array.shape) != tuple(shape):
            raise ValueError(f"{path}: labels of shape {array.shape}, the slide needs {shape}")
        return array
    group = zarr.open_group(path, mode="w", zarr_format=2)
    return group.create_array("0", shape=shape, chunks=(CHUNK, CHUNK), dtype=LABEL_DTYPE, fill_value=0)


def finish_pyramid(path: Path, name: str, pixel_size_um: float | None, min_side: int = CHUNK) -> int:
    """Add halved levels (every other pixel: labels are never blended) until a level fits in
    ``min_side``, one stored chunk at a time, and write the multiscales metadata. Returns the number of
    levels."""
    import zarr

    group = zarr.open_group(path, mode="r+")
    level, source = 0, group["0"]
    while max(source.shape) > min_side:
        level += 1
        shape = tuple((n + 1) // 2 for n in source.shape)
        target = group.create_array(
            str(level), shape=shape, chunks=(CHUNK, CHUNK), dtype=LABEL_DTYPE, fill_value=0, overwrite=True
        )
        for y in range(0, shape[0], CHUNK):  # memory stays flat, whatever the slide's size
            for x in range(0, shape[1], CHUNK):
                block = source[2 * y : 2 * (y + CHUNK), 2 * x : 2 * (x + CHUNK)]
                target[y : y + CHUNK, x : x + CHUNK] = block[::2, ::2]
        source = target
    group.attrs.update(_metadata(name, level + 1, pixel_size_um))
    return level + 1

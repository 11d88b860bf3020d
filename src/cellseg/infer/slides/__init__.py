"""Whole-slide images: read lazily (:mod:`.reader`), tissue found on a thumbnail (:mod:`.tissue`),
segmented chunk by chunk with seams stitched (:mod:`.segment`), labels written as OME-Zarr
(:mod:`.omezarr`).

Reading needs no TensorFlow (the napari plugin's reader runs in the viewer's process, where TensorFlow
must never load: :mod:`cellseg.napari.child`), so :mod:`.segment` loads on first use of its names.
"""

from __future__ import annotations

import importlib
from typing import Any

from cellseg.core.config import SlideOptions
from cellseg.infer.slides.reader import SLIDE_SUFFIXES, Slide, is_slide, open_slide, slide_id

_SEGMENT = ("SlideResult", "segment_slide")


def __getattr__(name: str) -> Any:
    if name in _SEGMENT:
        return getattr(importlib.import_module("cellseg.infer.slides.segment"), name)
    raise AttributeError(f"module 'cellseg.infer.slides' has no attribute {name!r}")


__all__ = [
    "SLIDE_SUFFIXES",
    "Slide",
    "SlideOptions",
    "SlideResult",
    "is_slide",
    "open_slide",
    "segment_slide",
    "slide_id",
]

"""Whole-slide images: read lazily (:mod:`.reader`), tissue found on a thumbnail (:mod:`.tissue`),
segmented chunk by chunk with seams stitched (:mod:`.segment`), labels written as OME-Zarr
(:mod:`.omezarr`)."""

from cellseg.config import SlideOptions
from cellseg.slides.reader import SLIDE_SUFFIXES, Slide, is_slide, open_slide, slide_id
from cellseg.slides.segment import SlideResult, segment_slide

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

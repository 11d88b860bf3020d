"""Nucleus size normalisation: rescale every image so its nuclei have about the same width in pixels.

Nucleus widths in DSB2018 span tenfold (8 to 100 px), more than a small U-Net trained for minutes
learns to cover. With ``data.nucleus_size`` set, training images are rescaled by their annotated nucleus
width, and at prediction the width is estimated from the model's own output (:func:`estimate_factor`),
so the network only ever has to segment nuclei of one size. The width measure is the same on both
sides: twice the largest inscribed radius of each separated nucleus (area-weighted median), read off
the nucleus *interior* for the three-class head and off the foreground otherwise.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import find_boundaries

from cellseg.data.preprocessing import resized_shape

#: Rescaling factors are kept within these bounds: a 256 px image grows to 1024 px at most.
MIN_FACTOR, MAX_FACTOR = 0.2, 4.0

#: :func:`estimate_factor`'s passes at most, and the change of zoom below which a pass stops it.
ZOOM_PASSES, ZOOM_TOLERANCE = 3, 1.2


def nucleus_width(nuclei: np.ndarray) -> float | None:
    """Typical width (px) of the separated nuclei in a boolean mask, None when there are none.

    Twice the largest distance-to-background inside each connected nucleus, medianed over nucleus
    pixels: a large nucleus counts more than a fragment, and touching nuclei are measured apart as
    long as the mask separates them.
    """
    components, n = ndi.label(nuclei)
    if n == 0:
        return None
    distance = ndi.distance_transform_edt(nuclei)
    radius = np.zeros(n + 1)
    np.maximum.at(radius, components[nuclei], distance[nuclei])  # 100x faster than ndi.maximum here
    radius = radius[1:]
    area = np.bincount(components.ravel(), minlength=n + 1)[1:]
    order = np.argsort(radius)
    cumulative = np.cumsum(area[order])
    return float(2 * radius[order][np.searchsorted(cumulative, cumulative[-1] / 2)])


def annotated_nuclei(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """The mask :func:`nucleus_width` measures for instance labels: what the model's head predicts."""
    nuclei = labels > 0
    if num_classes == 3:
        nuclei &= ~find_boundaries(labels, mode="inner")
    return nuclei


def factor_for(width: float | None, target: float) -> float:
    """The zoom that brings nuclei of ``width`` to ``target`` px; 1 when there is no nucleus."""
    if width is None or width <= 0:
        return 1.0
    return float(np.clip(target / width, MIN_FACTOR, MAX_FACTOR))


def annotated_factor(labels: np.ndarray, num_classes: int, target: float) -> float:
    """The zoom that brings an annotated image's nuclei to ``target`` px: what training applies."""
    return factor_for(nucleus_width(annotated_nuclei(labels, num_classes)), target)


def resize_labels(labels: np.ndarray, factor: float) -> np.ndarray:
    """Instance labels zoomed by ``factor`` with nearest-neighbour sampling, so no label is invented."""
    h, w = resized_shape(labels.shape, factor)
    if (h, w) == labels.shape:
        return labels
    return cv2.resize(labels.astype(np.int32), (w, h), interpolation=cv2.INTER_NEAREST)


def estimate_factor(
    nuclei_at: Callable[[float], np.ndarray],
    target: float,
    start: float = 0.25,
    passes: int = ZOOM_PASSES,
    tolerance: float = ZOOM_TOLERANCE,
) -> float:
    """The zoom for an unannotated image, found by predicting, measuring and zooming again.

    ``nuclei_at(factor)`` is the model's nucleus mask for the image zoomed by ``factor``. Each pass
    measures the nuclei and zooms towards ``target``, until a pass would change the zoom by less than
    ``tolerance`` times. It starts zoomed *out*: a model shown nuclei much wider than it was trained on
    cuts them into fragments about as wide as ``target``, which would look like the right zoom, while
    nuclei shown too small are still measured about right; starting at the native scale left 100 px
    nuclei unzoomed. The first pass always moves, however close the start looks: zoomed out, densely
    packed nuclei merge into blobs about as wide as ``target`` (H&E tissue: 14 px for 16), which passed
    as converged, so the whole image was predicted at x0.25 and its foreground collapsed; one pass on,
    the blobs part and the estimate moves on. A start the first pass confirms costs nothing more (the
    prediction at a zoom already seen is reused). ``benchmarks/bench_zoom.py`` measures the estimate.
    """
    factor = start
    for step in range(passes):
        width = nucleus_width(nuclei_at(factor))
        if width is None:
            if factor == start != 1.0:  # nuclei too small to see zoomed out: look at the native scale
                factor = 1.0
                continue
            return factor
        new = factor_for(width / factor, target)
        if step and max(new / factor, factor / new) < tolerance:  # the start is never taken as it is
            return factor
        factor = new
    return factor

"""Where a slide has tissue: chunks of bare glass are skipped, never sent through the network.

A stained or brightfield slide shows glass as bright, colourless pixels; tissue, even pale stroma, is
darker or coloured. The mask is made on a thumbnail (:meth:`cellseg.infer.slides.reader.Slide.thumbnail`), so
it costs one low-resolution read. A fluorescence slide's background is dark and its faint cytoplasm
hard to tell from it, so there every chunk counts as tissue (no chunk is skipped for a guess).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from cellseg.data.preprocessing import to_channels

#: Glass: at least this fraction of the slide's bright level, and a colour spread (max - min channel)
#: under this fraction of it (eosin-pale stroma spreads 0.2-0.3, glass under 0.05).
GLASS_BRIGHTNESS, GLASS_SATURATION = 0.85, 0.08


def tissue_mask(thumbnail: np.ndarray, kind: str) -> np.ndarray:
    """Boolean (h, w) mask of the thumbnail's tissue for a slide of modality ``kind``
    (:data:`cellseg.data.preprocessing.MODALITIES`); all True for fluorescence."""
    if kind == "fluorescence":
        return np.ones(thumbnail.shape[:2], bool)
    rgb = to_channels(thumbnail, 3).astype(np.float32)
    grey = ndi.uniform_filter(rgb.mean(axis=-1), 5)
    spread = ndi.uniform_filter(rgb.max(axis=-1) - rgb.min(axis=-1), 5)
    white = float(np.percentile(grey, 99))
    if white <= 0:
        return np.zeros(thumbnail.shape[:2], bool)
    glass = (grey >= GLASS_BRIGHTNESS * white) & (spread <= GLASS_SATURATION * white)
    tissue = ndi.binary_opening(~glass, iterations=2)  # specks of dust and noise are not tissue
    return ndi.binary_dilation(tissue, iterations=3)  # nor is a nucleus at the edge of tissue lost


def covered(mask: np.ndarray, scale: float, box: tuple[int, int, int, int]) -> float:
    """The fraction of ``box`` (y0, y1, x0, x1 in pixels of some level of the slide) that ``mask`` (a
    thumbnail at ``scale`` thumbnail px per pixel of that level) marks as tissue."""
    y0, y1, x0, x1 = box
    h, w = mask.shape
    ty0, tx0 = min(int(y0 * scale), h - 1), min(int(x0 * scale), w - 1)
    ty1, tx1 = max(ty0 + 1, min(h, int(np.ceil(y1 * scale)))), max(tx0 + 1, min(w, int(np.ceil(x1 * scale))))
    return float(mask[ty0:ty1, tx0:tx1].mean())

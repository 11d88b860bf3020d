"""The HoVer head's distance maps (Graham et al., HoVer-Net, Medical Image Analysis 2019): targets,
their storage, and how they turn with the image.

Every nucleus pixel gets its horizontal and vertical offset from its nucleus's centre of mass, scaled
to [-1, 1] within the nucleus (each side by its own extreme, as HoVer-Net does). Inside a nucleus the
maps only rise (left to right, top to bottom); between two touching nuclei they fall from +1 to -1,
which post-processing cuts seeds along (:func:`falls`; :func:`cellseg.labels.postprocess.instances`, split
``hover``), where a probability of "boundary" is soft.

The maps are offsets: turning an image by 90 degrees swaps and negates them, flipping it negates one,
which is what test-time flips undo (:func:`unflip`). Per-nucleus scaling makes them invariant to zoom,
so a prediction at one zoom is resized back to the image like the class probabilities.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi
from skimage.measure import label

#: Channels of a HoVer model's output: background, interior, boundary, horizontal, vertical.
HOVER_CHANNELS = 5
#: Nucleus ids are stored in training targets as uint8: 1 + (id - 1) mod ID_CYCLE, 0 for background.
ID_CYCLE = 255


def hv_maps(labels: np.ndarray) -> np.ndarray:
    """(H, W, 2) float32 horizontal and vertical maps of instance labels; 0 on background."""
    maps = np.zeros((*labels.shape, 2), np.float32)
    for index, box in enumerate(ndi.find_objects(labels), start=1):
        if box is None:
            continue
        inside = labels[box] == index
        ys, xs = np.nonzero(inside)
        for channel, offsets in ((0, xs - xs.mean()), (1, ys - ys.mean())):
            scaled = offsets.astype(np.float32)
            for side in (scaled < 0, scaled > 0):
                if side.any():
                    scaled[side] /= np.abs(scaled[side]).max()
            maps[box][..., channel][inside] = scaled
    return maps


def stored_ids(labels: np.ndarray) -> np.ndarray:
    """Instance labels as uint8 (see :data:`ID_CYCLE`): training targets keep ids, not maps, because
    maps cannot follow a patch through every augmentation (a mirrored border copies a nucleus without
    negating its map); :func:`patch_maps` computes them on the finished patch, as HoVer-Net does."""
    return np.where(labels > 0, (labels - 1) % ID_CYCLE + 1, 0).astype(np.uint8)


def patch_maps(ids: np.ndarray) -> np.ndarray:
    """(..., H, W, 2) float32 maps of (..., H, W) stored ids, patch by patch. Each connected region of
    one id is a nucleus of its own: the copies a mirrored border makes, and two nuclei whose ids
    coincide modulo :data:`ID_CYCLE`, are parted unless they touch."""
    flat = ids.reshape(-1, *ids.shape[-2:])
    maps = [hv_maps(label(patch, background=0, connectivity=1)) for patch in flat]
    return np.stack(maps).reshape(*ids.shape, 2).astype(np.float32)


def unflip(output: np.ndarray, axes: Sequence[int]) -> np.ndarray:
    """A batch (N, H, W, K) predicted on images flipped along ``axes`` (1: up-down, 2: left-right),
    flipped back; a HoVer output's vertical / horizontal map is negated with its axis."""
    out = np.flip(output, tuple(axes)) if axes else output
    if output.shape[-1] != HOVER_CHANNELS or not axes:
        return out
    sign = np.ones(HOVER_CHANNELS, output.dtype)
    sign[3] = -1.0 if 2 in axes else 1.0
    sign[4] = -1.0 if 1 in axes else 1.0
    return out * sign


def falls(hv: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """Where the maps fall: the horizontal map from left to right, or the vertical from top to bottom
    (after Gaussian smoothing by ``sigma`` px). Inside one nucleus both only rise; they fall at its rim
    (to the background's 0) and where two nuclei touch (from +1 to -1), so interior seeds that keep clear
    of falling maps stay one per nucleus. The sign alone decides: nothing depends on nucleus size."""
    smooth = [ndi.gaussian_filter(hv[..., c], sigma) for c in (0, 1)]
    return (ndi.sobel(smooth[0], axis=1) < 0) | (ndi.sobel(smooth[1], axis=0) < 0)

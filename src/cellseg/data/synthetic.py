"""Deterministic synthetic nucleus images with instance labels: the default when no data is given.

Each image is a function of (seed, index) alone, so any subset can be regenerated exactly. Nuclei are
irregular ellipses of log-normal size, some placed in clusters so they touch; each has its own brightness
and chromatin texture. The image is blurred, lit unevenly, and corrupted by Poisson shot noise and
Gaussian read noise, in one of two styles: fluorescence (grey, dark background, bright nuclei) or
stained brightfield (colour, light background, dark purple nuclei).
"""

from __future__ import annotations

import cv2
import numpy as np

from cellseg.core.config import SyntheticConfig
from cellseg.data.sample import DataError, Sample

_HEMATOXYLIN_OD = np.array([0.65, 0.70, 0.29], np.float32)  # optical density per RGB channel
_EOSIN_OD = np.array([0.07, 0.99, 0.11], np.float32)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Zero-mean, unit-spread smooth random field."""
    field = cv2.GaussianBlur(rng.standard_normal(shape).astype(np.float32), (0, 0), sigma)
    return field / (field.std() + 1e-6)


def _nucleus_polygon(rng: np.random.Generator, centre: np.ndarray, radius: float) -> np.ndarray:
    """An ellipse with a few low-frequency boundary wobbles, as an (N, 2) int polygon in (x, y)."""
    theta = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    ratio = rng.uniform(0.6, 1.0)
    angle = rng.uniform(0, np.pi)
    r = np.ones_like(theta)
    for k in (2, 3, 4, 5):
        r += rng.normal(0, 0.06 / k * 2) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    x = radius * r * np.cos(theta)
    y = radius * ratio * r * np.sin(theta)
    c, s = np.cos(angle), np.sin(angle)
    pts = np.stack([centre[0] + c * x - s * y, centre[1] + s * x + c * y], axis=1)
    return np.round(pts).astype(np.int32)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """Keep one connected piece, so an instance label is never split in two."""
    count, comp, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=4)
    if count <= 2:
        return mask
    return comp == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))


def _labels(rng: np.random.Generator, size: int, cfg: SyntheticConfig) -> np.ndarray:
    labels = np.zeros((size, size), np.int32)
    count = int(rng.integers(cfg.nuclei_min, cfg.nuclei_max + 1))
    clusters = rng.uniform(0, size, (int(rng.integers(1, 4)), 2))
    scratch = np.zeros_like(labels, np.uint8)
    next_label = 1
    for _ in range(count):
        radius = cfg.radius_mean * rng.lognormal(0.0, 0.25)
        if rng.random() < 0.5:  # clustered: touching neighbours are where segmentation gets hard
            centre = clusters[rng.integers(len(clusters))] + rng.normal(0, 1.6 * radius, 2)
        else:
            centre = rng.uniform(0, size, 2)
        scratch[:] = 0
        cv2.fillPoly(scratch, [_nucleus_polygon(rng, centre, radius)], 1)
        free = _largest_component((scratch > 0) & (labels == 0))  # later nuclei tuck behind earlier ones
        if free.sum() >= max(12, 0.3 * scratch.sum()):
            labels[free] = next_label
            next_label += 1
    return labels


def _render(rng: np.random.Generator, labels: np.ndarray, style: str) -> np.ndarray:
    size = labels.shape[0]
    n = int(labels.max())
    brightness = np.concatenate([[0.0], rng.uniform(0.35, 1.0, n)]).astype(np.float32)
    texture = 1.0 + 0.25 * _smooth_noise(rng, labels.shape, 1.2)
    density = brightness[labels] * np.clip(texture, 0.3, None) * (labels > 0)
    illumination = 1.0 + 0.15 * _smooth_noise(rng, labels.shape, size / 4)
    blur = rng.uniform(0.6, 1.6)
    peak = rng.uniform(40, 400)  # photons at full brightness: lower means noisier
    if style == "fluorescence":
        signal = cv2.GaussianBlur(0.9 * density + 0.06, (0, 0), blur) * illumination
        signal = rng.poisson(np.clip(signal, 0, None) * peak) / peak
        signal = signal + rng.normal(0, 0.01, signal.shape)
        grey = np.clip(signal, 0, 1)
        return np.repeat((grey[..., None] * 255).astype(np.uint8), 3, axis=-1)
    if style == "brightfield":
        stroma = np.clip(0.15 + 0.1 * _smooth_noise(rng, labels.shape, 3.0), 0, None)
        od = density[..., None] * 1.2 * _HEMATOXYLIN_OD + stroma[..., None] * _EOSIN_OD
        od = cv2.GaussianBlur(od, (0, 0), blur)
        light = np.array([0.95, 0.93, 0.95], np.float32) * illumination[..., None]
        rgb = light * np.exp(-od)
        rgb = rng.poisson(np.clip(rgb, 0, None) * peak * 2) / (peak * 2)
        rgb = np.clip(rgb + rng.normal(0, 0.01, rgb.shape), 0, 1)
        return (rgb * 255).astype(np.uint8)
    raise DataError(f"unknown synthetic style '{style}'; use 'fluorescence' or 'brightfield'")


def make_sample(index: int, seed: int, cfg: SyntheticConfig) -> Sample:
    """Synthetic image number ``index`` of the set identified by ``seed`` (styles alternate by index)."""
    if cfg.nuclei_min > cfg.nuclei_max:
        raise DataError(f"data.synthetic.nuclei_min ({cfg.nuclei_min}) > nuclei_max ({cfg.nuclei_max})")
    if not cfg.styles:
        raise DataError("data.synthetic.styles is empty; list 'fluorescence' and/or 'brightfield'")
    rng = np.random.default_rng([seed, index])
    style = cfg.styles[index % len(cfg.styles)]
    labels = _labels(rng, cfg.image_size, cfg)
    image = _render(rng, labels, style)
    return Sample(id=f"synthetic-{seed}-{index:04d}-{style}", image=image, labels=labels)


def make_samples(cfg: SyntheticConfig, seed: int) -> list[Sample]:
    return [make_sample(i, seed, cfg) for i in range(cfg.num_images)]

"""Albumentations augmentation of training patches, reproducible under parallel ``tf.data`` maps.

Each patch is augmented by a transform seeded with (run seed, patch number), so the augmented stream is
the same on every run and after ``--resume``, whatever order the parallel workers finish in. Each worker
thread keeps its own ``Compose``, because a shared one would race on its random state.
"""

from __future__ import annotations

import threading

import albumentations as A
import cv2
import numpy as np

from cellseg.config import AugmentConfig


def build_transform(cfg: AugmentConfig) -> A.Compose | None:
    """The albumentations pipeline the config asks for, or None when it asks for none."""
    reflect = {"border_mode": cv2.BORDER_REFLECT_101}
    steps: list[A.BasicTransform] = []
    if cfg.scale:
        steps.append(A.Affine(scale=(1 - cfg.scale, 1 + cfg.scale), p=0.5, **reflect))
    if cfg.elastic:
        steps.append(A.ElasticTransform(alpha=30, sigma=6, p=cfg.elastic, **reflect))
    if cfg.brightness_contrast:
        limit = cfg.brightness_contrast
        steps.append(A.RandomBrightnessContrast(limit, limit, p=0.8))
    if cfg.colour:  # stain and colour variation between labs, scanners and protocols
        steps.append(
            A.OneOf(
                [
                    A.HueSaturationValue(hue_shift_limit=20, sat_shift_limit=30, val_shift_limit=0),
                    A.RGBShift(0.1, 0.1, 0.1),
                    A.ChannelShuffle(),
                    A.ToGray(),
                ],
                p=cfg.colour,
            )
        )
    if cfg.invert:  # dark nuclei on light ground <-> bright nuclei on dark ground
        steps.append(A.InvertImg(p=cfg.invert))
    if cfg.blur:
        steps.append(A.GaussianBlur(blur_limit=(3, 5), p=cfg.blur))
    if cfg.noise:
        steps.append(A.GaussNoise(std_range=(0.01, 0.05), p=cfg.noise))
    return A.Compose(steps) if steps else None


class PatchAugmenter:
    """Callable ``(image, mask, patch_number) -> (image, mask)`` for ``tf.numpy_function``."""

    def __init__(self, cfg: AugmentConfig, seed: int) -> None:
        self.cfg = cfg
        self.seed = seed
        self._local = threading.local()

    @property
    def enabled(self) -> bool:
        return build_transform(self.cfg) is not None

    def __call__(
        self, image: np.ndarray, mask: np.ndarray, number: np.int64
    ) -> tuple[np.ndarray, np.ndarray]:
        transform = getattr(self._local, "transform", None)
        if transform is None:
            transform = self._local.transform = build_transform(self.cfg)
        transform.set_random_seed(int(np.random.SeedSequence([self.seed, int(number)]).generate_state(1)[0]))
        out = transform(image=image, mask=mask)
        return np.clip(out["image"], 0.0, 1.0).astype(np.float32), out["mask"].astype(np.uint8)

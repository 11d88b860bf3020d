"""Albumentations augmentation of training patches, reproducible under parallel ``tf.data`` maps.

Each patch is augmented by a transform seeded with (run seed, patch number), so the augmented stream is
the same on every run and after ``--resume``, whatever order the parallel workers finish in. Each worker
thread keeps its own ``Compose``, because a shared one would race on its random state.

H&E stain augmentation (``stain``) acts only on patches of stained images, and in their own polarity: a
stain matrix describes dark haematoxylin on a light ground, so a patch the preprocessing inverted
(``data.polarity: bright_nuclei``) is inverted back for it, and again after.
"""

from __future__ import annotations

import threading

import albumentations as A
import cv2
import numpy as np

from cellseg.core.config import AugmentConfig


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


#: How a training image shows stain, per image, for :class:`PatchAugmenter`: not stained (no stain
#: augmentation), stained as acquired, stained and inverted by the preprocessing.
NOT_STAINED, STAINED, STAINED_INVERTED = 0, 1, 2


def build_stain_transform(cfg: AugmentConfig) -> A.HEStain | None:
    """H&E stain jitter (a random reference stain matrix, stain intensities scaled and shifted), or None."""
    return A.HEStain(method="random_preset", p=cfg.stain) if cfg.stain else None


class PatchAugmenter:
    """Callable ``(image, mask, patch_number, stain) -> (image, mask)`` for ``tf.numpy_function``;
    ``stain`` is the patch's image's :data:`NOT_STAINED` / :data:`STAINED` / :data:`STAINED_INVERTED`."""

    def __init__(self, cfg: AugmentConfig, seed: int) -> None:
        self.cfg = cfg
        self.seed = seed
        self._local = threading.local()

    @property
    def enabled(self) -> bool:
        return build_transform(self.cfg) is not None or build_stain_transform(self.cfg) is not None

    def _transforms(self) -> tuple[A.Compose | None, A.HEStain | None]:
        if not hasattr(self._local, "transforms"):
            self._local.transforms = build_transform(self.cfg), build_stain_transform(self.cfg)
        return self._local.transforms

    def __call__(
        self, image: np.ndarray, mask: np.ndarray, number: np.int64, stain: np.int8 = NOT_STAINED
    ) -> tuple[np.ndarray, np.ndarray]:
        transform, stain_transform = self._transforms()
        if stain_transform is not None and stain != NOT_STAINED and image.shape[-1] == 3:
            # its own random stream, so that switching stain augmentation on changes nothing else
            stain_transform.set_random_seed(self._seed(number, 1))
            inverted = stain == STAINED_INVERTED
            image = stain_transform(image=1 - image if inverted else image)["image"]
            image = np.clip(1 - image if inverted else image, 0.0, 1.0).astype(np.float32)
        if transform is not None:
            transform.set_random_seed(self._seed(number))
            out = transform(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        return np.clip(image, 0.0, 1.0).astype(np.float32), mask.astype(np.uint8)

    def _seed(self, number: np.int64, *stream: int) -> int:
        return int(np.random.SeedSequence([self.seed, int(number), *stream]).generate_state(1)[0])

"""The preprocessing contract: how a raw image becomes the network's input, one object for every stage.

Training patches, whole-image prediction and the exported bioimage.io package must prepare an image the
same way, or a model sees something it was never trained on. :class:`Preprocessing` is built once from a
run's ``data`` config (and so stored with the run, in ``config.yaml``); everything that prepares an image
asks it. A new preprocessing key touches the config, this class and a test.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cellseg.config import DataConfig
from cellseg.data.sample import dark_nuclei, equalize, normalize, to_channels
from cellseg.data.scale import resize


@dataclass(frozen=True)
class Preprocessing:
    """``channels``, ``nucleus_size`` (px; None: native scale), ``equalize`` and ``bright_nuclei``
    (``data.polarity: bright_nuclei``) of a run's data config."""

    channels: int = 3
    nucleus_size: float | None = None
    equalize: bool = False
    bright_nuclei: bool = False

    @classmethod
    def from_config(cls, data: DataConfig) -> Preprocessing:
        return cls(data.channels, data.nucleus_size, data.equalize, data.polarity == "bright_nuclei")

    def inverts(self, image: np.ndarray) -> bool:
        """Whether this image is inverted: dark nuclei on a light ground, with ``bright_nuclei``."""
        return self.bright_nuclei and dark_nuclei(image)

    def oriented(self, image: np.ndarray, name: str = "image") -> tuple[np.ndarray, bool]:
        """The raw image in the network's channels, and whether it is to be inverted (:meth:`inverts`,
        read off the converted image: what the network is fed, also by an exported model's user)."""
        image = to_channels(image, self.channels, name)
        return image, self.inverts(image)

    def apply(self, image: np.ndarray, name: str = "image", factor: float = 1.0) -> np.ndarray:
        """A raw image as the network sees it: its channels, zoomed by ``factor`` (nucleus size, see
        :mod:`cellseg.data.scale`), inverted if :meth:`inverts`, normalised to [0, 1], equalised locally
        with ``equalize``."""
        return self.prepare(image, name, factor)[0]

    def prepare(self, image: np.ndarray, name: str = "image", factor: float = 1.0) -> tuple[np.ndarray, bool]:
        """:meth:`apply`, and whether it inverted the image (training records it per image)."""
        image, inverted = self.oriented(image, name)
        if inverted:  # negated before normalising: what any tool's "invert" gives, since
            image = -image.astype(np.float32)  # normalize() ignores offsets (see describe)
        normalized = normalize(resize(image, factor))
        return (equalize(normalized) if self.equalize else normalized), inverted

    def describe(self) -> list[str]:
        """What a user of the exported model must do by hand, one paragraph each (the package README):
        the steps bioimage.io preprocessing operations cannot express."""
        notes = []
        if self.nucleus_size is not None:
            notes.append(
                f"Scale: the model was trained on images zoomed so that their nuclei are about "
                f"{self.nucleus_size:g} px\nwide (twice the largest inscribed radius of a nucleus interior). "
                "Zoom an image by that width over its own\nnuclei's width before prediction, and the output "
                "back; no bioimage.io operation describes this.\ncellseg's `predict` command estimates each "
                "image's zoom from the model's output and applies it."
            )
        if self.bright_nuclei:
            notes.append(
                "Polarity: the model was trained on bright nuclei on a dark background. Invert images with "
                "dark nuclei on\na light background (brightfield, H&E or haematoxylin stained tissue) before "
                "prediction, e.g. Fiji's\nEdit > Invert: any inversion gives the same input after "
                "`scale_range`. cellseg's `predict` command\nrecognises such images and inverts them itself."
            )
        return notes

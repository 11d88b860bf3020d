"""Whole-image prediction: overlapping tiles, batched, blended, optionally flipped, optionally zoomed.

An image is reflect-padded up to at least one tile, cut into tiles that overlap by ``overlap`` pixels,
and the tile predictions are averaged with weights that fall off towards each tile's border, where a
U-Net with zero padding sees least context. Every tile has the same shape, so the prediction function
is traced once, whatever the image sizes. A model trained with ``data.nucleus_size`` predicts on the
image zoomed so its nuclei have that width (estimated from the model's own output, see
:func:`cellseg.data.scale.estimate_factor`); its output is zoomed back to the image's size.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from cellseg.core import runs
from cellseg.core.config import Config, InferenceOptions
from cellseg.data.hover import HOVER_CHANNELS, unflip
from cellseg.data.preprocessing import Decided, Preprocessing, resize
from cellseg.data.scale import estimate_factor
from cellseg.data.tiles import grid_starts, pad_to
from cellseg.labels.postprocess import Probabilities
from cellseg.model.unet import load_model


def blend_window(tile: int, overlap: int) -> np.ndarray:
    """(tile, tile, 1) weights: 1 in the middle, ramping linearly down over the ``overlap`` border."""
    ramp = np.minimum(1.0, (np.arange(tile) + 0.5) / max(overlap, 1))
    ramp = np.minimum(ramp, ramp[::-1])
    return np.outer(ramp, ramp)[..., None].astype(np.float32)


def probabilities(output: np.ndarray, factor: float = 1.0) -> Probabilities:
    """The model's (H, W, K) output as foreground (and, for the three-class head, interior; for the
    HoVer head, its maps) probability maps."""
    if output.shape[-1] == 1:
        return Probabilities(output[..., 0], factor=factor)
    maps = output[..., 3:] if output.shape[-1] == HOVER_CHANNELS else None
    return Probabilities(1.0 - output[..., 0], output[..., 1], factor=factor, hv=maps)


def _zoomed_back(output: np.ndarray, factor: float, image: np.ndarray) -> Probabilities:
    """Probability maps of an output predicted on ``image`` zoomed by ``factor``, at the image's size."""
    return probabilities(resize(output, factor, size=image.shape[:2]), factor)


class TiledPredictor:
    """Predict images of any size with a fully convolutional model.

    ``preprocessing`` prepares each image exactly as in training; ``multiple`` is 2**depth of the U-Net:
    the tile size must be divisible by it. With ``preprocessing.nucleus_size`` each image is predicted at
    the zoom that brings its nuclei to that width, estimated from the model's own output.
    """

    def __init__(
        self,
        model: keras.Model,
        preprocessing: Preprocessing,
        multiple: int,
        options: InferenceOptions | None = None,
    ) -> None:
        options = options or InferenceOptions()
        tile, overlap = options.tile, options.overlap
        if tile % multiple:
            raise ValueError(f"tile size {tile} must be a multiple of {multiple} (2**model.depth)")
        if not 0 <= overlap < tile // 2:
            raise ValueError(f"overlap {overlap} must be in [0, {tile // 2}) for tile size {tile}")
        self.model, self.preprocessing, self.options = model, preprocessing, options
        self.tile, self.overlap = tile, overlap
        self.window = blend_window(tile, overlap)
        spec = tf.TensorSpec([None, tile, tile, preprocessing.channels], tf.float32)
        self._predict = tf.function(lambda x: model(x, training=False), input_signature=[spec])

    def _batch(self, tiles: np.ndarray) -> np.ndarray:
        if not self.options.flips:
            return self._predict(tiles).numpy()
        total = 0.0
        for axes in ((), (1,), (2,), (1, 2)):
            flipped = np.flip(tiles, axes) if axes else tiles
            total = total + unflip(self._predict(np.ascontiguousarray(flipped)).numpy(), axes)
        return total / 4

    def predict_normalized(self, image: np.ndarray) -> np.ndarray:
        """Model output (H, W, K) for a normalised (H, W, C) float32 image."""
        h, w = image.shape[:2]
        padded = pad_to(image, max(h, self.tile), max(w, self.tile))
        stride = self.tile - self.overlap
        corners = [
            (y, x)
            for y in grid_starts(padded.shape[0], self.tile, stride)
            for x in grid_starts(padded.shape[1], self.tile, stride)
        ]
        total = weight = None
        batch = self.options.batch_size
        for i in range(0, len(corners), batch):
            chunk = corners[i : i + batch]
            tiles = np.stack([padded[y : y + self.tile, x : x + self.tile] for y, x in chunk])
            out = self._batch(tiles)
            if total is None:
                total = np.zeros((*padded.shape[:2], out.shape[-1]), np.float32)
                weight = np.zeros((*padded.shape[:2], 1), np.float32)
            for (y, x), pred in zip(chunk, out, strict=True):
                total[y : y + self.tile, x : x + self.tile] += pred * self.window
                weight[y : y + self.tile, x : x + self.tile] += self.window
        return (total / weight)[:h, :w]

    def _output(
        self, image: np.ndarray, factor: float, name: str, decided: Decided | None = None
    ) -> np.ndarray:
        """Model output for a raw image zoomed by ``factor``, prepared exactly as in training."""
        return self.predict_normalized(self.preprocessing.apply(image, name, factor, decided))

    def at_zoom(
        self, image: np.ndarray, factor: float, name: str = "image", decided: Decided | None = None
    ) -> Probabilities:
        """Probability maps for a raw image predicted at a zoom given, not estimated (e.g. the zoom its
        masks give: ``benchmarks/bench_zoom.py`` measures what the estimate costs, or one zoom for all of
        a slide's chunks), at its size; ``decided``: the polarity and stains of its slide, not the image's
        own (:meth:`Preprocessing.oriented`)."""
        return _zoomed_back(self._output(image, factor, name, decided), factor, image)

    def _estimate(self, image: np.ndarray, name: str) -> tuple[float, np.ndarray]:
        """The zoom for a raw image (1 without ``nucleus_size``) and the model's output at that zoom."""
        outputs: dict[float, np.ndarray] = {}

        def output_at(factor: float) -> np.ndarray:
            if factor not in outputs:
                outputs[factor] = self._output(image, factor, name)
            return outputs[factor]

        size = self.preprocessing.nucleus_size
        if size is None:
            return 1.0, output_at(1.0)

        def nuclei_at(factor: float) -> np.ndarray:
            probs = probabilities(output_at(factor))
            return (probs.foreground if probs.interior is None else probs.interior) > 0.5

        factor = estimate_factor(nuclei_at, size)
        return factor, output_at(factor)

    def zoom(self, image: np.ndarray, name: str = "image") -> float:
        """The zoom :meth:`__call__` would predict a raw image at (1 for a model without ``nucleus_size``)."""
        return self._estimate(image, name)[0] if self.preprocessing.nucleus_size is not None else 1.0

    def __call__(self, image: np.ndarray, name: str = "image") -> Probabilities:
        """Probability maps for a raw image (any dtype), prepared exactly as in training, at its size."""
        factor, output = self._estimate(image, name)
        if self.preprocessing.nucleus_size is None:
            return probabilities(output)
        return _zoomed_back(output, factor, image)


def load_predictor(
    run_dir: Path, options: InferenceOptions | None = None, model_path: Path | None = None
) -> tuple[TiledPredictor, Config]:
    """The run's kept model (or ``model_path``, e.g. a snapshot), wrapped for whole-image prediction with
    the run's preprocessing, and the config it was trained with."""
    run = runs.Run(run_dir)
    cfg = run.config
    model = load_model(model_path or run.kept_model, compile=False)
    return TiledPredictor(model, Preprocessing.from_config(cfg.data), 2**cfg.model.depth, options), cfg

"""The one way from a model to nucleus labels: a run folder or a shipped model, opened once.

:func:`open_segmenter` loads the kept model with the run's preprocessing (tiled, zoomed prediction:
:class:`cellseg.infer.predictor.TiledPredictor`) and the post-processing recorded in ``postprocess.json``.
Prediction, evaluation, sweeps, export and shipping all go through it, so they agree on when the
post-processing is chosen:

- a shipped model (a folder of the installed zoo) is never calibrated and never written to: its recorded
  setting is used whatever the options; ``recalibrate`` is refused;
- a run folder is calibrated on its validation images when asked (``recalibrate``), when it has no
  recorded setting yet, or when its model file is not the one the setting was chosen with;
- other inference options (tiles, overlap, flips) keep the recorded setting and say so; the batch size
  changes nothing.

    >>> from cellseg.infer.segmenter import open_segmenter
    >>> segment = open_segmenter("runs/20261204-010630_relu_s0")   # or a shipped model: "versatile"
    >>> labels = segment(image)                                    # 0 background, 1..N one per nucleus
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from cellseg.core.config import Config, InferenceOptions
from cellseg.core.records import Calibration
from cellseg.core.runs import POSTPROCESS, Run
from cellseg.data import DataError
from cellseg.infer import pretrained
from cellseg.infer.calibration import calibrate_run, model_digest, probability_options
from cellseg.infer.predictor import TiledPredictor, load_predictor
from cellseg.labels.postprocess import PostprocessPlan, Probabilities, instances

logger = logging.getLogger(__name__)


@dataclass
class Segmenter:
    """A model ready to segment: its run folder, config, Keras model, tiled predictor and post-processing."""

    name: str
    run: Run
    config: Config
    model: keras.Model
    predictor: TiledPredictor
    plan: PostprocessPlan

    def probabilities(self, image: np.ndarray, name: str = "image") -> Probabilities:
        """The model's probability maps for a raw image (any size, grey or RGB, any dtype)."""
        return self.predictor(image, name)

    def labels(self, probabilities: Probabilities, image: np.ndarray) -> np.ndarray:
        """Instance labels from probability maps, with the setting for ``image``'s modality."""
        return instances(probabilities, self.plan.params_for(image))

    def __call__(self, image: np.ndarray, name: str = "image") -> np.ndarray:
        """Instance labels of the nuclei in a raw image: 0 background, 1..N one per nucleus."""
        return self.labels(self.probabilities(image, name), image)


def _resolve(source: str | Path) -> tuple[Path, str]:
    """The folder and display name of a run folder or a shipped model's name."""
    if isinstance(source, str) and source in pretrained.available():  # a name wins: "./name" is the folder
        return pretrained.model_dir(source), source
    path = Path(source)
    if path.is_dir():
        return path, path.name
    if isinstance(source, str) and "/" not in source:
        pretrained.model_dir(source)  # raises, naming the shipped models (and a close match)
    raise FileNotFoundError(f"no run folder at {path}")


def _note_other_options(saved: Calibration, options: InferenceOptions, fix: str) -> None:
    recorded = probability_options(InferenceOptions(**saved.inference))
    wanted = probability_options(options)
    if recorded != wanted:
        logger.info(f"post-processing recorded for {recorded}, kept for {wanted}{fix}")


def choose_plan(
    run: Run, predictor: TiledPredictor, options: InferenceOptions, recalibrate: bool = False
) -> PostprocessPlan:
    """The run's post-processing, by the rules of this module's docstring."""
    saved = run.postprocess
    if pretrained.is_shipped(run.path):
        if recalibrate:
            raise ValueError(
                f"{run.path} is a shipped model, part of the installed package, and is never recalibrated; "
                "copy its folder and use --run on the copy"
            )
        if saved is None:
            raise DataError(f"{run.path}: the shipped model has no {POSTPROCESS}")
        _note_other_options(saved, options, " (a shipped model is never recalibrated)")
        return PostprocessPlan.from_dict(saved.plan)
    stale = saved is not None and saved.model_sha256 not in (None, model_digest(run.kept_model))
    if saved is not None and not recalibrate and not stale:
        _note_other_options(saved, options, "; --recalibrate chooses it again for these options")
        return PostprocessPlan.from_dict(saved.plan)
    if stale:
        logger.info("the model changed since its post-processing was chosen: calibrating again")
    try:
        return calibrate_run(run, predictor, run.config, options)
    except DataError as exc:
        if saved is None or recalibrate:
            raise
        logger.warning(f"{exc}; keeping the recorded post-processing, calibrated with {saved.inference}")
        return PostprocessPlan.from_dict(saved.plan)


def open_segmenter(
    source: str | Path, options: InferenceOptions | None = None, recalibrate: bool = False
) -> Segmenter:
    """A :class:`Segmenter` of a finished run folder, or of a shipped model by name (see
    :func:`cellseg.infer.pretrained.available`)."""
    path, name = _resolve(source)
    run = Run(path)
    run.require_finished()
    options = options or InferenceOptions()
    predictor, cfg = load_predictor(path, options)
    plan = choose_plan(run, predictor, options, recalibrate)
    return Segmenter(name, run, cfg, predictor.model, predictor, plan)

"""A fine-tuned run judged out of fold, for runs on a few images (``train.compare_folds: k``).

A run on five images validates on one, and discarding the fine-tuning on one image's verdict is a coin
weighted by that image. Cross-fitting deals all the run's images (training and validation) into k folds
and trains the run's config once more per fold, without that fold's images, in ``<run>/folds/fold<i>``.
Every image is then predicted by the fold run that never trained on it, and the fine-tuning is compared
with its start on all of them, as nnU-Net judges its choices on its cross-validation's predictions.
:func:`cellseg.train.finetune.keep_the_better` asks for it only when the validation images favour the
start. It costs k more trainings; fold runs that finished are reused and an interrupted one resumes.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from cellseg.core.config import Config, FoldConfig, InferenceOptions
from cellseg.core.runs import Run, TrainingError
from cellseg.infer.calibration import Choice, choose, predict_images, validation_samples
from cellseg.infer.predictor import load_predictor
from cellseg.labels.postprocess import Probabilities

logger = logging.getLogger(__name__)

#: The folder, inside the run, of its fold runs.
FOLDS = "folds"

#: Trains a config in a run folder, or resumes the run an interrupted one holds (the trainer's ``train``).
TrainFold = Callable[[Config, Path], None]


def fold_count(run: Run) -> int:
    """``train.compare_folds``, at most one fold per image of the run (leave-one-out)."""
    split = run.split
    return min(run.config.train.compare_folds, len(split["train"]) + len(split["val"]))


def fold_config(cfg: Config, k: int, index: int) -> Config:
    """The run's config for fold ``index`` of ``k``: the images outside the fold train, the fold validates."""
    return dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, folds=FoldConfig(k=k, index=index)),
        train=dataclasses.replace(cfg.train, compare_folds=0),
    )


def cross_fit(run: Run, train_fold: TrainFold, options: InferenceOptions) -> Choice:
    """Train (or reuse) the run's fold runs and choose the fine-tuning's post-processing on their
    out-of-fold predictions of every image of the run: its score there is what the start is compared with."""
    cfg, k = run.config, fold_count(run)
    predicted: list[tuple[np.ndarray, Probabilities]] = []
    kinds: list[str] = []
    held: list[str] = []
    for index in range(k):
        folder = run.path / FOLDS / f"fold{index}"
        if Run(folder).status() != "finished":
            logger.info(f"cross-fitting: fold run {index + 1} of {k} ({folder})")
            train_fold(fold_config(cfg, k, index), folder)
        fold = Run(folder)
        if not fold.summary.completed:
            raise TrainingError(f"{folder}: the fold run stopped early ({fold.summary.stopped_reason})")
        samples = validation_samples(folder, fold.config)
        predictor, _ = load_predictor(folder, options)
        fold_predicted, fold_kinds = predict_images(predictor, samples, f"fold {index + 1}/{k}: held-out")
        predicted += fold_predicted
        kinds += fold_kinds
        held += [s.id for s in samples]
    images = sorted(run.split["train"] + run.split["val"])
    if sorted(held) != images:
        raise TrainingError(
            f"{run.path / FOLDS}: the fold runs held out {len(held)} images, not the run's {len(images)}; "
            f"delete {run.path / FOLDS} to train them again"
        )
    return choose(predicted, kinds, held, cfg.model.outputs, folds=k)

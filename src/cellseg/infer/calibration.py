"""Post-processing calibrated on a run's own validation images, never on the images it will score.

The knobs (probability threshold, watershed seeds, minimum size) with the best mean DSB score on the
validation images of ``split.json``, and a modality's own knobs where they pass a held-out check
(:func:`choose_plan`), are recorded in ``<run>/postprocess.json`` with what they depend on (the model
file's digest, the validation images, the inference options); :mod:`cellseg.infer.segmenter` reads them from
there and decides when to calibrate (never for a shipped model).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from cellseg.core.config import Config, InferenceOptions
from cellseg.core.parallel import cpu_budget
from cellseg.core.records import Calibration
from cellseg.core.runs import Run
from cellseg.data import DataError, Sample, SampleRef, collect_samples
from cellseg.data.preprocessing import modality
from cellseg.infer.predictor import TiledPredictor
from cellseg.labels.metrics import instance_counts
from cellseg.labels.postprocess import PostprocessParams, PostprocessPlan, Probabilities, grid, instances

logger = logging.getLogger(__name__)


def run_samples(run_dir: Path, cfg: Config, ids: Sequence[str]) -> list[Sample] | list[SampleRef]:
    """The run's images named by ``ids``, re-read from the run's data source."""
    samples, source = collect_samples(cfg)
    by_id = {s.id: s for s in samples}
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise DataError(
            f"{len(missing)} of the images of {run_dir} (e.g. {missing[0]}) are not in {source}; "
            "evaluate from the folder training ran in, so data.path resolves as it did then"
        )
    return [by_id[i] for i in ids]


def validation_samples(run_dir: Path, cfg: Config) -> list[Sample] | list[SampleRef]:
    """The run's validation images (by the ids in ``split.json``)."""
    return run_samples(run_dir, cfg, Run(run_dir).split["val"])


#: A modality gets a setting of its own only with this many validation images (see :func:`choose_plan`).
MIN_MODALITY_IMAGES = 8


@dataclasses.dataclass
class Choice:
    """A post-processing chosen on ``images`` (:func:`choose_plan`) and the record of why. ``folds``: 0 when
    the model itself predicted them (its validation images); k when each was predicted by one of k models
    trained without it (:mod:`cellseg.train.crossfit`)."""

    plan: PostprocessPlan
    record: dict[str, Any]
    images: list[str]
    folds: int = 0

    @property
    def score(self) -> float:
        """The mean DSB score on ``images`` with the chosen setting."""
        return float(self.record["val_dsb_score"])


def predict_images(
    predictor: TiledPredictor, samples: Sequence[Sample | SampleRef], desc: str = "calibrate on validation"
) -> tuple[list[tuple[np.ndarray, Probabilities]], list[str]]:
    """Each sample's (true labels, predicted probabilities) and its modality, as prediction reads it."""
    predicted: list[tuple[np.ndarray, Probabilities]] = []
    kinds = []
    for ref in tqdm(samples, desc=desc, unit="img", disable=None):
        sample = ref.load()
        predicted.append((sample.labels, predictor(sample.image, ref.id)))
        kinds.append(modality(sample.image))  # as prediction will read it: without the masks
    return predicted, kinds


def choose(
    predicted: Sequence[tuple[np.ndarray, Probabilities]],
    kinds: Sequence[str],
    ids: Sequence[str],
    outputs: str,
    folds: int = 0,
) -> Choice:
    """The post-processing for a model predicting ``outputs``, chosen on ``predicted``
    (:func:`choose_plan`)."""
    settings = grid(outputs)
    plan, record = choose_plan(score_table(predicted, settings), settings, kinds)
    return Choice(plan, record, list(ids), folds)


def calibrate(predictor: TiledPredictor, samples: Sequence[Sample | SampleRef], outputs: str) -> Choice:
    """The post-processing chosen on ``samples`` as ``predictor`` predicts them."""
    predicted, kinds = predict_images(predictor, samples)
    return choose(predicted, kinds, [s.id for s in samples], outputs)


def score_table(
    predicted: Sequence[tuple[np.ndarray, Probabilities]], settings: Sequence[PostprocessParams]
) -> np.ndarray:
    """The DSB score of every (true labels, probabilities) pair under every setting: (images, settings)."""

    def column(params: PostprocessParams) -> list[float]:
        return [float(instance_counts(t, instances(p, params)).ap().mean()) for t, p in predicted]

    # SciPy / scikit-image release the GIL in labelling and watershed: threads give 1.7x on 2 cores
    with concurrent.futures.ThreadPoolExecutor(cpu_budget()) as pool:
        return np.array(list(pool.map(column, settings)), np.float64).T.reshape(len(predicted), len(settings))


def _best(table: np.ndarray, rows: np.ndarray) -> int:
    """The setting with the best mean score over ``rows``; the first of equals, in grid order."""
    return int(np.argmax(table[rows].mean(axis=0)))


def choose_plan(
    table: np.ndarray, settings: Sequence[PostprocessParams], kinds: Sequence[str]
) -> tuple[PostprocessPlan, dict[str, Any]]:
    """One setting for all images, plus a modality's own where it generalises, and the record of why.

    The common setting is the best on every image. A modality with :data:`MIN_MODALITY_IMAGES` images
    whose own best setting differs is checked by leaving each of its images out in turn: its own
    setting chosen on the modality's other images against the common one chosen on every other image,
    both scored on the one left out. It is kept only if it scores higher there on average, so a
    modality with few validation images cannot fit their noise. Leaving one out, not half, judges a
    choice made on nearly all the images, as the one kept is.
    """
    everything = np.arange(len(kinds))
    default = _best(table, everything)
    by_modality: dict[str, PostprocessParams] = {}
    modalities: dict[str, Any] = {}
    for kind in sorted(set(kinds)):
        mine = np.flatnonzero(np.asarray(kinds) == kind)
        own = _best(table, mine)
        entry: dict[str, Any] = {
            "images": len(mine),
            "own_params": settings[own].to_dict(),
            "val_dsb_score": {
                "own": float(table[mine, own].mean()),
                "default": float(table[mine, default].mean()),
            },
        }
        if own != default and len(mine) >= MIN_MODALITY_IMAGES:
            scores: dict[str, list[float]] = {"own": [], "default": []}
            for held in mine:
                scores["own"].append(table[held, _best(table, mine[mine != held])])
                scores["default"].append(table[held, _best(table, everything[everything != held])])
            entry["held_out_dsb_score"] = {k: float(np.mean(v)) for k, v in scores.items()}
            if entry["held_out_dsb_score"]["own"] > entry["held_out_dsb_score"]["default"]:
                by_modality[kind] = settings[own]
        entry["own_setting_used"] = kind in by_modality
        modalities[kind] = entry
    plan = PostprocessPlan(settings[default], by_modality)
    chosen = [settings.index(plan.for_modality(k)) for k in kinds]
    record = {
        "val_dsb_score": float(table[everything, chosen].mean()),
        "modalities": modalities,
        "grid": [
            {**p.to_dict(), "val_dsb_score": float(s)}
            for p, s in zip(settings, table.mean(axis=0), strict=True)
        ],
    }
    return plan, record


def model_digest(path: Path) -> str:
    """SHA-256 of a saved model file: a calibration holds for the model it was made with."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def probability_options(options: InferenceOptions) -> dict[str, Any]:
    """The inference options that change the probabilities (tiles, overlap, flips); batch size does not."""
    return {k: v for k, v in dataclasses.asdict(options).items() if k != "batch_size"}


def record_calibration(run: Run, choice: Choice, options: InferenceOptions) -> PostprocessPlan:
    """Record ``choice`` as the run's post-processing in ``postprocess.json``, with what it depends on:
    the model (its file's digest), the images, the inference options."""
    run.save_postprocess(
        Calibration(
            **choice.plan.to_dict(),
            val_dsb_score=choice.score,
            val_images=choice.images,
            inference=dataclasses.asdict(options),
            model_sha256=model_digest(run.kept_model),
            modalities=choice.record["modalities"],
            grid=choice.record["grid"],
        )
    )
    knobs = ", ".join(f"{k} {v}" for k, v in choice.plan.default.to_dict().items())
    own = "".join(f"; {k}: its own setting" for k in choice.plan.by_modality)
    logger.info(
        f"post-processing chosen on {len(choice.images)} validation images (DSB score {choice.score:.3f}): "
        f"{knobs}{own}"
    )
    return choice.plan


def calibrate_run(
    run: Run, predictor: TiledPredictor, cfg: Config, options: InferenceOptions
) -> PostprocessPlan:
    """The run's post-processing chosen on its validation images, recorded (:func:`record_calibration`)."""
    choice = calibrate(predictor, validation_samples(run.path, cfg), cfg.model.outputs)
    return record_calibration(run, choice, options)

"""Post-processing calibrated on a run's own validation images, never on the images it will score.

The knobs (probability threshold, watershed seeds, minimum size) with the best mean DSB score on the
validation images of ``split.json`` are recorded in ``<run>/postprocess.json``, with the inference options
they were chosen under; evaluation, prediction, export and sweeps read them from there.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from cellseg.config import Config, InferenceOptions
from cellseg.data import DataError, Sample, SampleRef, collect_samples
from cellseg.inference import TiledPredictor
from cellseg.metrics import instance_counts
from cellseg.parallel import cpu_budget
from cellseg.postprocess import PostprocessParams, Probabilities, grid, instances
from cellseg.runs import Run

logger = logging.getLogger(__name__)


def validation_samples(run_dir: Path, cfg: Config) -> list[Sample] | list[SampleRef]:
    """The run's validation images (by the ids in ``split.json``), re-read from the run's data source."""
    samples, source = collect_samples(cfg)
    val_ids = Run(run_dir).split["val"]
    by_id = {s.id: s for s in samples}
    missing = [i for i in val_ids if i not in by_id]
    if missing:
        raise DataError(
            f"{len(missing)} of the run's validation images (e.g. {missing[0]}) are not in {source}; "
            "evaluate from the folder training ran in, so data.path resolves as it did then"
        )
    return [by_id[i] for i in val_ids]


def calibrate(
    predictor: TiledPredictor, samples: Sequence[Sample | SampleRef], three_class: bool
) -> tuple[PostprocessParams, float, list[dict[str, Any]]]:
    """The post-processing setting with the best mean DSB score on ``samples``, that score, the whole grid."""
    predicted: list[tuple[np.ndarray, Probabilities]] = []
    for ref in tqdm(samples, desc="calibrate on validation", unit="img", disable=None):
        sample = ref.load()
        predicted.append((sample.labels, predictor(sample.image, ref.id)))
    return choose(predicted, three_class)


def choose(
    predicted: Sequence[tuple[np.ndarray, Probabilities]], three_class: bool
) -> tuple[PostprocessParams, float, list[dict[str, Any]]]:
    """The setting of :func:`grid` with the best mean DSB score over (true labels, probabilities) pairs."""

    def mean_dsb(params: PostprocessParams) -> float:
        return float(np.mean([instance_counts(t, instances(p, params)).ap().mean() for t, p in predicted]))

    # SciPy / scikit-image release the GIL in labelling and watershed: threads give 1.7x on 2 cores
    settings = grid(three_class)
    with concurrent.futures.ThreadPoolExecutor(cpu_budget()) as pool:
        scored = list(zip(settings, pool.map(mean_dsb, settings), strict=True))
    best, score = max(scored, key=lambda pair: pair[1])  # first of equals: grid order
    return best, score, [{**params.to_dict(), "val_dsb_score": s} for params, s in scored]


def recorded_params(run: Run, options: InferenceOptions) -> PostprocessParams | None:
    """The run's recorded post-processing if it was calibrated under ``options``, else None."""
    saved = run.postprocess
    if saved is None or saved["inference"] != dataclasses.asdict(options):
        return None
    return PostprocessParams(**saved["params"])


def postprocess_params(
    run_dir: Path,
    predictor: TiledPredictor,
    cfg: Config,
    options: InferenceOptions,
    recalibrate: bool = False,
) -> PostprocessParams:
    """The run's recorded post-processing, calibrated on its validation images first if needed.

    A run whose validation images are not on this machine (a shipped model, a run copied without its
    data) keeps its recorded setting when other inference options would call for calibrating again.
    """
    run = Run(run_dir)
    saved = run.postprocess
    if saved is not None and not recalibrate:
        if (params := recorded_params(run, options)) is not None:
            return params
        logger.info("inference options differ from the recorded calibration: calibrating again")
    try:
        samples = validation_samples(run_dir, cfg)
    except DataError as exc:
        if saved is None or recalibrate:
            raise
        logger.warning(f"{exc}; keeping the recorded post-processing, calibrated with {saved['inference']}")
        return PostprocessParams(**saved["params"])
    params, best, table = calibrate(predictor, samples, cfg.model.num_classes == 3)
    run.save_postprocess(
        {
            "params": params.to_dict(),
            "val_dsb_score": best,
            "val_images": [s.id for s in samples],
            "inference": dataclasses.asdict(options),
            "grid": table,
        }
    )
    knobs = ", ".join(f"{k} {v}" for k, v in params.to_dict().items())
    logger.info(f"post-processing chosen on {len(samples)} validation images (DSB score {best:.3f}): {knobs}")
    return params

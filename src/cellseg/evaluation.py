"""Score a trained run on held-out annotated images: predict, post-process, match, write the results.

Post-processing knobs (probability threshold, watershed seeds, minimum size) are chosen on the run's
own validation images, never on the images being scored, and recorded in ``<run>/postprocess.json``.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from cellseg import runs
from cellseg.activations import parse_spec
from cellseg.config import Config
from cellseg.data import DataError, Sample, SampleRef, collect_samples
from cellseg.data.readers import scan_samples
from cellseg.inference import TiledPredictor
from cellseg.metrics import ImageScore, instance_counts, score_image, summarize
from cellseg.models import load_model
from cellseg.outputs import save_labels, save_overlay
from cellseg.parallel import cpu_budget
from cellseg.postprocess import PostprocessParams, Probabilities, grid, instances

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class InferenceOptions:
    """How whole images are predicted (see :class:`~cellseg.inference.TiledPredictor`)."""

    tile: int = 256
    overlap: int = 32
    batch_size: int = 8
    flips: bool = False


def load_predictor(
    run_dir: Path, options: InferenceOptions, model_path: Path | None = None
) -> tuple[TiledPredictor, Config]:
    """The run's best model (or ``model_path``, e.g. a snapshot), wrapped for whole-image prediction,
    and the config it was trained with."""
    cfg = runs.load_run_config(run_dir)
    model = load_model(model_path or run_dir / runs.BEST_MODEL, compile=False)
    predictor = TiledPredictor(
        model,
        cfg.data.channels,
        2**cfg.model.depth,
        tile=options.tile,
        overlap=options.overlap,
        batch_size=options.batch_size,
        flips=options.flips,
        nucleus_size=cfg.data.nucleus_size,
        equalize=cfg.data.equalize,
        bright_nuclei=cfg.data.polarity == "bright_nuclei",
    )
    return predictor, cfg


def validation_samples(run_dir: Path, cfg: Config) -> list[Sample] | list[SampleRef]:
    """The run's validation images (by the ids in ``split.json``), re-read from the run's data source."""
    samples, source = collect_samples(cfg)
    val_ids = runs.read_json(run_dir / runs.SPLIT)["val"]
    by_id = {s.id: s for s in samples}
    missing = [i for i in val_ids if i not in by_id]
    if missing:
        raise DataError(
            f"{len(missing)} of the run's validation images (e.g. {missing[0]}) are not in {source}; "
            "run evaluate.py from the folder training ran in, so data.path resolves as it did then"
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

    def mean_dsb(params: PostprocessParams) -> float:
        return float(np.mean([instance_counts(t, instances(p, params)).ap().mean() for t, p in predicted]))

    # SciPy / scikit-image release the GIL in labelling and watershed: threads give 1.7x on 2 cores
    settings = grid(three_class)
    with concurrent.futures.ThreadPoolExecutor(cpu_budget()) as pool:
        scored = list(zip(settings, pool.map(mean_dsb, settings), strict=True))
    best, score = max(scored, key=lambda pair: pair[1])  # first of equals: grid order
    return best, score, [{**params.to_dict(), "val_dsb_score": s} for params, s in scored]


def postprocess_params(
    run_dir: Path,
    predictor: TiledPredictor,
    cfg: Config,
    options: InferenceOptions,
    recalibrate: bool = False,
) -> PostprocessParams:
    """The run's recorded post-processing, calibrated on its validation images first if needed."""
    path = run_dir / runs.POSTPROCESS
    if path.is_file() and not recalibrate:
        saved = runs.read_json(path)
        if saved["inference"] == dataclasses.asdict(options):
            return PostprocessParams(**saved["params"])
        logger.info("inference options differ from the recorded calibration: calibrating again")
    samples = validation_samples(run_dir, cfg)
    params, best, table = calibrate(predictor, samples, cfg.model.num_classes == 3)
    runs.write_json(
        path,
        {
            "params": params.to_dict(),
            "val_dsb_score": best,
            "val_images": [s.id for s in samples],
            "inference": dataclasses.asdict(options),
            "grid": table,
        },
    )
    knobs = ", ".join(f"{k} {v}" for k, v in params.to_dict().items())
    logger.info(f"post-processing chosen on {len(samples)} validation images (DSB score {best:.3f}): {knobs}")
    return params


def write_per_image(path: Path, scores: list[ImageScore], zooms: list[float]) -> None:
    """Each image's scores, and the zoom it was predicted at (1 unless the run sets data.nucleus_size)."""
    runs.write_csv(path, [{**s.row(), "zoom": round(z, 4)} for s, z in zip(scores, zooms, strict=True)])


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far (model, images and TensorFlow's buffers included)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _score_images(
    refs: Sequence[SampleRef],
    predictor: TiledPredictor,
    params: PostprocessParams,
    out: Path,
    labels_dir: Path | None,
) -> tuple[list[ImageScore], list[float], dict[str, float], int]:
    """Predict, post-process and score every image, writing overlays (and labels) as it goes.

    Returns the scores, the zoom each image was predicted at, seconds spent per stage, and the number
    of pixels predicted.
    """
    timer = {"read": 0.0, "predict": 0.0, "postprocess": 0.0, "score": 0.0, "write": 0.0}
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timer[stage] += now - clock
        clock = now

    scores, zooms, pixels = [], [], 0
    for ref in tqdm(refs, desc="evaluate", unit="img", disable=None):
        sample = ref.load()
        size = sample.image.shape[:2]
        if sample.labels.shape != size:
            raise DataError(f"{ref.id}: mask size {sample.labels.shape} differs from image size {size}")
        lap("read")
        probs = predictor(sample.image, ref.id)
        zooms.append(probs.factor)
        lap("predict")
        pred = instances(probs, params)
        lap("postprocess")
        scores.append(score_image(ref.id, sample.labels, pred))
        pixels += pred.size
        lap("score")
        save_overlay(out / runs.OVERLAYS / f"{ref.id}.png", sample.image, pred, sample.labels)
        if labels_dir is not None:
            save_labels(labels_dir / f"{ref.id}.png", pred)
        lap("write")
    return scores, zooms, timer, pixels


def _require_masks(refs: Sequence[SampleRef]) -> None:
    """Every image's mask files exist (checked without decoding), or a DataError names the first gap."""
    missing = [(ref, path) for ref in refs for path in ref.sources if not path.exists()]
    if missing:
        ref, path = missing[0]
        raise DataError(
            f"{len({r.id for r, _ in missing})} of {len(refs)} images have no masks (first: {ref.id}, "
            f"{path} is missing); evaluation needs annotated images: segment the others with cellseg-predict"
        )


def evaluate_run(
    run_dir: str | Path,
    data: str | Sequence[str],
    out: str | Path | None = None,
    labels_dir: str | Path | None = None,
    options: InferenceOptions = InferenceOptions(),
    layout: str = "auto",
    recalibrate: bool = False,
) -> tuple[Path, dict[str, Any]]:
    """Score ``run_dir``'s best model on the annotated images under ``data``.

    Writes ``metrics.json``, ``per_image.csv`` and ``overlays/<id>.png`` into ``out`` (default
    ``<run>/evaluation``), and with ``labels_dir`` each predicted label image as ``<id>.png``.
    Returns the output folder and the metrics.
    """
    run_dir = Path(run_dir)
    if not (run_dir / runs.BEST_MODEL).is_file():
        raise FileNotFoundError(f"{run_dir}: no {runs.BEST_MODEL} (is this a finished cellseg run folder?)")
    refs = scan_samples(data, layout)  # fail on a bad data path before loading anything
    _require_masks(refs)  # ... and on missing masks before minutes of calibration
    predictor, cfg = load_predictor(run_dir, options)
    params = postprocess_params(run_dir, predictor, cfg, options, recalibrate)
    out = Path(out) if out is not None else run_dir / runs.EVALUATION
    # everything is written to staging folders and moved into place only once all images succeeded
    with contextlib.ExitStack() as stack:
        stage = stack.enter_context(runs.staged_outputs(out))
        labels_stage = None if labels_dir is None else stack.enter_context(runs.staged_outputs(labels_dir))
        scores, zooms, timer, pixels = _score_images(refs, predictor, params, stage, labels_stage)
        seconds = sum(timer.values())
        metrics = {
            **summarize(scores),
            "run": str(run_dir),
            "activation": parse_spec(cfg.model.activation)[0],
            "data": [str(d) for d in ([data] if isinstance(data, str | Path) else data)],
            "postprocess": params.to_dict(),
            "inference": dataclasses.asdict(options),
            "megapixels": round(pixels / 1e6, 3),
            "seconds": round(seconds, 2),
            "seconds_by_stage": {k: round(v, 2) for k, v in timer.items()},
            "prediction_megapixels_per_second": round(pixels / 1e6 / timer["predict"], 3),
            "peak_memory_mb": round(peak_memory_mb(), 1),
        }
        runs.write_json(stage / runs.METRICS, metrics)
        write_per_image(stage / runs.PER_IMAGE, scores, zooms)
    return out, metrics

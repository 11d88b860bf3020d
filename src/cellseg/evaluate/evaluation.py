"""Score a trained run on held-out annotated images: predict, post-process, match, write the results.

The model and its post-processing come from :func:`cellseg.infer.segmenter.open_segmenter`: the run's own
setting, chosen on its validation images, never on the images being scored.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from cellseg.core import files, runs
from cellseg.core.config import InferenceOptions
from cellseg.core.hardware import peak_memory_mb
from cellseg.core.records import Metrics
from cellseg.data import DataError, Sample, SampleRef
from cellseg.data.preprocessing import modality
from cellseg.data.readers import scan_samples
from cellseg.infer.calibration import validation_samples
from cellseg.infer.segmenter import Segmenter, open_segmenter
from cellseg.labels.metrics import ImageScore, score_image, summarize
from cellseg.labels.outputs import save_labels, save_overlay
from cellseg.model.activations import parse_spec

logger = logging.getLogger(__name__)


def write_per_image(path: Path, scores: list[ImageScore], zooms: list[float]) -> None:
    """Each image's scores, and the zoom it was predicted at (1 unless the run sets data.nucleus_size)."""
    files.write_csv(path, [{**s.row(), "zoom": round(z, 4)} for s, z in zip(scores, zooms, strict=True)])


def _score_images(
    refs: Sequence[Sample | SampleRef],
    segmenter: Segmenter,
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
        probs = segmenter.probabilities(sample.image, ref.id)
        zooms.append(probs.factor)
        lap("predict")
        pred = segmenter.labels(probs, sample.image)
        lap("postprocess")
        scores.append(score_image(ref.id, sample.labels, pred, modality(sample.image, sample.labels)))
        pixels += pred.size
        lap("score")
        save_overlay(out / runs.OVERLAYS / f"{ref.id}.png", sample.image, pred, sample.labels)
        if labels_dir is not None:
            save_labels(labels_dir / f"{ref.id}.png", pred)
        lap("write")
    return scores, zooms, timer, pixels


def _data_names(data: str | Sequence[str] | None) -> list[str]:
    if data is None:
        return ["validation images (split.json)"]
    return [str(d) for d in ([data] if isinstance(data, str | Path) else data)]


def scored_on(scored: Sequence[str], data: str | Sequence[str]) -> bool:
    """Whether an evaluation that scored the folders ``scored`` (its ``Metrics.data``) scored exactly
    the ones ``data`` names (by resolved path): an earlier evaluation is reused only for those."""

    def resolved(names: Sequence[str]) -> list[str]:
        return sorted(str(Path(n).resolve()) for n in names)

    return resolved(scored) == resolved(_data_names(data))


def _require_masks(refs: Sequence[Sample | SampleRef]) -> None:
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
    data: str | Sequence[str] | None,
    out: str | Path | None = None,
    labels_dir: str | Path | None = None,
    options: InferenceOptions | None = None,
    layout: str = "auto",
    recalibrate: bool = False,
) -> tuple[Path, Metrics]:
    """Score ``run_dir``'s kept model (``model.keras``: the epoch ``train.keep_model`` picks) on the
    annotated images under ``data`` (None: on the run's own validation images, per source and modality;
    optimistic, since they chose the post-processing).

    Writes ``metrics.json``, ``per_image.csv`` and ``overlays/<id>.png`` into ``out`` (default
    ``<run>/evaluation``), and with ``labels_dir`` each predicted label image as ``<id>.png``.
    Returns the output folder and the metrics.
    """
    run_dir = Path(run_dir)
    runs.Run(run_dir).require_finished()
    options = options or InferenceOptions()
    # fail on a bad data path before loading anything
    refs = (
        validation_samples(run_dir, runs.Run(run_dir).config) if data is None else scan_samples(data, layout)
    )
    _require_masks(refs)  # ... and on missing masks before minutes of calibration
    segmenter = open_segmenter(run_dir, options, recalibrate)
    cfg, plan = segmenter.config, segmenter.plan
    out = Path(out) if out is not None else runs.Run(run_dir).evaluation_dir(val=data is None)
    # everything is written to staging folders and moved into place only once all images succeeded
    with contextlib.ExitStack() as stack:
        stage = stack.enter_context(files.staged_outputs(out))
        labels_stage = None if labels_dir is None else stack.enter_context(files.staged_outputs(labels_dir))
        scores, zooms, timer, pixels = _score_images(refs, segmenter, stage, labels_stage)
        seconds = sum(timer.values())
        metrics = Metrics(
            **summarize(scores),
            run=str(run_dir),
            activation=parse_spec(cfg.model.activation)[0],
            data=_data_names(data),
            postprocess=plan.to_dict(),
            inference=dataclasses.asdict(options),
            megapixels=round(pixels / 1e6, 3),
            seconds=round(seconds, 2),
            seconds_by_stage={k: round(v, 2) for k, v in timer.items()},
            prediction_megapixels_per_second=round(pixels / 1e6 / timer["predict"], 3),
            peak_memory_mb=round(peak_memory_mb(), 1),
        )
        runs.write_metrics(stage, metrics)
        write_per_image(stage / runs.PER_IMAGE, scores, zooms)
    return out, metrics

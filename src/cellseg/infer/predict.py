"""Segment images that have no masks with a trained run, and measure every nucleus found.

Each image is predicted whole at native resolution (tiled, as in evaluation) and turned into instances
with the run's calibrated post-processing. Per image, the output folder gets ``labels/<id>.<png|tif>``
(16-bit instance labels; 32-bit TIFF past 65,535 nuclei), ``overlays/<id>.png`` (outlines on the
image), ``nuclei/<id>.csv`` (one row per nucleus) and ``nuclei/<id>.geojson`` (their outlines and
measurements, which QuPath imports as detections); ``summary.csv`` has one row per image, failed ones
included with their reason.

Whole slides (:func:`cellseg.infer.slides.is_slide`: SVS, NDPI, OME-TIFF, tiled or pyramidal TIFF, OME-Zarr)
are never read whole: :func:`cellseg.infer.slides.segment_slide` segments them chunk by chunk into
``labels/<id>.ome.zarr`` and the same nucleus files, in full-resolution slide coordinates.
"""

from __future__ import annotations

import glob
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from cellseg.core import files, runs
from cellseg.core.config import InferenceOptions
from cellseg.core.hardware import peak_memory_mb
from cellseg.core.parallel import available_cores, ray_map, use_threads
from cellseg.data import DataError
from cellseg.data.annotations import is_annotation
from cellseg.data.images import IMAGE_SUFFIXES, read_image_2d
from cellseg.data.readers import detect_layout
from cellseg.infer.pretrained import is_shipped
from cellseg.infer.segmenter import Segmenter, open_segmenter
from cellseg.infer.slides import SLIDE_SUFFIXES, SlideOptions, is_slide, segment_slide
from cellseg.labels.outputs import (
    LABEL_FORMATS,
    NUCLEUS_COLUMNS,
    nucleus_table,
    save_geojson,
    save_labels,
    save_overlay,
)

SUMMARY_CSV = "summary.csv"  # one row per image predicted
EXECUTORS = ("local", "ray")


def _images_in(folder: Path) -> list[Path]:
    """The images of a folder: its own, or those of a paired (``images/``) or DSB2018 layout, never masks."""
    try:
        layout = detect_layout(folder)
    except DataError:  # no known layout: the image files directly inside
        layout = "plain"
    if layout == "paired":
        folders = [folder / "images"]
    elif layout == "dsb2018":
        folders = sorted(p / "images" for p in folder.iterdir() if (p / "images").is_dir())
    else:
        folders = [folder]
    found = [
        p
        for f in folders
        for p in sorted(f.iterdir())
        if p.suffix.lower() in IMAGE_SUFFIXES or p.name.lower().endswith(SLIDE_SUFFIXES)
    ]
    return [p for p in found if not is_annotation(p)] if layout == "beside" else found


def find_images(inputs: Sequence[str | Path]) -> list[Path]:
    """The image files that ``inputs`` name: files, folders (see :func:`_images_in`) or glob patterns.

    Output files are named by image stem, so two inputs with the same stem are refused up front.
    """
    found: list[Path] = []
    for item in map(str, inputs):
        path = Path(item)
        if path.is_dir() and not is_slide(path):  # an OME-Zarr folder is one slide
            found += _images_in(path)
        elif path.is_file():
            found.append(path)
        elif any(c in item for c in "*?["):
            matches = sorted(Path(p) for p in glob.glob(item, recursive=True) if Path(p).is_file())
            if not matches:
                raise DataError(f"no file matches the pattern '{item}'")
            found += matches
        else:
            raise DataError(f"input not found: {item}")
    if not found:
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {', '.join(map(str, inputs))}")
    by_stem: dict[str, Path] = {}
    for path in found:
        if path.stem in by_stem and by_stem[path.stem] != path:
            raise DataError(f"two inputs are both named '{path.stem}': {by_stem[path.stem]} and {path}")
        by_stem[path.stem] = path
    return list(by_stem.values())


@dataclass
class PredictionReport:
    """What a prediction run did: one summary row per image, the failures, and its cost."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    seconds: float = 0.0
    megapixels: float = 0.0
    peak_memory_mb: float = 0.0

    @property
    def nuclei(self) -> int:
        return sum(int(r["nuclei"]) for r in self.rows if not r["error"])

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        if row["error"]:
            self.failed.append((Path(row["path"]), row["error"]))
            tqdm.write(f"skipped: {row['error']}")
        else:
            self.megapixels += int(row["height"]) * int(row["width"]) / 1e6


@dataclass(frozen=True)
class Job:
    """What predicting one input needs besides the model: where and how to write (picklable, for a
    worker process or a Ray task)."""

    out: Path
    label_format: str = "png"
    slide_options: SlideOptions = field(default_factory=SlideOptions)


def predict_one(segment: Segmenter, path: Path, job: Job) -> dict[str, Any]:
    """Segment, measure and write one image or slide; its ``summary.csv`` row (a failure's names it)."""
    began = time.perf_counter()
    row: dict[str, Any] = {"image": path.stem, "path": str(path), "height": "", "width": ""}
    try:
        if is_slide(path):
            return {**segment_slide(segment, path, job.out, job.slide_options).summary, "error": ""}
        image = read_image_2d(path)
    except DataError as exc:
        return {**row, "nuclei": 0, "mean_area": "", "zoom": "", "seconds": "", "error": str(exc)}
    probs = segment.probabilities(image, path.stem)
    labels = segment.labels(probs, image)
    table = nucleus_table(labels, image)
    save_labels(job.out / "labels" / f"{path.stem}.{job.label_format}", labels)
    save_overlay(job.out / runs.OVERLAYS / f"{path.stem}.png", image, labels)
    files.write_csv(job.out / "nuclei" / f"{path.stem}.csv", table, columns=list(NUCLEUS_COLUMNS.values()))
    save_geojson(job.out / "nuclei" / f"{path.stem}.geojson", labels, table)  # QuPath: drag and drop
    areas = [r["area"] for r in table]
    return {
        **row,
        "height": labels.shape[0],
        "width": labels.shape[1],
        "nuclei": len(table),
        "mean_area": round(sum(areas) / len(areas), 1) if areas else 0.0,
        "zoom": round(probs.factor, 4),
        "seconds": round(time.perf_counter() - began, 3),
        "error": "",
    }


_worker_segmenters: dict[tuple[str, InferenceOptions], Segmenter] = {}  # a Ray worker's, reused


def _ray_predict(
    source: str, options: InferenceOptions, path: Path, job: Job, threads: int
) -> dict[str, Any]:
    """:func:`predict_one` in a Ray worker with ``threads`` cores; the model is opened once per worker,
    with the post-processing the driver settled (never calibrated here)."""
    use_threads(threads)
    if (source, options) not in _worker_segmenters:
        _worker_segmenters[(source, options)] = open_segmenter(source, options)
    return predict_one(_worker_segmenters[(source, options)], path, job)


def predict_images(
    run_dir: str | Path,
    images: Sequence[Path],
    out: str | Path,
    options: InferenceOptions | None = None,
    label_format: str = "png",
    recalibrate: bool = False,
    slide_options: SlideOptions | None = None,
    executor: str = "local",
    workers: int = 1,
    address: str | None = None,
) -> PredictionReport:
    """Segment and measure ``images`` with ``run_dir``'s kept model; write the outputs into ``out``.

    An image that cannot be read is reported (on the progress bar and in ``summary.csv``) and skipped; the
    others go on. Slides are segmented chunk by chunk with ``slide_options``. With ``executor="ray"``
    every input is a Ray task with 1 / ``workers`` of a machine's cores, on the cluster at ``address``
    (None: a local one); ``out`` and the inputs must then be at the same paths on every machine.
    """
    if label_format not in LABEL_FORMATS:
        raise ValueError(f"label format '{label_format}' is not one of {', '.join(LABEL_FORMATS)}")
    if executor not in EXECUTORS:
        raise ValueError(f"executor '{executor}' is not one of {', '.join(EXECUTORS)}")
    job = Job(Path(out).resolve(), label_format, slide_options or SlideOptions())
    options = options or InferenceOptions()
    segment = open_segmenter(Path(run_dir), options, recalibrate)  # calibrates here, once, if it must
    report = PredictionReport()
    start = time.perf_counter()
    with tqdm(total=len(images), desc="segment", unit="img", disable=None) as bar:

        def done(row: dict[str, Any]) -> None:
            report.add(row)
            bar.update(1)

        if executor == "ray":
            source = segment.name if is_shipped(segment.run.path) else str(segment.run.path.resolve())
            threads = max(1, available_cores() // workers)
            calls = [(source, options, path.resolve(), job, threads) for path in images]
            try:
                ray_map(_ray_predict, calls, threads, address, done)
            except ImportError as exc:  # Ray is an extra: say how to get it, as a bad option
                raise ValueError(str(exc)) from exc
        else:
            for path in images:
                done(predict_one(segment, path, job))
    report.seconds = time.perf_counter() - start
    report.peak_memory_mb = peak_memory_mb()
    order = {str(p.resolve() if executor == "ray" else p): i for i, p in enumerate(images)}
    report.rows.sort(key=lambda r: order.get(r["path"], len(order)))  # Ray finishes in any order
    columns = list(dict.fromkeys(k for r in report.rows for k in r))  # slides add their own columns
    files.write_csv(job.out / SUMMARY_CSV, report.rows, columns=columns)
    return report

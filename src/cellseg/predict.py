"""Segment images that have no masks with a trained run, and measure every nucleus found.

Each image is predicted whole at native resolution (tiled, as in evaluation) and turned into instances
with the run's calibrated post-processing. Per image, the output folder gets ``labels/<id>.<png|tif>``
(16-bit instance labels; 32-bit TIFF past 65,535 nuclei), ``overlays/<id>.png`` (outlines on the
image), ``nuclei/<id>.csv`` (one row per nucleus) and ``nuclei/<id>.geojson`` (their outlines and
measurements, which QuPath imports as detections); ``summary.csv`` has one row per image, failed ones
included with their reason.

Whole slides (:func:`cellseg.slides.is_slide`: SVS, NDPI, OME-TIFF, tiled or pyramidal TIFF, OME-Zarr)
are never read whole: :func:`cellseg.slides.segment_slide` segments them chunk by chunk into
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

from cellseg import runs
from cellseg.config import InferenceOptions
from cellseg.data import DataError
from cellseg.data.annotations import is_annotation
from cellseg.data.images import IMAGE_SUFFIXES, read_image_2d
from cellseg.data.readers import detect_layout
from cellseg.hardware import peak_memory_mb
from cellseg.outputs import (
    LABEL_FORMATS,
    NUCLEUS_COLUMNS,
    nucleus_table,
    save_geojson,
    save_labels,
    save_overlay,
)
from cellseg.segmenter import open_segmenter
from cellseg.slides import SLIDE_SUFFIXES, SlideOptions, is_slide, segment_slide

SUMMARY_CSV = "summary.csv"  # one row per image predicted


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


def predict_images(
    run_dir: str | Path,
    images: Sequence[Path],
    out: str | Path,
    options: InferenceOptions | None = None,
    label_format: str = "png",
    recalibrate: bool = False,
    slide_options: SlideOptions | None = None,
) -> PredictionReport:
    """Segment and measure ``images`` with ``run_dir``'s kept model; write the outputs into ``out``.

    An image that cannot be read is reported (on the progress bar and in ``summary.csv``) and skipped; the
    others go on. Slides are segmented chunk by chunk with ``slide_options``.
    """
    if label_format not in LABEL_FORMATS:
        raise ValueError(f"label format '{label_format}' is not one of {', '.join(LABEL_FORMATS)}")
    out = Path(out)
    segment = open_segmenter(Path(run_dir), options, recalibrate)
    report = PredictionReport()
    start = time.perf_counter()
    for path in tqdm(images, desc="segment", unit="img", disable=None):
        began = time.perf_counter()
        row: dict[str, Any] = {"image": path.stem, "path": str(path), "height": "", "width": ""}
        try:
            if is_slide(path):
                summary = segment_slide(segment, path, out, slide_options).summary
                report.megapixels += summary["height"] * summary["width"] / 1e6
                report.rows.append({**summary, "error": ""})
                continue
            image = read_image_2d(path)
        except DataError as exc:
            report.failed.append((path, str(exc)))
            tqdm.write(f"skipped: {exc}")
            failure = {"nuclei": 0, "mean_area": "", "zoom": "", "seconds": "", "error": str(exc)}
            report.rows.append({**row, **failure})
            continue
        probs = segment.probabilities(image, path.stem)
        labels = segment.labels(probs, image)
        table = nucleus_table(labels, image)
        save_labels(out / "labels" / f"{path.stem}.{label_format}", labels)
        save_overlay(out / runs.OVERLAYS / f"{path.stem}.png", image, labels)
        runs.write_csv(out / "nuclei" / f"{path.stem}.csv", table, columns=list(NUCLEUS_COLUMNS.values()))
        save_geojson(out / "nuclei" / f"{path.stem}.geojson", labels, table)  # QuPath: drag and drop
        areas = [r["area"] for r in table]
        report.megapixels += labels.size / 1e6
        report.rows.append(
            {
                **row,
                "height": labels.shape[0],
                "width": labels.shape[1],
                "nuclei": len(table),
                "mean_area": round(sum(areas) / len(areas), 1) if areas else 0.0,
                "zoom": round(probs.factor, 4),
                "seconds": round(time.perf_counter() - began, 3),
                "error": "",
            }
        )
    report.seconds = time.perf_counter() - start
    report.peak_memory_mb = peak_memory_mb()
    columns = list(dict.fromkeys(k for r in report.rows for k in r))  # slides add their own columns
    runs.write_csv(out / SUMMARY_CSV, report.rows, columns=columns)
    return report

"""Segment a whole slide chunk by chunk: bounded memory, nuclei on seams stitched once, resumable.

The slide is cut into square chunks (``chunk`` px a side at the level predicted). Each chunk is read with
a ``halo`` of context on every side, predicted and post-processed whole, and keeps exactly the nuclei
whose centroid lies in its own square: a nucleus on a seam belongs to one chunk, which saw all of it (the
halo is wider than a nucleus), so it is never cut in two nor counted twice. Nuclei are written into the
label image where no earlier chunk put one, with ids continuing from the chunks before.

One zoom, one polarity and, for a model trained with stain normalisation, one set of stains hold for the
whole slide (estimated on its tissue, or given): chunks that decided for themselves could disagree at a
seam. The level read is the smallest one that still has the
pixels that zoom needs. Chunks of bare glass (:mod:`cellseg.infer.slides.tissue`) are skipped.

Every finished chunk leaves a part file (its nuclei's measurements and outlines) after its labels are
written, so a killed run resumes at the first chunk without one; at the end the parts become
``nuclei/<id>.csv`` and ``nuclei/<id>.geojson`` and the labels get their pyramid.
"""

from __future__ import annotations

import csv
import functools
import json
import logging
import math
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
from skimage.measure import regionprops_table
from skimage.segmentation import relabel_sequential
from tqdm import tqdm

from cellseg.core.config import SlideOptions
from cellseg.core.files import atomic_path, read_json, write_json, write_text
from cellseg.data.preprocessing import Decided, modality
from cellseg.data.stains import Stains
from cellseg.data.tiles import grid_starts
from cellseg.infer.calibration import model_digest, probability_options
from cellseg.infer.segmenter import Segmenter
from cellseg.infer.slides.omezarr import finish_pyramid, open_labels
from cellseg.infer.slides.reader import Slide, open_slide, slide_id
from cellseg.infer.slides.tissue import covered, tissue_mask
from cellseg.labels.outputs import NUCLEUS_COLUMNS, nucleus_features, nucleus_table
from cellseg.labels.postprocess import PostprocessParams, instances

logger = logging.getLogger(__name__)

PARTS = ".slide_parts"  # under the output folder: one folder of part files per slide being segmented
SAMPLE_SIDE = 1024  # px a side of the tissue regions the zoom is estimated on
SAMPLES = 4
UM_COLUMNS = ("centroid_y_um", "centroid_x_um", "area_um2")
#: where a chunk's time goes (summed per slide in its summary): reading, the network (with zoom and
#: normalisation), post-processing, and stitching with writing labels, measurements and outlines
STAGES = ("read", "network", "postprocess", "write")
#: called with (chunks done, chunks in all) after every chunk
Progress = Callable[[int, int], None]


@dataclass
class SlideResult:
    """What one slide gave: its files and a summary row."""

    name: str
    labels: Path
    table: Path
    geojson: Path
    summary: dict[str, Any]


def _boxes(height: int, width: int, chunk: int) -> list[tuple[int, int, int, int]]:
    """The chunks' squares (y0, y1, x0, x1) in raster order."""
    return [
        (y, min(y + chunk, height), x, min(x + chunk, width))
        for y in range(0, height, chunk)
        for x in range(0, width, chunk)
    ]


def _grow(box: tuple[int, int, int, int], halo: int, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    y0, y1, x0, x1 = box
    return max(0, y0 - halo), min(shape[0], y1 + halo), max(0, x0 - halo), min(shape[1], x1 + halo)


def tissue_sample(slide: Slide, mask: np.ndarray, scale: float) -> tuple[np.ndarray, int]:
    """The (up to :data:`SAMPLES`) full-resolution regions of the slide with most tissue, side by side,
    and how many: what the slide-wide decisions are taken on, so every region weighs in as it would in
    one image."""
    h, w = slide.shape(0)
    side = min(SAMPLE_SIDE, h, w)
    boxes = [(y, y + side, x, x + side) for y in grid_starts(h, side) for x in grid_starts(w, side)]
    ranked = sorted(boxes, key=lambda b: -covered(mask, scale, b))[:SAMPLES]
    return np.concatenate([slide.read(0, *b) for b in ranked], axis=1), len(ranked)


def estimate_zoom(
    segment: Segmenter, slide: Slide, tissue: Callable[[], tuple[np.ndarray, int]]
) -> tuple[float, int]:
    """The model's zoom for the slide, estimated once on its :func:`tissue_sample` (``tissue`` reads
    it), and how many regions that used."""
    if segment.predictor.preprocessing.nucleus_size is None:
        return 1.0, 0
    sample, regions = tissue()
    return segment.predictor.zoom(sample, slide.name), regions


def _level_for(slide: Slide, zoom: float) -> int:
    """The coarsest level whose pixels the zoom still needs (a downsample of at most 1 / zoom)."""
    fitting = [i for i in range(len(slide.levels)) if slide.downsample(i) <= 1.02 / zoom]
    return max(fitting or [0], key=slide.downsample)


def _settings(segment: Segmenter, slide: Slide, options: SlideOptions, known: dict[str, Any] | None) -> dict:
    """What decides the slide's labels: recorded ones are kept (a resumed run must not change them),
    the rest are measured."""
    thumb, scale = slide.thumbnail()
    kind = known["modality"] if known else modality(thumb)
    estimating = 0.0
    mask = tissue_mask(thumb, kind)
    tissue = functools.cache(lambda: tissue_sample(slide, mask, scale))  # read once, if needed at all
    if known and options.zoom in (None, known["zoom"]):
        zoom, samples = known["zoom"], known["zoom_samples"]
    elif options.zoom is not None:
        zoom, samples = options.zoom, 0
    else:
        began = time.perf_counter()
        zoom, samples = estimate_zoom(segment, slide, tissue)
        estimating = time.perf_counter() - began
    preprocessing = segment.predictor.preprocessing
    if known and "stains" in known:
        slide_stains = known["stains"]
    elif preprocessing.macenko and kind == "stained":
        found = preprocessing.stains_of(tissue()[0], slide.name)
        slide_stains = found.to_dict() if found else None
    else:
        slide_stains = None
    level = _level_for(slide, zoom)
    downsample = slide.downsample(level)
    size = preprocessing.nucleus_size
    halo = max(options.halo, math.ceil(3 * size / (zoom * downsample))) if size else options.halo
    settings = {
        "model": segment.name,
        "model_sha256": model_digest(segment.run.kept_model),
        "inference": probability_options(segment.predictor.options),
        "params": segment.plan.for_modality(kind).to_dict(),
        "modality": kind,
        "zoom": zoom,
        "zoom_samples": samples,
        "level": level,
        "downsample": downsample,
        "chunk": options.chunk,
        "halo": halo,
        "pixel_size_um": slide.pixel_size_um,
        "stains": slide_stains,
    }
    # the slide's polarity and stains, as every chunk is prepared with them
    decided = Decided(kind != "fluorescence", Stains.from_dict(slide_stains) if slide_stains else None)
    return {
        "settings": settings,
        "mask": mask,
        "scale": scale,
        "zoom_seconds": estimating,
        "decided": decided,
    }


def _refuse_changes(recorded: dict[str, Any], settings: dict[str, Any], where: Path) -> None:
    changed = [k for k in settings if recorded.get(k) != settings[k]]
    if changed:
        diff = ", ".join(f"{k}: {recorded.get(k)} -> {settings[k]}" for k in changed)
        raise ValueError(
            f"{where} was made with other settings ({diff}); delete it, or choose another --out, "
            "to segment again"
        )


def _slide_coordinates(
    rows: list[dict[str, Any]], origin: tuple[int, int], downsample: float, pixel_size: float | None
) -> list[dict[str, Any]]:
    """Rows of a chunk's :func:`nucleus_table` in full-resolution slide pixels (and micrometres when the
    pixel size is known)."""
    oy, ox = origin
    out = []
    for row in rows:
        r = dict(row)
        for axis, offset in (("y", oy), ("x", ox)):
            r[f"centroid_{axis}"] = round((row[f"centroid_{axis}"] + offset + 0.5) * downsample - 0.5, 2)
            r[f"bbox_min_{axis}"] = round((row[f"bbox_min_{axis}"] + offset) * downsample)
            r[f"bbox_max_{axis}"] = round((row[f"bbox_max_{axis}"] + offset) * downsample)
        r["area"] = round(row["area"] * downsample**2, 2)
        r["perimeter"] = round(row["perimeter"] * downsample, 3)
        if pixel_size:
            r["centroid_y_um"] = round((r["centroid_y"] + 0.5) * pixel_size, 3)
            r["centroid_x_um"] = round((r["centroid_x"] + 0.5) * pixel_size, 3)
            r["area_um2"] = round(r["area"] * pixel_size**2, 3)
        out.append(r)
    return out


@dataclass
class _Predicted:
    """A chunk read and through the network: what the next stage labels, stitches and measures."""

    grown: tuple[int, int, int, int]  # the chunk with its halo, in px of the level read
    region: np.ndarray
    probs: Any  # Probabilities
    seconds: dict[str, float]  # read, network


def _predict_chunk(
    segment: Segmenter, slide: Slide, measured: dict[str, Any], box: tuple[int, int, int, int]
) -> _Predicted:
    """Read one chunk with its halo and predict it: independent of every other chunk, so the next
    chunk's prediction can run while this one is labelled (:func:`_run_chunks`)."""
    settings = measured["settings"]
    level, downsample = settings["level"], settings["downsample"]
    grown = _grow(box, settings["halo"], slide.shape(level))
    start = time.perf_counter()
    region = slide.read(level, *grown)
    read = time.perf_counter()
    zoom = settings["zoom"] * downsample
    probs = segment.predictor.at_zoom(region, zoom, slide.name, measured["decided"])
    seconds = {"read": round(read - start, 3), "network": round(time.perf_counter() - read, 3)}
    return _Predicted(grown, region, probs, seconds)


def _segment_chunk(
    slide: Slide,
    labels: Any,
    settings: dict[str, Any],
    box: tuple[int, int, int, int],
    predicted: _Predicted,
    next_id: int,
) -> dict[str, Any]:
    """Label one predicted chunk, write its nuclei into ``labels`` (the chunks before it are written:
    nuclei on a seam belong to the chunk holding their centre) and return its part (measurements,
    outlines)."""
    downsample, shape = settings["downsample"], slide.shape(settings["level"])
    gy0, gy1, gx0, gx1 = predicted.grown
    region, clock = predicted.region, [time.perf_counter()]
    found = instances(predicted.probs, PostprocessParams(**settings["params"]))
    clock.append(time.perf_counter())
    props = regionprops_table(found, properties=("label", "centroid", "bbox"))
    y0, y1, x0, x1 = box
    cy, cx = props["centroid-0"] + gy0, props["centroid-1"] + gx0
    mine = (cy >= y0) & (cy < y1) & (cx >= x0) & (cx < x1)
    at_edge = (
        ((props["bbox-0"] == 0) & (gy0 > 0))
        | ((props["bbox-2"] == found.shape[0]) & (gy1 < shape[0]))
        | ((props["bbox-1"] == 0) & (gx0 > 0))
        | ((props["bbox-3"] == found.shape[1]) & (gx1 < shape[1]))
    )
    existing = np.asarray(labels[gy0:gy1, gx0:gx1])
    existing[existing >= next_id] = 0  # what an interrupted attempt at this chunk left
    ours = np.where(np.isin(found, props["label"][mine]) & (existing == 0), found, 0)
    ours = relabel_sequential(ours)[0].astype(existing.dtype)
    count = int(ours.max())
    new = np.where(ours > 0, ours + (next_id - 1), 0).astype(existing.dtype)
    labels[gy0:gy1, gx0:gx1] = np.where(new > 0, new, existing)
    table = nucleus_table(new, region)
    rows = _slide_coordinates(table, (gy0, gx0), downsample, settings["pixel_size_um"])
    features = nucleus_features(new, table, rows, origin=(gy0, gx0), scale=downsample)
    clock.append(time.perf_counter())
    seconds = {**predicted.seconds, **dict(zip(STAGES[2:], np.diff(clock).round(3).tolist(), strict=True))}
    return {"first": next_id, "count": count, "tissue": True, "cut": int((mine & at_edge).sum()),
            "seconds": seconds, "rows": rows, "features": features}  # fmt: skip


def _write_part(path: Path, part: dict[str, Any]) -> None:
    write_text(path, json.dumps(part, separators=(",", ":")))


def _merge_parts(parts: list[Path], table: Path, geojson: Path, columns: list[str]) -> None:
    """The parts' rows as one CSV and their outlines as one FeatureCollection, one part in memory."""
    with (
        atomic_path(table) as tmp_csv,
        atomic_path(geojson) as tmp_json,
        tmp_csv.open("w", newline="") as f_csv,
        tmp_json.open("w") as f_json,
    ):
        writer = csv.DictWriter(f_csv, fieldnames=columns)
        writer.writeheader()
        f_json.write('{"type":"FeatureCollection","features":[')
        first = True
        for path in parts:
            part = json.loads(path.read_text())
            writer.writerows(part.get("rows", []))
            for feature in part.get("features", []):
                f_json.write(("" if first else ",") + json.dumps(feature, separators=(",", ":")))
                first = False
        f_json.write("]}")


@dataclass(frozen=True)
class SlideFiles:
    """Where one slide's outputs go under an output folder."""

    labels: Path
    table: Path
    geojson: Path
    parts: Path  # part files of an unfinished run, and its settings

    @classmethod
    def under(cls, out: Path, stem: str) -> SlideFiles:
        nuclei = out / "nuclei"
        return cls(out / "labels" / f"{stem}.ome.zarr", nuclei / f"{stem}.csv", nuclei / f"{stem}.geojson",
                   out / PARTS / stem)  # fmt: skip

    @property
    def record(self) -> Path:
        """A finished slide's settings and summary, beside its label arrays."""
        return self.labels / "cellseg.json"

    @property
    def settings(self) -> Path:
        return self.parts / "settings.json"


@dataclass
class _Tally:
    """What the chunks found, finished now or in an earlier, interrupted run."""

    next_id: int = 1
    cut: int = 0
    tissue_chunks: int = 0
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))

    def add(self, part: dict[str, Any]) -> None:
        self.next_id = part["first"] + part["count"]
        self.cut += part.get("cut", 0)
        self.tissue_chunks += part["tissue"]
        for stage, spent in part.get("seconds", {}).items():
            self.seconds[stage] += spent


def _run_chunks(
    segment: Segmenter,
    slide: Slide,
    labels: Any,
    measured: dict[str, Any],
    boxes: list[tuple[int, int, int, int]],
    parts: list[Path],
    name: str,
    progress: Progress | None = None,
) -> _Tally:
    """Every chunk in raster order: a finished one's part is read back, a new one segmented (or, without
    tissue, passed over) and its part written."""
    settings = measured["settings"]
    scale = measured["scale"] * settings["downsample"]  # thumbnail px per px of the level read
    todo = [
        i for i, (box, part) in enumerate(zip(boxes, parts, strict=True))
        if not part.is_file() and covered(measured["mask"], scale, box) > 0
    ]  # fmt: skip
    tally = _Tally()
    # the network predicts the next tissue chunk (in a thread: TensorFlow and most of labelling release
    # the GIL) while this one is labelled, stitched and measured, which must go in raster order
    with (
        ThreadPoolExecutor(1, thread_name_prefix="cellseg-chunk") as ahead,
        tqdm(total=len(boxes), desc=f"{name} chunks", unit="chunk", disable=None) as bar,
    ):
        coming, pending = iter(todo), {}

        def predict_next() -> None:
            for j in islice(coming, 1):
                pending[j] = ahead.submit(_predict_chunk, segment, slide, measured, boxes[j])

        predict_next()
        for i, (box, part_file) in enumerate(zip(boxes, parts, strict=True)):
            if part_file.is_file():
                part = json.loads(part_file.read_text())
            else:
                if i in pending:
                    predicted = pending.pop(i).result()
                    predict_next()
                    part = _segment_chunk(slide, labels, settings, box, predicted, tally.next_id)
                else:
                    part = {"first": tally.next_id, "count": 0, "tissue": False}
                _write_part(part_file, part)
            tally.add(part)
            bar.update(1)
            bar.set_postfix(nuclei=tally.next_id - 1)
            if progress is not None:
                progress(bar.n, len(boxes))
    return tally


def _summary(
    stem: str, source: str, slide: Slide, measured: dict[str, Any], tally: _Tally, chunks: int
) -> dict[str, Any]:
    """The slide's ``summary.csv`` row (without its label levels and total seconds)."""
    settings, pixel_size = measured["settings"], slide.pixel_size_um
    tissue_px = float(measured["mask"].mean()) * math.prod(slide.shape(0))
    tissue_mm2 = tissue_px * pixel_size**2 / 1e6 if pixel_size else None
    nuclei = tally.next_id - 1
    return {
        "image": stem,
        "path": source,
        "height": slide.shape(0)[0],
        "width": slide.shape(0)[1],
        "nuclei": nuclei,
        "zoom": round(settings["zoom"], 4),
        "level": settings["level"],
        "chunks": chunks,
        "tissue_chunks": tally.tissue_chunks,
        "tissue_megapixels": round(tissue_px / 1e6, 2),
        "tissue_mm2": round(tissue_mm2, 3) if tissue_mm2 else "",
        "nuclei_per_mm2": round(nuclei / tissue_mm2, 1) if tissue_mm2 else "",
        "cut_by_halo": tally.cut,
        "zoom_seconds": round(measured["zoom_seconds"], 1),
        **{f"{stage}_seconds": round(spent, 1) for stage, spent in tally.seconds.items()},
    }


def segment_slide(
    segment: Segmenter,
    path: str | Path,
    out: str | Path,
    options: SlideOptions | None = None,
    progress: Progress | None = None,
) -> SlideResult:
    """Segment the slide at ``path`` into ``out`` (``labels/<id>.ome.zarr``, ``nuclei/<id>.csv`` and
    ``.geojson``), resuming an interrupted run of the same settings; a finished one is not redone."""
    options = options or SlideOptions()
    path = Path(path)
    with open_slide(path, options.pixel_size_um) as slide:
        return segment_levels(segment, slide, slide_id(path), str(path), out, options, progress)


def segment_levels(
    segment: Segmenter,
    slide: Slide,
    stem: str,
    source: str,
    out: str | Path,
    options: SlideOptions | None = None,
    progress: Progress | None = None,
) -> SlideResult:
    """:func:`segment_slide` of an open :class:`Slide` (a file's, or arrays such as a napari layer's
    dask or zarr pyramid), its outputs named ``stem``; ``source`` is what the summary names as its path.
    ``progress(done, total)`` is called after every chunk (and may raise to stop: the run resumes)."""
    options = options or SlideOptions()
    files = SlideFiles.under(Path(out), stem)
    began = time.perf_counter()
    recorded = read_json(files.settings, "slide settings") if files.settings.is_file() else None
    finished = read_json(files.record, "slide record") if files.record.is_file() else None
    known = (finished or {}).get("settings") or recorded
    measured = _settings(segment, slide, options, known)
    settings = measured["settings"]
    if known:
        _refuse_changes(known, settings, files.labels if finished else files.parts)
    if finished:
        logger.info(f"{files.labels} is finished with these settings: not segmented again")
        return SlideResult(stem, files.labels, files.table, files.geojson, finished["summary"])
    if recorded is None and files.labels.exists():
        shutil.rmtree(files.labels)  # the labels of a run whose settings were never recorded
    files.parts.mkdir(parents=True, exist_ok=True)
    write_json(files.settings, settings)
    labels = open_labels(files.labels, slide.shape(settings["level"]))
    boxes = _boxes(*slide.shape(settings["level"]), settings["chunk"])
    parts = [files.parts / f"{i:06d}.json" for i in range(len(boxes))]
    tally = _run_chunks(segment, slide, labels, measured, boxes, parts, stem, progress)
    columns = list(NUCLEUS_COLUMNS.values()) + (list(UM_COLUMNS) if slide.pixel_size_um else [])
    _merge_parts(parts, files.table, files.geojson, columns)
    scale_um = slide.pixel_size_um * settings["downsample"] if slide.pixel_size_um else None
    levels = finish_pyramid(files.labels, stem, scale_um)
    summary = _summary(stem, source, slide, measured, tally, len(boxes))
    summary.update(label_levels=levels, seconds=round(time.perf_counter() - began, 1))
    if tally.cut:
        logger.warning(
            f"{stem}: {tally.cut} nuclei reach beyond the halo of {settings['halo']} px and may be cut; "
            "raise --halo"
        )
    write_json(files.record, {"settings": settings, "summary": summary})
    shutil.rmtree(files.parts)
    return SlideResult(stem, files.labels, files.table, files.geojson, summary)

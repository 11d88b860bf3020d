"""How well prediction finds each image's zoom (data.nucleus_size), against the zoom its masks give.

    python benchmarks/bench_zoom.py --run RUN_DIR [RUN_DIR ...] [--data FOLDER ... | --source NAME]
        [--estimate PASSES,TOLERANCE ...] [--score]

A run trained with ``data.nucleus_size`` predicts every image zoomed so that its nuclei have that
width, and must estimate the zoom from its own output (``cellseg.data.scale.estimate_factor``). This
scores the estimate on annotated images: by default each run's validation images, which training never
saw (``--source``: only those of one data source, e.g. a held-out MoNuSeg fold). It prints each image's
annotated and estimated zoom, how many images are within 1.3x and 2x, and the prediction seconds per
image. ``--estimate`` compares settings of the estimate (its passes and stopping tolerance; default: the
library's). With ``--score`` it also gives each image's AJI and DSB score at each estimated and at the
annotated zoom (the run's recorded post-processing): what a perfect zoom estimate would gain.
"""

from __future__ import annotations

import argparse
import functools
import time
from collections import defaultdict
from pathlib import Path

from cellseg.core.hardware import configure_process  # reads no TensorFlow

configure_process()  # as the commands do: before TensorFlow is imported

import numpy as np
from common import machine, source_samples

import cellseg.infer.predictor as predictor_module
from cellseg.data import scale
from cellseg.data.preprocessing import modality
from cellseg.data.readers import scan_samples
from cellseg.data.sample import image_id, source_of
from cellseg.infer.calibration import validation_samples
from cellseg.infer.segmenter import open_segmenter
from cellseg.labels.metrics import score_image

DEFAULT = f"{scale.ZOOM_PASSES},{scale.ZOOM_TOLERANCE}"


def estimate_with(setting: str) -> None:
    """Make prediction estimate zooms with ``PASSES,TOLERANCE``."""
    passes, tolerance = setting.split(",")
    predictor_module.estimate_factor = functools.partial(
        scale.estimate_factor, passes=int(passes), tolerance=float(tolerance)
    )


def mean_scores(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: float(np.mean([r[k] for r in rows])) for k in ("aji", "dsb_score")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, nargs="+", required=True, help="run folders with data.nucleus_size")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--data", nargs="+", help="annotated folder(s); default: each run's validation images")
    where.add_argument("--source", help="only the run's validation images from this data source")
    p.add_argument("--estimate", nargs="+", default=[DEFAULT], help=f"PASSES,TOLERANCE (default {DEFAULT})")
    p.add_argument("--score", action="store_true", help="AJI and DSB at each estimate and the annotated zoom")
    args = p.parse_args()
    print(machine())
    ratios: dict[str, list[float]] = defaultdict(list)
    seconds: dict[str, list[float]] = defaultdict(list)
    scores: dict[tuple[str, str], list[dict[str, float]]] = defaultdict(list)  # (group, setting) -> rows
    columns = [*args.estimate, "annotated"] if args.score else args.estimate
    for run in args.run:
        segment = open_segmenter(run)
        size = segment.config.data.nucleus_size
        if size is None:
            raise SystemExit(f"{run} was trained at the native scale (data.nucleus_size: null)")
        if args.data:
            samples = scan_samples(args.data, "auto")
        elif args.source:
            samples = source_samples(segment, args.source)
        else:
            samples = validation_samples(run, segment.config)
        print(f"\nrun {run}, nucleus size {size:g} px, {len(samples)} images")
        zooms = " | ".join(f"zoom {s}" for s in args.estimate)
        scored = " | ".join(f"AJI / DSB {s}" for s in columns) if args.score else ""
        print(f"| image | modality | annotated zoom | {zooms} |" + (f" {scored} |" if scored else ""))
        for ref in samples:
            sample = ref.load()
            kind = modality(sample.image)
            truth = scale.annotated_factor(sample.labels, segment.config.model.num_classes, size)
            found, maps = [], {}
            for setting in args.estimate:
                estimate_with(setting)
                start = time.perf_counter()
                maps[setting] = segment.probabilities(sample.image, ref.id)
                seconds[setting].append(time.perf_counter() - start)
                ratios[setting].append(maps[setting].factor / truth)
                found.append(f"{maps[setting].factor:.2f}")
            row = f"| {image_id(ref.id)[:24]} | {kind} | {truth:.2f} | {' | '.join(found)} |"
            if args.score:
                maps["annotated"] = segment.predictor.at_zoom(sample.image, truth, ref.id)
                for setting in columns:
                    labels = segment.labels(maps[setting], sample.image)
                    figures = score_image(ref.id, sample.labels, labels, kind).instances.scores()
                    for group in {"all", kind, source_of(ref.id)} - {""}:
                        scores[group, setting].append(figures)
                    row += f" {figures['aji']:.3f} / {figures['dsb_score']:.3f} |"
            print(row)
    estimate_with(DEFAULT)
    print()
    for setting in args.estimate:
        spread = np.abs(np.log(ratios[setting]))
        n = len(spread)
        print(
            f"estimate {setting}: estimated / annotated zoom median {np.median(ratios[setting]):.2f}, median "
            f"|log ratio| {np.median(spread):.3f}; within 1.3x: {np.sum(spread <= np.log(1.3))}/{n}, within "
            f"2x: {np.sum(spread <= np.log(2))}/{n}; {np.mean(seconds[setting]):.2f} s per image, prediction "
            "included"
        )
    for group in dict.fromkeys(g for g, _ in scores):
        means = {s: mean_scores(scores[group, s]) for s in columns}
        n = len(scores[group, columns[0]])
        print(
            f"mean AJI / DSB score, {group} ({n} images): "
            + ", ".join(f"{means[s]['aji']:.3f} / {means[s]['dsb_score']:.3f} at {s}" for s in columns)
        )


if __name__ == "__main__":
    main()

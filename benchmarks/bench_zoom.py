"""How well prediction finds each image's zoom (data.nucleus_size), against the zoom its masks give.

    python benchmarks/bench_zoom.py --run RUN_DIR [--data FOLDER ...] [--score]

A run trained with ``data.nucleus_size`` predicts every image zoomed so that its nuclei have that
width, and must estimate the zoom from its own output (``cellseg.data.scale.estimate_factor``). This
scores the estimate on annotated images: by default the run's validation images, which training never
saw. It prints each image's annotated and estimated zoom, the ratio's spread, how many images are
within 1.3x and 2x, and the prediction seconds per image. With ``--score`` it also gives each image's
DSB score at the estimated and at the annotated zoom (the run's calibrated post-processing): what a
perfect zoom estimate would gain, image by image and by modality.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from common import machine

from cellseg.core.config import InferenceOptions
from cellseg.data.preprocessing import modality
from cellseg.data.readers import scan_samples
from cellseg.data.scale import annotated_factor
from cellseg.infer.calibration import validation_samples
from cellseg.infer.segmenter import open_segmenter
from cellseg.labels.metrics import instance_counts
from cellseg.labels.postprocess import instances


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="a run folder trained with data.nucleus_size")
    p.add_argument("--data", nargs="+", help="annotated folder(s); default: the run's validation images")
    p.add_argument("--score", action="store_true", help="DSB score at the estimated and the annotated zoom")
    args = p.parse_args()
    options = InferenceOptions()
    segmenter = open_segmenter(args.run, options)  # calibrated first if not yet
    predictor, cfg = segmenter.predictor, segmenter.config
    size = cfg.data.nucleus_size
    if size is None:
        raise SystemExit(f"{args.run} was trained at the native scale (data.nucleus_size: null)")
    plan = segmenter.plan if args.score else None
    samples = scan_samples(args.data, "auto") if args.data else validation_samples(args.run, cfg)
    print(f"{machine()}; run {args.run}, nucleus size {size:g} px, {len(samples)} images")
    scored = " DSB at estimated zoom | DSB at annotated zoom |" if plan else ""
    print("| image | modality | annotated zoom | estimated zoom | ratio |" + scored)
    print("|---|---|---|---|---|" + "---|---|" * bool(plan))
    ratios, seconds, dsb = [], [], defaultdict(list)
    for ref in samples:
        sample = ref.load()
        kind = modality(sample.image)
        truth = annotated_factor(sample.labels, cfg.model.num_classes, size)
        start = time.perf_counter()
        estimated = predictor(sample.image, ref.id)
        seconds.append(time.perf_counter() - start)
        ratios.append(estimated.factor / truth)
        row = f"| {ref.id[:12]} | {kind} | {truth:.2f} | {estimated.factor:.2f} | {ratios[-1]:.2f} |"
        if plan:
            pair = [
                float(
                    instance_counts(sample.labels, instances(probs, plan.params_for(sample.image)))
                    .ap()
                    .mean()
                )
                for probs in (estimated, predictor.at_zoom(sample.image, truth, ref.id))
            ]
            for key in ("all", kind):
                dsb[key].append(pair)
            row += f" {pair[0]:.3f} | {pair[1]:.3f} |"
        print(row)
    spread = np.abs(np.log(ratios))
    n = len(ratios)
    print(
        f"\nestimated / annotated zoom: median {np.median(ratios):.2f}, median |log ratio| "
        f"{np.median(spread):.3f}; within 1.3x: {np.sum(spread <= np.log(1.3))}/{n}, within 2x: "
        f"{np.sum(spread <= np.log(2))}/{n}; {np.mean(seconds):.2f} s per image, prediction included"
    )
    for key, pairs in dsb.items():
        estimated_dsb, annotated_dsb = np.mean(pairs, axis=0)
        print(
            f"mean DSB score, {key} ({len(pairs)} images): {estimated_dsb:.3f} at the estimated zoom, "
            f"{annotated_dsb:.3f} at the annotated zoom"
        )


if __name__ == "__main__":
    main()

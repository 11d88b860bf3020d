"""How well prediction finds each image's zoom (data.nucleus_size), against the zoom its masks give.

    python benchmarks/bench_zoom.py --run RUN_DIR [--data FOLDER ...]

A run trained with ``data.nucleus_size`` predicts every image zoomed so that its nuclei have that
width, and must estimate the zoom from its own output (``cellseg.data.scale.estimate_factor``). This
scores the estimate on annotated images: by default the run's validation images, which training never
saw. It prints each image's annotated and estimated zoom, the ratio's spread, how many images are
within 1.3x and 2x, and the prediction seconds per image.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from common import machine

from cellseg.data.readers import scan_samples
from cellseg.data.scale import annotated_factor
from cellseg.evaluation import InferenceOptions, load_predictor, validation_samples


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="a run folder trained with data.nucleus_size")
    p.add_argument("--data", nargs="+", help="annotated folder(s); default: the run's validation images")
    args = p.parse_args()
    predictor, cfg = load_predictor(args.run, InferenceOptions())
    size = cfg.data.nucleus_size
    if size is None:
        raise SystemExit(f"{args.run} was trained at the native scale (data.nucleus_size: null)")
    samples = scan_samples(args.data, "auto") if args.data else validation_samples(args.run, cfg)
    print(f"{machine()}; run {args.run}, nucleus size {size:g} px, {len(samples)} images")
    print("| image | annotated zoom | estimated zoom | ratio |")
    print("|---|---|---|---|")
    ratios, seconds = [], []
    for ref in samples:
        sample = ref.load()
        truth = annotated_factor(sample.labels, cfg.model.num_classes, size)
        start = time.perf_counter()
        estimate = predictor(sample.image, ref.id).factor
        seconds.append(time.perf_counter() - start)
        ratios.append(estimate / truth)
        print(f"| {ref.id[:12]} | {truth:.2f} | {estimate:.2f} | {estimate / truth:.2f} |")
    spread = np.abs(np.log(ratios))
    n = len(ratios)
    print(
        f"\nestimated / annotated zoom: median {np.median(ratios):.2f}, median |log ratio| "
        f"{np.median(spread):.3f}; within 1.3x: {np.sum(spread <= np.log(1.3))}/{n}, within 2x: "
        f"{np.sum(spread <= np.log(2))}/{n}; {np.mean(seconds):.2f} s per image, prediction included"
    )


if __name__ == "__main__":
    main()

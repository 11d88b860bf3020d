"""Post-processing time per megapixel, by split: from a run's probability maps to instance labels.

    python benchmarks/bench_postprocess.py --run RUN [--data PATH] [--images 20]

The model predicts each image once (not timed); each split then labels the same probability maps
(``cellseg.labels.postprocess.instances``, one thread, median of 3): ``none`` (connected components),
``distance`` (distance-transform peaks), ``interior`` (three-class seeds) and, for a HoVer run,
``hover`` (seeds away from the maps' jumps, watershed along them). Each split runs with the run's
calibrated threshold and minimum size, and its own calibrated knobs where the run chose that split.
By default the images are the run's validation images.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from pathlib import Path

from common import machine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, type=Path)
    parser.add_argument("--data", type=Path, help="annotated images instead of the run's validation images")
    parser.add_argument("--images", type=int, default=20, help="at most this many images")
    args = parser.parse_args()
    print(machine())

    from cellseg.data.readers import scan_samples
    from cellseg.infer.calibration import validation_samples
    from cellseg.infer.segmenter import open_segmenter
    from cellseg.labels.postprocess import instances

    segment = open_segmenter(args.run)
    refs = scan_samples(str(args.data)) if args.data else validation_samples(args.run, segment.config)
    refs = refs[: args.images]
    predicted = []
    for ref in refs:
        sample = ref.load()
        predicted.append((sample.image, segment.probabilities(sample.image, ref.id)))
    megapixels = sum(image.shape[0] * image.shape[1] for image, _ in predicted) / 1e6
    splits = ["none", "distance", "interior"] + (["hover"] if segment.config.model.head == "hover" else [])
    print(f"{args.run.name}: {len(predicted)} images, {megapixels:.2f} MP")
    print("| split | seconds per MP (median of 3) | nuclei found |")
    print("|---|---|---|")
    for split in splits:
        times, found = [], 0
        for _ in range(3):
            began, found = time.perf_counter(), 0
            for image, probs in predicted:
                params = segment.plan.params_for(image)
                if params.split != split:
                    params = dataclasses.replace(params, split=split)
                found += int(instances(probs, params).max())
            times.append(time.perf_counter() - began)
        print(f"| {split} | {statistics.median(times) / megapixels:.3f} | {found} |")


if __name__ == "__main__":
    main()

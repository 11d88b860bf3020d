"""Post-processing calibrated per modality against one setting for all images (issue 21's lever).

Predicts a run's (or a shipped model's) validation images once, chooses the post-processing on all of
them and on each modality's own, and asks whether the per-modality choice generalises: two-fold cross-
validation inside each modality's validation images (choose on one half, score the other; the global
choice for that half is made on every validation image but that half). The held-out test set is scored
both ways for the record, never used to choose:

    python benchmarks/bench_modality_calibration.py --model versatile \\
        --test-data ../shared/data/dsb2018/stage1_test
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np
from bench_extent import Predicted, predicted
from common import machine

from cellseg import pretrained
from cellseg.calibration import choose, validation_samples
from cellseg.config import InferenceOptions
from cellseg.data.readers import scan_samples
from cellseg.inference import load_predictor
from cellseg.metrics import instance_counts
from cellseg.postprocess import PostprocessParams, instances


def dsb(items: list[Predicted], params: PostprocessParams) -> float:
    return float(np.mean([instance_counts(t, instances(p, params)).ap().mean() for _, t, p, _ in items]))


def best(items: list[Predicted], three_class: bool) -> PostprocessParams:
    return choose([(t, p) for _, t, p, _ in items], three_class)[0]


def held_out(val: list[Predicted], mine: list[Predicted], three: bool, rng) -> tuple[float, float]:
    """Two folds of ``mine``: mean DSB of each half with the setting chosen on the other half of this
    modality, and with the setting chosen on every validation image but that half."""
    order = rng.permutation(len(mine))
    own, overall = [], []
    for fold in (order[: len(mine) // 2], order[len(mine) // 2 :]):
        held = [mine[i] for i in fold]
        ids = {item[0] for item in held}
        own.append(dsb(held, best([m for m in mine if m[0] not in ids], three)))
        overall.append(dsb(held, best([v for v in val if v[0] not in ids], three)))
    return statistics.fmean(own), statistics.fmean(overall)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--run", type=Path, help="a run folder")
    which.add_argument("--model", help="a shipped model's name")
    parser.add_argument("--test-data", nargs="+", help="held-out images, scored both ways (never chosen on)")
    parser.add_argument("--seed", type=int, default=0, help="the cross-validation's random halves")
    args = parser.parse_args()
    print(machine())
    run_dir = args.run or pretrained.model_dir(args.model)
    predictor, cfg = load_predictor(run_dir, InferenceOptions())
    three = cfg.model.num_classes == 3
    val = predicted(predictor, validation_samples(run_dir, cfg))
    overall = best(val, three)
    print(f"{len(val)} validation images; one setting for all: {overall.to_dict()}")
    chosen = {}
    rng = np.random.default_rng(args.seed)
    for kind in sorted({v[3] for v in val}):
        mine = [v for v in val if v[3] == kind]
        chosen[kind] = best(mine, three)
        print(f"  {kind}, {len(mine)} images: its own setting {chosen[kind].to_dict()}")
        own, glob = dsb(mine, chosen[kind]), dsb(mine, overall)
        print(f"    val DSB (chosen on these images): own {own:.4f}, global {glob:.4f}")
        if len(mine) >= 6:
            own, glob = held_out(val, mine, three, rng)
            print(f"    2-fold held-out DSB: own {own:.4f}, global {glob:.4f}")
    if args.test_data:
        test = predicted(predictor, scan_samples(args.test_data))
        for kind in sorted({v[3] for v in test}):
            mine = [v for v in test if v[3] == kind]
            own = dsb(mine, chosen[kind]) if kind in chosen else float("nan")
            print(f"  test {kind}, {len(mine)} images: DSB global {dsb(mine, overall):.4f}, own {own:.4f}")
        per = statistics.fmean(dsb([v], chosen.get(v[3], overall)) for v in test)
        print(f"  test, all {len(test)} images: DSB global {dsb(test, overall):.4f}, per modality {per:.4f}")


if __name__ == "__main__":
    main()

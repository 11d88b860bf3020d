"""Post-processing calibrated per modality (what ``postprocess.json`` now records) against one setting.

Predicts a run's (or a shipped model's) validation images once and makes the calibration's choice
(:func:`cellseg.infer.calibration.choose_plan`: a modality's own setting only where it beats the common one on
its validation images left out one at a time), printing the record of it. The held-out test set is then
scored with the plan, with the common setting alone, and with every modality's own setting whether
the check kept it or not (what the check saved or cost), for the record, never used to choose:

    python benchmarks/bench_modality_calibration.py --model versatile \\
        --test-data ../shared/data/dsb2018/stage1_test
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from bench_extent import Predicted, predicted
from common import machine

from cellseg.core.config import InferenceOptions
from cellseg.data.readers import scan_samples
from cellseg.infer import pretrained
from cellseg.infer.calibration import choose_plan, score_table, validation_samples
from cellseg.infer.predictor import load_predictor
from cellseg.labels.postprocess import PostprocessParams, PostprocessPlan, grid


def scores(items: list[Predicted], plan: PostprocessPlan, settings: list, table: np.ndarray) -> np.ndarray:
    """Each image's DSB score under the plan's setting for its modality (read off the image, as
    prediction does; here from the scored table)."""
    chosen = [settings.index(plan.for_modality(kind)) for _, _, _, kind in items]
    return table[np.arange(len(items)), chosen]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--run", type=Path, help="a run folder")
    which.add_argument("--model", help="a shipped model's name")
    parser.add_argument("--test-data", nargs="+", help="held-out images, scored both ways (never chosen on)")
    args = parser.parse_args()
    print(machine())
    run_dir = args.run or pretrained.model_dir(args.model)
    predictor, cfg = load_predictor(run_dir, InferenceOptions())
    settings = grid(cfg.model.num_classes == 3)
    val = predicted(predictor, validation_samples(run_dir, cfg), with_masks=False)
    table = score_table([(t, p) for _, t, p, _ in val], settings)
    plan, record = choose_plan(table, settings, [kind for *_, kind in val])
    print(f"{len(val)} validation images; plan: {json.dumps(plan.to_dict())}")
    print(json.dumps(record["modalities"], indent=1))
    if args.test_data:
        test = predicted(predictor, scan_samples(args.test_data), with_masks=False)
        table = score_table([(t, p) for _, t, p, _ in test], settings)
        own = {k: PostprocessParams(**m["own_params"]) for k, m in record["modalities"].items()}
        plans = {
            "plan": plan,
            "common": PostprocessPlan(plan.default),
            "own": PostprocessPlan(plan.default, own),
        }
        scored = {name: scores(test, p, settings, table) for name, p in plans.items()}
        kinds = np.array([kind for *_, kind in test])
        print("  test DSB with the plan / the common setting alone / every modality's own (used or not)")
        for kind in [*sorted(set(kinds)), "all"]:
            mine = kinds == kind if kind != "all" else np.ones(len(kinds), bool)
            print(
                f"  {kind}, {mine.sum()} images: "
                + " / ".join(f"{v[mine].mean():.4f}" for v in scored.values())
            )


if __name__ == "__main__":
    main()

"""Are nuclei missed, or found and drawn smaller than annotated? Validation against held-out test images.

    python benchmarks/bench_extent.py --run RUN_DIR [--test FOLDER]

Scores a run's best model on its own validation images and on the held-out test images (default
``stage1_test``) with the run's calibrated post-processing (``postprocess.json``; calibrated first if
missing), and prints for each set and each modality: DSB score, pixel precision and recall, and the area
ratio of the matched nuclei (predicted over annotated, at IoU > 0.5). A ratio near 1 on validation and
well below 1 on test, with pixel precision near 1, says the test annotations draw nuclei wider than the
training annotations do: a gap no calibration on training-style annotations can close.

For the record it also scores both sets at other foreground thresholds. The test rows are not for
choosing: the recipe's threshold is the one calibrated on the validation images.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from common import DSB2018, machine

from cellseg.core.config import InferenceOptions
from cellseg.data import Sample, SampleRef
from cellseg.data.preprocessing import modality
from cellseg.data.readers import scan_samples
from cellseg.infer.calibration import validation_samples
from cellseg.infer.predictor import TiledPredictor
from cellseg.infer.segmenter import open_segmenter
from cellseg.labels.metrics import score_image, summarize
from cellseg.labels.postprocess import PostprocessParams, Probabilities, instances

THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)


#: One scored image: id, true labels, the model's probabilities, modality.
Predicted = tuple[str, np.ndarray, Probabilities, str]


def predicted(
    predictor: TiledPredictor, refs: Sequence[Sample | SampleRef], with_masks: bool = True
) -> list[Predicted]:
    """(id, true labels, probabilities, modality) of every image; the modality read with the masks,
    or without them (``with_masks`` false), as prediction reads it."""
    out = []
    for ref in refs:
        sample = ref.load()
        kind = modality(sample.image, sample.labels if with_masks else None)
        out.append((ref.id, sample.labels, predictor(sample.image, ref.id), kind))
    return out


def summary(items: list[Predicted], params: PostprocessParams) -> dict[str, float]:
    m = summarize([score_image(i, labels, instances(probs, params)) for i, labels, probs, _ in items])
    return {
        "images": m["images"],
        "dsb": m["instance"]["dsb_score"],
        "precision": m["pixel"]["precision"],
        "recall": m["pixel"]["recall"],
        "pixel_iou": m["pixel"]["iou"],
        "area_ratio": m["instance"]["area_ratio"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--test", default=str(DSB2018 / "stage1_test"), help="held-out annotated folder")
    args = p.parse_args()
    segmenter = open_segmenter(args.run, InferenceOptions())
    predictor, cfg = segmenter.predictor, segmenter.config
    params = segmenter.plan.default  # the common setting
    sets = {
        "validation": predicted(predictor, validation_samples(args.run, cfg)),
        "test": predicted(predictor, scan_samples(args.test, "auto")),
    }
    print(f"{machine()}; run {args.run}; post-processing {params.to_dict()}")
    print("\n| images | modality | n | DSB | pixel precision | pixel recall | pixel IoU | area ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for name, items in sets.items():
        groups = {"all": items} | {
            kind: [it for it in items if it[3] == kind] for kind in sorted({it[3] for it in items})
        }
        for kind, group in groups.items():
            s = summary(group, params)
            print(
                f"| {name} | {kind} | {s['images']} | {s['dsb']:.3f} | {s['precision']:.3f} | "
                f"{s['recall']:.3f} | {s['pixel_iou']:.3f} | {s['area_ratio']:.3f} |"
            )
    print("\nFor the record (not for choosing), the same model at other foreground thresholds:")
    print("| threshold | val DSB | val area ratio | test DSB | test pixel IoU | test area ratio |")
    print("|---|---|---|---|---|---|")
    for t in THRESHOLDS:
        at = dataclasses.replace(params, threshold=t)
        v, s = summary(sets["validation"], at), summary(sets["test"], at)
        mark = " (calibrated)" if t == params.threshold else ""
        print(
            f"| {t}{mark} | {v['dsb']:.3f} | {v['area_ratio']:.3f} | {s['dsb']:.3f} | "
            f"{s['pixel_iou']:.3f} | {s['area_ratio']:.3f} |"
        )


if __name__ == "__main__":
    main()

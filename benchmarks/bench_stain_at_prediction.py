"""Does Macenko stain normalisation at prediction time alone help models trained without it?

For each finished run, its validation images of one data source (``--source``; with ``data.folds`` that is
the fold it never trained on, e.g. MoNuSeg's held-out tissue sites) are predicted twice by the same model:
as trained (no normalisation) and with every stained image first mapped to Macenko's reference stains
(``data.stain_normalization: macenko`` switched on in the run's preprocessing only). Both are post-processed
with the run's recorded plan and scored per image (AJI, DSB score); the table gives each run's means and
the paired difference, the last line the mean over runs. A cheap first look before training with the
normalisation (``configs/versatile_macenko.yaml``), which this does not replace: the model never saw
normalised colours.

    python benchmarks/bench_stain_at_prediction.py --runs sweeps/heads/runs/*_f? --source monuseg
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from cellseg.core.hardware import configure_process  # reads no TensorFlow

configure_process()  # as the commands do: before TensorFlow is imported

import numpy as np
from common import machine, runs_on_source_parser, source_samples, write_rows

from cellseg.data.preprocessing import modality
from cellseg.infer.segmenter import open_segmenter
from cellseg.labels.metrics import score_image


def per_image(run: Path, source: str) -> list[dict[str, object]]:
    """Each of the run's validation images from ``source``: its AJI and DSB score without and with
    normalisation at prediction time."""
    segment = open_segmenter(run)
    plain = segment.predictor.preprocessing
    rows = []
    for ref in source_samples(segment, source):
        sample = ref.load()
        row: dict[str, object] = {"run": run.name, "id": ref.id}
        for name, macenko in (("none", False), ("macenko", True)):
            segment.predictor.preprocessing = dataclasses.replace(plain, macenko=macenko)
            labels = segment(sample.image, ref.id)
            scores = score_image(ref.id, sample.labels, labels, modality(sample.image)).instances.scores()
            row[f"aji_{name}"], row[f"dsb_{name}"] = scores["aji"], scores["dsb_score"]
        rows.append(row)
    segment.predictor.preprocessing = plain
    return rows


def main() -> None:
    args = runs_on_source_parser(__doc__).parse_args()
    print(machine())
    rows, differences = [], []
    for run in args.runs:
        mine = per_image(run, args.source)
        rows += mine
        means = {
            k: float(np.mean([r[k] for r in mine]))
            for k in ("aji_none", "aji_macenko", "dsb_none", "dsb_macenko")
        }
        differences.append(means["aji_macenko"] - means["aji_none"])
        print(
            f"{run.name}: {len(mine)} images, AJI {means['aji_none']:.3f} -> {means['aji_macenko']:.3f} "
            f"({differences[-1]:+.3f}), DSB {means['dsb_none']:.3f} -> {means['dsb_macenko']:.3f}"
        )
    better = sum(d > 0 for d in differences)
    print(f"mean AJI difference over {len(differences)} runs: {np.mean(differences):+.3f}; better: {better}")
    if args.csv:
        write_rows(args.csv, rows)


if __name__ == "__main__":
    main()

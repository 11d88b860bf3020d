"""How much can the choice of post-processing buy? Every setting of the calibration grid on held-out images.

For each run and the images it never saw (``--data``, one folder per run, in the same order): the held-out
AJI and DSB score of the setting the run recorded (``postprocess.json``, chosen on its own images), of the
best single setting for those held-out images (an oracle no calibration can beat: the ceiling of any
calibration scheme), and where the recorded setting ranks among the grid's. A small gap means the
post-processing choice is not where the missing score is. A run with a setting per modality is judged by
the one its plan uses for the held-out images, which must then share a modality.

    python benchmarks/bench_postprocess_ceiling.py --runs RUN... --data HELD_OUT...
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from common import machine

from cellseg.data.preprocessing import modality
from cellseg.data.readers import read_samples
from cellseg.infer.segmenter import open_segmenter
from cellseg.labels.metrics import score_image, summarize
from cellseg.labels.postprocess import grid, instances


def held_out_table(run: Path, data: Path) -> tuple[list[dict[str, object]], int]:
    """(every grid setting with its held-out AJI and DSB score, the index of the run's recorded setting)."""
    segment = open_segmenter(run)
    samples = read_samples(str(data))
    kinds = [modality(s.image) for s in samples]
    if len(set(kinds)) > 1 and segment.plan.by_modality:
        raise SystemExit(
            f"{data}: images of several modalities ({sorted(set(kinds))}) for a per-modality plan"
        )
    predicted = [
        (s, kind, segment.probabilities(s.image, s.id)) for s, kind in zip(samples, kinds, strict=True)
    ]
    settings = grid(segment.config.model.outputs)
    rows = []
    for params in settings:
        scored = [score_image(s.id, s.labels, instances(p, params), kind) for s, kind, p in predicted]
        figures = summarize(scored)["instance"]
        rows.append({**params.to_dict(), "aji": figures["aji"], "dsb_score": figures["dsb_score"]})
    return rows, settings.index(segment.plan.for_modality(kinds[0]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=Path, nargs="+", required=True)
    p.add_argument("--data", type=Path, nargs="+", required=True, help="each run's held-out images")
    args = p.parse_args()
    if len(args.runs) != len(args.data):
        raise SystemExit("give one held-out folder per run")
    print(machine())
    gaps = []
    for run, data in zip(args.runs, args.data, strict=True):
        rows, recorded = held_out_table(run, data)
        aji = np.array([r["aji"] for r in rows])
        best = int(np.argmax(aji))
        rank = int((aji > aji[recorded]).sum()) + 1
        knobs = {k: v for k, v in rows[best].items() if k not in ("aji", "dsb_score")}
        gaps.append(aji[best] - aji[recorded])
        print(
            f"{run.name}: recorded setting AJI {aji[recorded]:.3f} (DSB {rows[recorded]['dsb_score']:.3f}, "
            f"rank {rank} of {len(rows)}); best on the held-out images {aji[best]:.3f} "
            f"({knobs}); gap {gaps[-1]:+.3f}"
        )
    print(f"mean gap to the held-out optimum: {np.mean(gaps):+.3f} AJI over {len(gaps)} runs")


if __name__ == "__main__":
    main()

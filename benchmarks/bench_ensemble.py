"""Does averaging runs trained alike (other seeds) rescue the single unseen images a run collapses on?

Runs are grouped by their folder name without the seed (``versatile_hover_s0_f1``, ``versatile_hover_s1_f1``
-> ``versatile_hover_f1``): the same config and validation fold. On the group's validation images of
``--source`` (with ``data.folds``, the fold none of them trained on) every member segments alone, with its
own zoom and recorded plan, as the sweep scores it; then the group as one: each member predicts at one
zoom (the median of the members' own estimates), the probability maps (foreground, interior, HoVer maps)
are averaged and post-processed with the first member's recorded plan. Cellpose 1 and 2 averaged four
networks by default, nnU-Net ensembles its five fold models; this measures what that buys here, before
any ensemble is built into prediction.

    python benchmarks/bench_ensemble.py --runs sweeps/heads_monuseg_folds/runs/*_f? --source monuseg
"""

from __future__ import annotations

import re
import statistics
from pathlib import Path

from cellseg.core.hardware import configure_process  # reads no TensorFlow

configure_process()  # as the commands do: before TensorFlow is imported

import numpy as np
from common import machine, runs_on_source_parser, source_samples, write_rows

from cellseg.data.preprocessing import modality
from cellseg.infer.segmenter import Segmenter, open_segmenter
from cellseg.labels.metrics import score_image
from cellseg.labels.postprocess import Probabilities

FIGURES = ("aji", "pq", "dsb_score")


def groups(runs: list[Path]) -> dict[str, list[Path]]:
    """Run folders by name without their seed, each group in seed order."""
    found: dict[str, list[Path]] = {}
    for run in sorted(runs, key=lambda r: r.name):
        found.setdefault(re.sub(r"_s\d+(?=_f\d+$|$)", "", run.name), []).append(run)
    return found


def averaged(maps: list[Probabilities]) -> Probabilities:
    """The members' probability maps averaged, map by map (all predicted at one zoom)."""

    def mean(field: str) -> np.ndarray | None:
        values = [getattr(m, field) for m in maps]
        return None if values[0] is None else np.mean(values, axis=0)

    return Probabilities(mean("foreground"), mean("interior"), maps[0].factor, mean("hv"))


def per_image(members: list[Segmenter], source: str) -> list[dict[str, object]]:
    """Each held-out image's figures for every member alone and for the members averaged."""
    rows = []
    for ref in source_samples(members[0], source):
        sample = ref.load()
        image, kind = sample.image, modality(sample.image)
        alone = [m.probabilities(image, ref.id) for m in members]  # each at its own estimated zoom
        common = float(statistics.median(own.factor for own in alone))
        row: dict[str, object] = {"id": ref.id, "zooms": " ".join(f"{own.factor:.2f}" for own in alone)}
        maps = []
        for i, (member, own) in enumerate(zip(members, alone, strict=True)):
            scores = score_image(ref.id, sample.labels, member.labels(own, image), kind).instances.scores()
            row |= {f"{k}_{i}": scores[k] for k in FIGURES}
            maps.append(own if own.factor == common else member.predictor.at_zoom(image, common, ref.id))
        labels = members[0].labels(averaged(maps), image)
        scores = score_image(ref.id, sample.labels, labels, kind).instances.scores()
        rows.append(row | {f"{k}_ensemble": scores[k] for k in FIGURES})
    return rows


def mean_of(rows: list[dict[str, object]], key: str) -> float:
    return float(np.mean([row[key] for row in rows]))


def main() -> None:
    args = runs_on_source_parser(__doc__).parse_args()
    print(machine())
    rows, gains = [], []
    for name, runs in groups(args.runs).items():
        if len(runs) < 2:
            print(f"{name}: one run ({runs[0].name}), nothing to average")
            continue
        mine = per_image([open_segmenter(run) for run in runs], args.source)
        rows += [{"group": name, **row} for row in mine]
        alone = [mean_of(mine, f"aji_{i}") for i in range(len(runs))]
        together = mean_of(mine, "aji_ensemble")
        gains.append(together - float(np.mean(alone)))
        pq_alone = np.mean([mean_of(mine, f"pq_{i}") for i in range(len(runs))])
        print(
            f"{name}: {len(runs)} runs, {len(mine)} images; AJI alone "
            f"{' / '.join(f'{a:.3f}' for a in alone)} (mean {np.mean(alone):.3f}, best {max(alone):.3f}), "
            f"averaged {together:.3f} ({gains[-1]:+.3f}); PQ alone mean {pq_alone:.3f}, averaged "
            f"{mean_of(mine, 'pq_ensemble'):.3f}"
        )
    if gains:
        print(
            f"mean AJI gain of averaging, over the members' mean ({len(gains)} groups): {np.mean(gains):+.3f}"
        )
    if args.csv and rows:
        write_rows(args.csv, rows)


if __name__ == "__main__":
    main()

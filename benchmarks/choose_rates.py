"""Each optimiser's learning rate, chosen on validation from a learning-rate grid sweep (issue 24, part 4).

Reads the ``comparison.csv`` of a sweep whose variants are ``optimizer=<name>,learning_rate=<value>``
(``scripts/sweep.py --grid 'train={optimizer: sgd, learning_rate: 0.1},...'``), keeps for every optimiser
the rate with the best mean ``--by`` figure (default: validation DSB score; never a test figure), says when
the choice sits on the edge of that optimiser's grid (the optimum may lie outside it), and prints the
``--grid`` argument that trains the chosen rates; with ``--extend``, instead the whole grid plus the next
rate beyond each edge choice (the grid's own spacing), to rerun the grid sweep with (finished runs reused):

    python benchmarks/choose_rates.py sweeps/optimizers/comparison.csv [--extend]
"""

from __future__ import annotations

import argparse
import csv
import math
import re
import sys
from pathlib import Path

NAME = re.compile(r"optimizer=(?P<opt>\w+),learning_rate=(?P<lr>[0-9.e+-]+)$")


def choose(rows: list[dict[str, str]], by: str) -> dict[str, tuple[float, float, list[float]]]:
    """{optimiser: (chosen rate, its mean figure, the rates tried)} from comparison.csv rows."""
    grid: dict[str, dict[float, float]] = {}
    for row in rows:
        match = NAME.match(row["config"])
        if match:
            value = float(row[f"{by}_mean"]) if row[f"{by}_mean"] else math.nan
            grid.setdefault(match["opt"], {})[float(match["lr"])] = value
    chosen = {}
    for opt, scores in grid.items():
        finite = {lr: v for lr, v in scores.items() if not math.isnan(v)}
        if finite:
            best = max(finite, key=finite.__getitem__)
            chosen[opt] = (best, finite[best], sorted(scores))
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("comparison", type=Path, help="the grid sweep's comparison.csv")
    parser.add_argument("--by", default="val_dsb_score", help="figure to maximise (default val_dsb_score)")
    parser.add_argument("--extend", action="store_true", help="print the grid with a rate beyond each edge")
    args = parser.parse_args(argv)
    if args.by.startswith("test"):
        parser.error("choose on validation figures: a test figure would tune on the test set")
    with args.comparison.open(newline="") as f:
        chosen = choose(list(csv.DictReader(f)), args.by)
    if not chosen:
        print(f"{args.comparison}: no optimizer=...,learning_rate=... variants", file=sys.stderr)
        return 1
    for opt, (lr, value, rates) in chosen.items():
        edge = " (edge of the grid: the best rate may lie outside)" if lr in (rates[0], rates[-1]) else ""
        print(f"{opt:13s} {lr:g} ({args.by} {value:.4f}; tried {', '.join(f'{r:g}' for r in rates)}){edge}")
    points = [(opt, lr) for opt, (lr, _, _) in chosen.items()]
    if args.extend:
        points = []
        for opt, (lr, _, rates) in chosen.items():
            step = rates[1] / rates[0] if len(rates) > 1 else 3.0
            beyond = [float(f"{lr * step:.3g}")] if lr == rates[-1] else []
            beyond += [float(f"{lr / step:.3g}")] if lr == rates[0] else []
            points += [(opt, r) for r in sorted({*rates, *beyond})]
    values = ",".join(f"{{optimizer: {opt}, learning_rate: {lr:g}}}" for opt, lr in points)
    print(f"--grid 'train={values}'")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Does one sweep's ranking predict another's? (issue 24, part 2: the 200-step study against the full budget.)

Reads the ``comparison.csv`` of two sweeps over the same variants (e.g. the same activations at two
budgets), ranks the variants they share by the mean of ``--by`` (default: test DSB score), and prints a
markdown table: each variant's mean, difference from the baseline (in the figure each sweep ranked by)
with its 95 % interval over seeds, and verdict in both sweeps, side by side; then Spearman's and
Kendall's rank correlation over the shared variants (Kendall's with its exact p: with a handful of
variants even a perfect agreement is weak evidence) and the verdicts that change. ``--exclude`` leaves
out variants whose definition differs between the two (e.g. an activation redefined in between):

    python benchmarks/compare_studies.py benchmarks/results/study/comparison.csv \
        benchmarks/results/study_full/comparison.csv --names "200 steps" "full recipe" --exclude gated_mish
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

from scipy import stats

from cellseg.sweep.spec import METRICS

Rows = dict[str, dict[str, str]]  # comparison.csv rows by variant label


def read(path: Path) -> Rows:
    """comparison.csv rows by variant label."""
    with path.open(newline="") as f:
        return {row["label"]: row for row in csv.DictReader(f)}


def _float(row: dict[str, str], key: str) -> float:
    return float(row[key]) if row.get(key) else math.nan


def _difference(row: dict[str, str]) -> str:
    diff = _float(row, "vs_baseline_diff")
    if math.isnan(diff):
        return "baseline" if row["vs_baseline_verdict"] == "baseline" else "—"
    low, high = _float(row, "vs_baseline_ci_low"), _float(row, "vs_baseline_ci_high")
    interval = "" if math.isnan(low) else f" [{low:+.3f}, {high:+.3f}]"
    return f"{diff:+.3f}{interval}"


def _verdict(row: dict[str, str]) -> str:
    return row["vs_baseline_verdict"].split(" (")[0]


def compare(a: Rows, b: Rows, by: str, names: tuple[str, str]) -> str:
    """The markdown comparison of two sweeps' shared variants, ranked best first (in ``by``'s direction)."""
    shared = [label for label in a if label in b]
    if len(shared) < 3:
        raise SystemExit(f"only {len(shared)} variants in both sweeps ({shared}): a ranking needs 3 or more")
    mean_a = {v: _float(a[v], f"{by}_mean") for v in shared}
    mean_b = {v: _float(b[v], f"{by}_mean") for v in shared}
    sign = -1 if METRICS[by] else 1  # higher is better for scores, lower for losses
    rank_a = {v: i + 1 for i, v in enumerate(sorted(shared, key=lambda v: sign * mean_a[v]))}
    rank_b = {v: i + 1 for i, v in enumerate(sorted(shared, key=lambda v: sign * mean_b[v]))}
    head = ["variant"]
    for name in names:
        head += [f"rank, {name}", f"{by}, {name}", f"Δ vs baseline, {name}", f"verdict, {name}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for v in sorted(shared, key=rank_b.__getitem__):
        cells = [v]
        for rank, mean, rows in ((rank_a, mean_a, a), (rank_b, mean_b, b)):
            ok = rows[v]["ok"]
            cells += [
                str(rank[v]),
                f"{mean[v]:.3f} ({ok} seed{'s' * (ok != '1')})",
                _difference(rows[v]),
                _verdict(rows[v]),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    x, y = [mean_a[v] for v in shared], [mean_b[v] for v in shared]
    rho = stats.spearmanr(x, y)
    tau = stats.kendalltau(x, y, method="exact")
    lines += [
        "",
        f"Over the {len(shared)} shared variants: Spearman's rho {rho.statistic:+.2f}, "
        f"Kendall's tau {tau.statistic:+.2f} (exact p {tau.pvalue:.2f}).",
    ]
    untested = [v for v in shared if "too few seeds" in _verdict(a[v]) + _verdict(b[v])]
    changed = [v for v in shared if v not in untested and _verdict(a[v]) != _verdict(b[v])]
    verdicts = "; ".join(f"{v}: {_verdict(a[v])} -> {_verdict(b[v])}" for v in changed) or "none"
    lines.append(f"Verdicts that change ({names[0]} -> {names[1]}): {verdicts}.")
    if untested:
        lines.append(f"Too few seeds in one of the two to compare verdicts: {', '.join(untested)}.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("first", type=Path, help="the first sweep's comparison.csv")
    parser.add_argument("second", type=Path, help="the second sweep's comparison.csv")
    parser.add_argument(
        "--by", default="test_dsb_score", choices=sorted(METRICS), help="the figure to rank by"
    )
    parser.add_argument("--names", nargs=2, default=("first", "second"), help="the two sweeps' names")
    parser.add_argument("--exclude", nargs="*", default=[], help="variants to leave out of both")
    parser.add_argument("--out", type=Path, help="also write the markdown here")
    args = parser.parse_args()
    a, b = read(args.first), read(args.second)
    for label in args.exclude:
        a.pop(label, None)
        b.pop(label, None)
    text = compare(a, b, args.by, tuple(args.names))
    print(text, end="")
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()

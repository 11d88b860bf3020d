"""``scripts/plot_history.py``: one figure comparing a logged metric across runs, grouped by activation."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="plot_history.py",
        description=(
            "Plot a per-epoch metric of several runs on one figure: one curve per activation; runs of the "
            "same activation (different seeds) as a mean line with a min-max band."
        ),
        epilog="example: python scripts/plot_history.py runs/*_relu_s* runs/*_isru_s* --metric val_iou",
    )
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR", help="run folders of train.py")
    p.add_argument(
        "--metric",
        default="val_loss",
        help="any history.csv / diagnostics.csv column: val_loss (default), val_iou, val_dice, loss, "
        "learning_rate, a learned parameter such as enc0_1_act.alpha, or a diagnostic",
    )
    p.add_argument("--out", type=Path, help="image file to write (default: <metric>.png)")
    p.add_argument("--title", help="figure title")
    scale = p.add_mutually_exclusive_group()
    scale.add_argument("--log", dest="log_scale", action="store_const", const=True, help="log y axis")
    scale.add_argument("--linear", dest="log_scale", action="store_const", const=False, help="linear y axis")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from cellseg.core import runs
    from cellseg.evaluate.plots import plot_histories

    series: dict[str, list[tuple[list[int], list[float]]]] = {}
    try:
        for run_dir in args.runs:
            series.setdefault(runs.run_label(run_dir), []).append(runs.read_metric(run_dir, args.metric))
    except (FileNotFoundError, KeyError) as exc:
        print(f"error: {exc.args[0] if isinstance(exc, KeyError) else exc}", file=sys.stderr)
        return 2
    out = args.out or Path(f"{args.metric.replace('/', '_')}.png")
    plot_histories(series, args.metric, out, title=args.title, log_scale=args.log_scale)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

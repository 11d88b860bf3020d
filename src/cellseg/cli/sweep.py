"""``scripts/sweep.py``: train every activation config with every seed and compare them in one table."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from cellseg.cli import setup_logging
from cellseg.core.config import ConfigError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sweep.py",
        description=(
            "Train every variant (config file x --grid values) with every seed on identical data and "
            "train/validation split (seeds change only initialisation and patch order); evaluate each "
            "run; write comparison.csv / comparison.md (best first; paired differences from the baseline "
            "with 95 % intervals, Holm-corrected p-values and the detectable difference), runs.csv, "
            "val_loss.png and scores.png. Run the same command again to resume an interrupted sweep: "
            "finished runs are reused."
        ),
        epilog="examples: python scripts/sweep.py --configs configs/relu.yaml configs/isru.yaml "
        "configs/mish.yaml --seeds 0 1 2 --data ../shared/data/dsb2018/stage1_train\n"
        "          python scripts/sweep.py --grid model.activation=relu,mish,selu "
        "--grid model.batch_norm=true,false --seeds 0 1 2 3 4 --workers 2",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--sweep", type=Path, help="a sweep YAML (configs, seeds, data, test_data, set, ...)")
    p.add_argument("--configs", nargs="+", metavar="FILE", help="run configs (default: configs/base.yaml's)")
    p.add_argument(
        "--grid", action="append", default=None, metavar="KEY=V1,V2",
        help="sweep a config key over values, repeatable (every combination trains): "
        "--grid model.activation=relu,mish --grid train.optimizer=adam,nesterov",
    )  # fmt: skip
    p.add_argument("--seeds", nargs="+", type=int, metavar="N", help="seeds (default 0 1 2)")
    p.add_argument(
        "--folds",
        type=int,
        metavar="K",
        help="k-fold validation: every (variant, seed) trains K times, validating on each fold of "
        "data.folds (e.g. --set data.folds.source=monuseg --set 'data.folds.group=TCGA-(..)-')",
    )
    p.add_argument("--data", nargs="+", metavar="PATH", help="training data (default: synthetic)")
    p.add_argument("--test-data", nargs="+", metavar="PATH", help="held-out images to score runs on")
    p.add_argument(
        "--set", dest="overrides", action="append", default=None, metavar="KEY=VALUE",
        help="config override applied to every run, e.g. --set train.epochs=10 (repeatable)",
    )  # fmt: skip
    p.add_argument(
        "--baseline",
        help="variant the others are tested against: its name, its config file, or with one grid key "
        "KEY=VALUE (default: relu if swept, else the first variant)",
    )
    p.add_argument("--data-seed", type=int, help="seed of the data and split every run shares (default 0)")
    p.add_argument(
        "--workers", type=int, help="runs trained at once, the cores split between them (default 1)"
    )
    p.add_argument(
        "--executor", choices=("local", "ray"),
        help="where runs train: local processes (default) or a Ray cluster (pip install 'cellseg[ray]')",
    )  # fmt: skip
    p.add_argument(
        "--address", help="Ray cluster address ('auto': the one this machine is in; default: start one here)"
    )
    p.add_argument("--rank-by", help="figure to sort and test by (default best_val_iou)")
    p.add_argument("--out", type=Path, help="sweep folder (default sweeps/<sweep file name> or sweeps/sweep)")
    p.add_argument(
        "--results", type=Path, metavar="DIR",
        help="also keep the tables, figures and every finished run's record (no model: a few hundred kB) "
        "in DIR, a folder to commit; a later sweep with the same DIR, on any machine, reuses those runs",
    )  # fmt: skip
    return p


def spec_from_args(args: argparse.Namespace):
    from cellseg.sweep import SweepSpec, load_sweep_file, parse_grid

    given = {
        "configs": args.configs,
        "grid": parse_grid(args.grid) if args.grid else None,
        "data_seed": args.data_seed,
        "workers": args.workers,
        "executor": args.executor,
        "address": args.address,
        "seeds": args.seeds,
        "folds": args.folds,
        "data": args.data,
        "test_data": args.test_data,
        "set": args.overrides,
        "baseline": args.baseline,
        "rank_by": args.rank_by,
    }
    given = {k: v for k, v in given.items() if v is not None}
    if args.sweep is not None:
        spec = load_sweep_file(args.sweep)
        return dataclasses.replace(spec, **given)
    if "configs" not in given and "grid" not in given:
        raise ConfigError("give --configs FILE ..., --grid KEY=V1,V2 or --sweep FILE")
    return SweepSpec(**given)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    try:
        spec = spec_from_args(args)
        out = args.out or Path("sweeps") / (args.sweep.stem if args.sweep else "sweep")
        from cellseg.sweep import COMPARISON_MD, run_sweep

        rows = run_sweep(spec, out, results=args.results)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print((out / COMPARISON_MD).read_text())
    print(out)
    return 0 if all(row["ok"] == row["runs"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

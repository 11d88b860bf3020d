"""``cellseg-train`` / ``scripts/train.py``: train a U-Net from a YAML config."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cellseg.cli import setup_logging
from cellseg.core import runs
from cellseg.core.config import ConfigError, load_config


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="train.py",
        description="Train a nucleus U-Net (on built-in synthetic images unless --data is given).",
        epilog="example: python scripts/train.py --config configs/isru.yaml --set train.epochs=5",
    )
    p.add_argument(
        "--config", type=Path, help="YAML config (e.g. configs/isru.yaml); default: configs/base.yaml"
    )
    p.add_argument("--data", nargs="+", metavar="PATH", help="annotated image folder(s); sets data.path")
    p.add_argument(
        "--out", type=Path, default=Path("runs"), help="parent folder for run folders (default: runs)"
    )
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.epochs=5 --set model.activation=mish (repeatable)",
    )  # fmt: skip
    p.add_argument(
        "--init",
        metavar="MODEL",
        help="fine-tune: start from a shipped model (dsb2018, versatile) or a run folder; sets train.init "
        "(e.g. --config configs/finetune.yaml --init versatile --data my_images/)",
    )
    p.add_argument(
        "--resume", type=Path, metavar="RUN_DIR", help="continue an interrupted run from its last epoch"
    )
    p.add_argument(
        "--list-activations", action="store_true", help="print the activation registry as a table and exit"
    )
    p.add_argument(
        "--quiet",
        action="store_true",
        help="no per-epoch progress output (the data, model and run folder are still printed)",
    )
    return p


def _resume_config(run_dir: Path, overrides: list[str]):
    bad = [o for o in overrides if not o.startswith("train.epochs=")]
    if bad:
        raise ConfigError(f"--resume keeps the run's own config; only train.epochs may be changed, not {bad}")
    cfg = runs.load_run_config(run_dir)
    for item in overrides:
        cfg.train.epochs = load_config(None, [item]).train.epochs
    return cfg


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    if args.list_activations:
        from cellseg.model.activations import markdown_table

        print(markdown_table())
        return 0
    try:
        if args.resume is not None:
            if args.config or args.data or args.init:
                raise ConfigError(
                    "--resume continues a run with its saved config; drop --config, --data and --init"
                )
            cfg = _resume_config(args.resume, args.overrides)
        else:
            cfg = load_config(args.config, args.overrides)  # no --config: the defaults of configs/base.yaml
            if args.data:
                cfg.data.path = args.data[0] if len(args.data) == 1 else list(args.data)
            if args.init:
                cfg.train.init = args.init
        from cellseg.data import DataError
        from cellseg.train.trainer import TrainingError, train

        try:
            result = train(cfg, out=args.out, resume=args.resume, verbose=0 if args.quiet else None)
        except (DataError, TrainingError, runs.RunBusy, OSError) as exc:  # OSError: a missing file, full disk
            print(f"error: {exc}", file=sys.stderr)
            return 2
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    s = result.summary
    saved = s.best_val_loss is not None and runs.Run(result.run_dir).kept_model.is_file()
    if not saved:
        print(f"error: no model was saved: no epoch finished ({s.stopped_reason})", file=sys.stderr)
    else:
        print(
            f"done: {s.epochs_run} epochs in {s.wall_seconds:.0f} s; best val_loss "
            f"{s.best_val_loss:.4f} (epoch {s.best_epoch}), val IoU {s.best_val_iou:.3f}, "
            f"val Dice {s.best_val_dice:.3f}; model.keras holds epoch {s.kept_epoch}"
            + ("" if s.completed else f"; stopped early: {s.stopped_reason}")
        )
    print(result.run_dir)
    return 0 if saved and s.completed else 1


if __name__ == "__main__":
    sys.exit(main())

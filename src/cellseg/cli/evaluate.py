"""``cellseg-evaluate`` / ``scripts/evaluate.py``: score a trained run on held-out annotated images."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from cellseg.cli import (
    add_inference_options,
    add_model_choice,
    inference_options,
    input_errors,
    model_folder,
    setup_logging,
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="evaluate.py",
        description=(
            "Score a trained run on annotated images: whole-image tiled prediction, instance "
            "post-processing chosen on the run's validation images, pixel and DSB2018 instance metrics."
        ),
        epilog="example: python scripts/evaluate.py --run runs/20261123-134336_isru_s0 "
        "--data ../shared/data/dsb2018/stage1_test --save-labels labels/",
    )
    add_model_choice(p)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--data", nargs="+", metavar="PATH", help="annotated image folder(s)")
    which.add_argument(
        "--split",
        choices=["val"],
        help="score the run's own validation images instead, per data source and modality (optimistic: "
        "they chose the post-processing; use --data for a held-out score)",
    )
    p.add_argument(
        "--layout", default="auto", choices=["auto", "dsb2018", "paired", "beside"], help="data layout"
    )
    p.add_argument(
        "--out",
        type=Path,
        help="where metrics.json, per_image.csv and overlays/ go (default RUN_DIR/evaluation, or "
        "RUN_DIR/evaluation_val with --split val; with --model, evaluation_NAME here)",
    )
    p.add_argument(
        "--save-labels", type=Path, metavar="DIR", help="write predicted labels as 16-bit <id>.png"
    )
    add_inference_options(p)
    return p


def _fmt(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3f}"


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    run_dir, out = model_folder(p, args), args.out
    if args.model is not None:  # a shipped model's folder is part of the installed package: left as it is
        out = out or Path(f"evaluation_{args.model}")
    setup_logging()
    from cellseg.evaluate.evaluation import evaluate_run

    options = inference_options(args)
    try:
        out, m = evaluate_run(
            run_dir, args.data, out, args.save_labels, options, args.layout, args.recalibrate
        )
    except input_errors() as exc:  # OSError: disk full
        print(f"error: {exc}", file=sys.stderr)
        return 2
    inst, pix = m.instance, m.pixel
    print(
        f"{m.images} images, {m.n_true} true / {m.n_pred} predicted nuclei in {m.seconds:.1f} s\n"
        f"DSB score {_fmt(inst['dsb_score'])}  AP50 {_fmt(inst['ap_50'])}  AP75 {_fmt(inst['ap_75'])}  "
        f"AJI {_fmt(inst['aji'])}  PQ {_fmt(inst['pq'])}  pixel IoU {_fmt(pix['iou'])}  "
        f"Dice {_fmt(pix['dice'])}  area ratio {_fmt(inst['area_ratio'])}"
    )
    for name, h in {**m.by_source, **m.by_modality}.items():
        print(
            f"  {name:<14} {h['images']:>4} images  DSB score {_fmt(h['dsb_score'])}  "
            f"AP50 {_fmt(h['ap_50'])}  AJI {_fmt(h['aji'])}  pixel IoU {_fmt(h['pixel_iou'])}"
        )
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

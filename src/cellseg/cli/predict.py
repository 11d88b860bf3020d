"""``cellseg-predict`` / ``scripts/predict.py``: segment images without masks and measure their nuclei."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cellseg.cli import (
    add_inference_options,
    add_model_choice,
    inference_options,
    input_errors,
    model_folder,
    print_models,
    setup_logging,
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="predict.py",
        description=(
            "Segment nuclei in images that have no masks, with a trained run: whole-image tiled prediction, "
            "the run's calibrated post-processing, and per image a 16-bit label image, an outline overlay "
            "and a table of nuclei (position, area, perimeter, shape, intensity); whole slides chunk by "
            "chunk, into an OME-Zarr label image and the nuclei as QuPath-ready GeoJSON."
        ),
        epilog="example: python scripts/predict.py --run runs/20261123-134336_relu_s0 "
        "'images/*.tif' more_images/ --out segmented/",
    )
    add_model_choice(p, list_models=True)
    p.add_argument(
        "inputs", nargs="*", metavar="INPUT",
        help="image files, folders (their images; a paired or DSB2018 layout's images/, never its masks) "
        "or glob patterns (quote them: 'data/**/*.png')",
    )  # fmt: skip
    p.add_argument("--out", type=Path, default=Path("segmented"), help="output folder (default: segmented)")
    p.add_argument(
        "--format", dest="label_format", default="png", choices=["png", "tif"], help="label image format"
    )
    add_inference_options(p)
    add_slide_options(p)
    return p


def add_slide_options(p: argparse.ArgumentParser) -> None:
    """How whole slides (SVS, NDPI, OME-TIFF, tiled TIFF, OME-Zarr) are cut; defaults from SlideOptions."""
    from cellseg.core.config import SlideOptions  # light: no TensorFlow

    d = SlideOptions()
    g = p.add_argument_group(
        "whole slides", "read lazily and segmented chunk by chunk into labels/<id>.ome.zarr (resumable)"
    )
    g.add_argument("--chunk", type=int, default=d.chunk, help=f"chunk side in px (default {d.chunk})")
    g.add_argument(
        "--halo", type=int, default=d.halo,
        help=f"context read around each chunk, px; wider than a nucleus (default {d.halo})",
    )  # fmt: skip
    g.add_argument(
        "--zoom", type=float, default=None,
        help="zoom of the slide's full-resolution pixels for the model (default: estimated on its tissue)",
    )  # fmt: skip
    g.add_argument(
        "--pixel-size", type=float, default=None, metavar="UM",
        help="µm per full-resolution pixel, where the file does not say (measurements in µm)",
    )  # fmt: skip
    g.add_argument(
        "--executor", choices=("local", "ray"), default="local",
        help="ray: every input a Ray task (a folder of slides over a cluster); default local, one by one",
    )  # fmt: skip
    g.add_argument(
        "--workers", type=int, default=1,
        help="ray: inputs at once per machine, its cores split between them (default 1)",
    )  # fmt: skip
    g.add_argument(
        "--address", help="ray: the cluster to join ('auto': the one this machine is in; default: start one)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list_models:
        return print_models()
    run = model_folder(parser, args)
    if not args.inputs:
        parser.error("give the images to segment (files, folders or glob patterns)")
    setup_logging()
    from cellseg.core.config import SlideOptions
    from cellseg.infer.predict import find_images, predict_images

    options = inference_options(args)
    try:
        slides = SlideOptions(args.chunk, args.halo, args.zoom, args.pixel_size)
        images = find_images(args.inputs)
        if args.workers < 1:
            raise ValueError(f"--workers {args.workers}: must be at least 1")
        report = predict_images(
            run, images, args.out, options, args.label_format, args.recalibrate, slides,
            args.executor, args.workers, args.address,
        )  # fmt: skip
    except input_errors() as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    done = len(report.rows) - len(report.failed)
    print(
        f"{done} images segmented, {report.nuclei} nuclei, {report.megapixels:.1f} MP in "
        f"{report.seconds:.1f} s ({report.megapixels / max(report.seconds, 1e-9):.2f} MP/s), "
        f"peak memory {report.peak_memory_mb:.0f} MB"
        + (" (this process; not the Ray workers')" if args.executor == "ray" else "")
    )
    for _, reason in report.failed:  # the reason starts with the file's path
        print(f"FAILED {reason}", file=sys.stderr)
    if report.failed:
        print(f"error: {len(report.failed)} of {len(report.rows)} images could not be read", file=sys.stderr)
    print(args.out)
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Command-line entry points; each is a thin layer over the library."""

from __future__ import annotations

import argparse
from typing import Any


def add_inference_options(p: argparse.ArgumentParser) -> None:
    """The whole-image prediction options shared by evaluate.py and predict.py."""
    p.add_argument("--tile", type=int, default=256, help="tile size in pixels (default 256)")
    p.add_argument("--overlap", type=int, default=32, help="overlap between tiles in pixels (default 32)")
    p.add_argument("--batch-size", type=int, default=8, help="tiles per prediction batch (default 8)")
    p.add_argument(
        "--tta", action="store_true", help="average over flips (test-time augmentation, 4x slower)"
    )


def inference_options(args: argparse.Namespace) -> Any:
    """The :class:`~cellseg.evaluation.InferenceOptions` of :func:`add_inference_options`'s flags."""
    from cellseg.evaluation import InferenceOptions

    return InferenceOptions(args.tile, args.overlap, args.batch_size, args.tta)

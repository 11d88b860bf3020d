"""Command-line entry points; each is a thin layer over the library.

Importing this package configures the process for TensorFlow, as a command may and a library must not
(:func:`cellseg.core.hardware.configure_process`): every command imports it before TensorFlow.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from cellseg.core.hardware import configure_process

configure_process()


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` is when a line is logged (tests and notebooks replace it)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(message)s"))

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stdout

    @stream.setter
    def stream(self, _: Any) -> None:
        pass


def setup_logging(level: int = logging.INFO) -> None:
    """Show the library's progress lines on stdout, bare, as the commands' output.

    The library only logs (``logging.getLogger(__name__)``); it is the commands that decide to show it.
    Calling this again changes the level and keeps one handler.
    """
    logger = logging.getLogger("cellseg")
    if not any(isinstance(h, _StdoutHandler) for h in logger.handlers):
        logger.addHandler(_StdoutHandler())
    logger.setLevel(level)


def input_errors() -> tuple[type[Exception], ...]:
    """What a command reports as one ``error:`` line, not a traceback: bad config, data, files, values."""
    from cellseg.core.config import ConfigError
    from cellseg.data import DataError

    return (ConfigError, DataError, OSError, ValueError)


def add_model_choice(p: argparse.ArgumentParser, list_models: bool = False) -> None:
    """``--run RUN_DIR`` or ``--model NAME`` (a model shipped with cellseg), and ``--list-models``."""
    which = p.add_mutually_exclusive_group()
    which.add_argument("--run", type=Path, metavar="RUN_DIR", help="a run folder of train.py")
    which.add_argument("--model", metavar="NAME", help="a model shipped with cellseg: no training needed")
    if list_models:
        which.add_argument("--list-models", action="store_true", help="the shipped models, and exit")


def model_folder(p: argparse.ArgumentParser, args: argparse.Namespace) -> Path:
    """The run folder ``--run`` or ``--model`` names (a shipped model is laid out as a run)."""
    if args.model is not None:
        from cellseg.infer.pretrained import model_dir

        if getattr(args, "recalibrate", False):  # a shipped model's folder is part of the installed package
            p.error("--recalibrate would change a shipped model; copy its folder and use --run on the copy")

        try:
            return model_dir(args.model)
        except ValueError as exc:
            p.error(str(exc))
    if args.run is None:
        p.error("give --run RUN_DIR (a trained run) or --model NAME (a shipped model: --list-models)")
    return args.run


def print_models() -> int:
    """``--list-models``: each shipped model in one line."""
    from cellseg.infer.pretrained import ZOO, available

    models = available()
    for model in models.values():
        print(model.line())
    if not models:
        print(f"no shipped models in {ZOO}")
    return 0


def add_inference_options(p: argparse.ArgumentParser) -> None:
    """The whole-image prediction options of evaluate.py and predict.py; defaults from InferenceOptions."""
    from cellseg.core.config import InferenceOptions  # light: no TensorFlow

    d = InferenceOptions()
    p.add_argument("--tile", type=int, default=d.tile, help=f"tile size in pixels (default {d.tile})")
    p.add_argument(
        "--overlap",
        type=int,
        default=d.overlap,
        help=f"overlap between tiles in pixels (default {d.overlap})",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=d.batch_size,
        help=f"tiles per prediction batch (default {d.batch_size})",
    )
    p.add_argument(
        "--tta", action="store_true", help="average over flips (test-time augmentation, 4x slower)"
    )
    p.add_argument(
        "--recalibrate",
        action="store_true",
        help="choose the post-processing on the run's validation images again, with these options (other "
        "options keep the recorded choice; a run without one is calibrated first; never a shipped model)",
    )


def inference_options(args: argparse.Namespace) -> Any:
    """The :class:`~cellseg.core.config.InferenceOptions` of :func:`add_inference_options`'s flags."""
    from cellseg.core.config import InferenceOptions

    return InferenceOptions(args.tile, args.overlap, args.batch_size, args.tta)

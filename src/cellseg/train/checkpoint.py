"""Resuming a run: the checkpoint its last complete epoch left, checked before any data is read."""

from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

from cellseg.core import files, runs
from cellseg.core.runs import TrainingError


@dataclass
class Checkpoint:
    """What the last complete epoch of a run left in ``checkpoint/``."""

    epoch: int
    best_val_loss: float
    wall_seconds: float  # training time up to that epoch, over every process that trained the run
    session_starts: list[int]  # the first epoch of each process (it traces the graph: a slow epoch)


def read_checkpoint(run_dir: Path, epochs: int) -> Checkpoint | None:
    """The checkpoint a resumed run continues from; None if it was stopped before epoch 1 ended.

    Checked before any data is read: a damaged or missing file (a truncated ``last.keras`` included)
    fails naming the file and the way out, and ``epochs`` (the new ``train.epochs``) may not undercut the
    epochs already run.
    """
    path = runs.Run(run_dir).state_file
    restart = f"delete {path.parent} to restart this run from epoch 1, or start a new run"
    if not path.is_file():
        return None
    try:
        state = files.read_json(path, "checkpoint state")
        checkpoint = Checkpoint(
            int(state["epoch"]),
            math.inf if state["best_val_loss"] is None else float(state["best_val_loss"]),
            float(state.get("wall_seconds", 0.0)),
            [int(e) for e in state.get("session_starts", [1])],
        )
    except ValueError as exc:
        raise TrainingError(f"{exc}; {restart}") from exc
    except (KeyError, TypeError) as exc:
        raise TrainingError(f"{path}: the checkpoint state is damaged (no valid {exc}); {restart}") from exc
    last = runs.Run(run_dir).last_model
    if not last.is_file():
        raise TrainingError(f"{last} is missing; {restart}")
    if not _intact_zip(last):
        raise TrainingError(f"{last}: the checkpoint is damaged (truncated, or not a .keras file); {restart}")
    if epochs < checkpoint.epoch:
        raise TrainingError(
            f"train.epochs={epochs} is below the {checkpoint.epoch} epochs {run_dir} has already run; "
            f"give --set train.epochs={checkpoint.epoch} or more"
        )
    return checkpoint


def _intact_zip(path: Path) -> bool:
    """A ``.keras`` file is a zip archive: every member present and matching its CRC (reads it once)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (zipfile.BadZipFile, OSError, EOFError):
        return False

"""The run folder: where a training run keeps everything it produces, and how it is read back.

:class:`Run` is the one owner of a run folder's files and what they mean; the module-level names below
are its file names, and the helpers write any file atomically.
"""

from __future__ import annotations

import contextlib
import csv
import difflib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cellseg.core.files import csv_rows, read_json, write_csv, write_json, write_text
from cellseg.core.records import Calibration, Card, Metrics, Summary

if TYPE_CHECKING:
    from cellseg.core.config import Config

CONFIG = "config.yaml"
HISTORY = "history.csv"
SUMMARY = "summary.json"
SPLIT = "split.json"
KEPT_MODEL = "model.keras"  # the epoch train.keep_model picks: lowest val_loss, or the last
LAST_MODEL = "checkpoint/last.keras"
FINE_TUNED = "fine_tuned.keras"  # a fine-tuned run's own model, kept aside when its start beat it
STATE = "checkpoint/state.json"
LOSS_PLOT = "loss_curve.png"
DIAGNOSTICS = "diagnostics.csv"  # optional per-layer training diagnostics (train.diagnostics)
SNAPSHOTS = "snapshots"  # snapshots/epoch_NNN.keras every train.snapshot_every epochs (time-to-quality)
POSTPROCESS = "postprocess.json"  # post-processing chosen on the validation images (evaluate.py)
TENSORBOARD = "tensorboard"  # TensorBoard logs (train.tensorboard)
FAILED = "failed.json"  # why a sweep's run failed, with the traceback (removed when it succeeds)
LOCK = ".lock"  # held (an OS lock, released by any exit or kill) while a process trains in the run
VAL_EVALUATION = "evaluation_val"  # evaluate.py --split val's default output folder, laid out as:
EVALUATION = "evaluation"  # evaluate.py's default output folder, holding:
EVALUATION_METRICS = "metrics.json"  # the summary metrics
PER_IMAGE = "per_image.csv"  # one row of scores per image
OVERLAYS = "overlays"  # <id>.png: predicted outlines over the image (also written by predict.py)
CARD = "card.json"  # a shipped model's card (cellseg.package.shipping)

#: The Keras logs copied into history.csv each epoch.
METRIC_COLUMNS = ("loss", "val_loss", "iou", "val_iou", "dice", "val_dice")
#: Columns every history.csv starts with; learnable activation parameters follow as ``<layer>.<param>``.
HISTORY_COLUMNS = ("epoch", *METRIC_COLUMNS, "learning_rate", "seconds")


def create_run_dir(out: str | Path, label: str) -> Path:
    """A new, empty folder ``<out>/<timestamp>_<label>``; a suffix keeps earlier runs untouched."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{time.strftime('%Y%m%d-%H%M%S')}_{label}"
    for attempt in range(1000):
        path = out / (stem if attempt == 0 else f"{stem}-{attempt}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a new run folder under {out}")


class TrainingError(RuntimeError):
    """Training could not start or continue in a run folder; the message says why and what to do."""


class RunBusy(RuntimeError):
    """Another process is training in this run folder right now."""


#: Run folders this process holds the lock of, so nested users (a sweep, then train()) share it.
_held: dict[Path, int] = {}


@contextlib.contextmanager
def locked(run_dir: str | Path) -> Iterator[Path]:
    """Hold ``run_dir`` for this process while the block trains in it; raise :class:`RunBusy` if taken.

    An OS file lock (``flock``) on ``run_dir/.lock``: the kernel drops it when the holder exits or is
    killed, so a stale ``.lock`` file never blocks anyone. The holder's PID is written into it for the
    message. Re-entrant within a process. Where ``fcntl`` does not exist (Windows) nothing is locked.
    """
    run_dir = Path(run_dir).resolve()
    if run_dir in _held:
        yield run_dir
        return
    try:
        import fcntl
    except ImportError:  # Windows: no flock; the folder is not protected
        yield run_dir
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise RunBusy(
                f"{run_dir} is being trained by another process (PID {holder}); wait for it to end, "
                "or stop it, before training in this folder"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _held[run_dir] = fd
        try:
            yield run_dir
        finally:
            del _held[run_dir]
    finally:
        os.close(fd)  # releases the lock


def snapshot_path(run_dir: str | Path, epoch: int) -> Path:
    return Path(run_dir) / SNAPSHOTS / f"epoch_{epoch:03d}.keras"


def snapshots(run_dir: str | Path) -> dict[int, Path]:
    """The run's model snapshots by epoch, in epoch order."""
    found = sorted((Path(run_dir) / SNAPSHOTS).glob("epoch_[0-9]*.keras"))
    return {int(p.stem.split("_")[1]): p for p in found}


def read_history(run_dir: str | Path, name: str = HISTORY) -> list[dict[str, float]]:
    """history.csv (or another per-epoch CSV of the run) as rows of floats (epoch as int)."""
    path = Path(run_dir) / name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (is {run_dir} a cellseg run folder?)")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return [{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items()} for row in rows]


def read_metric(run_dir: str | Path, metric: str) -> tuple[list[int], list[float]]:
    """(epochs, values) of one logged column, from history.csv or else diagnostics.csv."""
    available: list[str] = []
    for name in (HISTORY, DIAGNOSTICS):
        if name == DIAGNOSTICS and not (Path(run_dir) / name).is_file():
            continue
        rows = read_history(run_dir, name)
        if rows and metric in rows[0]:
            return [int(r["epoch"]) for r in rows], [r[metric] for r in rows]
        available += [c for c in (rows[0] if rows else {}) if c != "epoch"]
    close = difflib.get_close_matches(metric, available, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; logged: {', '.join(available[:12])}, ..."
    raise KeyError(f"{run_dir}: no column '{metric}' in {HISTORY} or {DIAGNOSTICS}{hint}")


def truncate_history(run_dir: Path, epochs: int, name: str = HISTORY) -> None:
    """Drop rows past ``epochs`` (written before a kill, but never checkpointed)."""
    path = run_dir / name
    if path.is_file():
        write_csv(path, [r for r in csv_rows(path) if int(r["epoch"]) <= epochs])


def label_of_spec(spec: str | dict[str, Any]) -> str:
    """An activation spec as a short label: its name, with any options (``isru(alpha=0.5)``)."""
    if isinstance(spec, str):
        return spec
    options = ", ".join(f"{k}={v}" for k, v in spec.items() if k != "name")
    return f"{spec['name']}({options})" if options else spec["name"]


def run_label(run_dir: str | Path) -> str:
    """How a run is named in plots and tables: its activation, with any non-default options."""
    summary_path = Path(run_dir) / SUMMARY
    if summary_path.is_file():
        return label_of_spec(read_json(summary_path)["activation_spec"])
    import yaml

    return label_of_spec(yaml.safe_load((Path(run_dir) / CONFIG).read_text())["model"]["activation"])


def load_run_config(run_dir: str | Path) -> Config:
    """The resolved config a run was trained with; a missing or damaged one is named (ConfigError)."""
    import yaml

    from cellseg.core.config import ConfigError, config_from_dict

    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not a cellseg run folder (no {CONFIG})")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: the run's config is damaged (not valid YAML: {exc})") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the run's config is damaged (not a mapping of sections)")
    return config_from_dict(raw, source=str(path))


def _file(name: str) -> property:
    """A :class:`Run` attribute: the path of the file (or folder) ``name`` in the run folder."""
    return property(lambda run: run.path / name, doc=f"``{name}`` in the run folder")


class Run:
    """One run folder. Every module reads and writes a run through this class, so the meaning of each
    file (which epoch the kept model holds, whether the run finished, the calibrated post-processing, the
    last evaluation) is decided here once."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    @classmethod
    def create(cls, out: str | Path, label: str) -> Run:
        """A new, empty run folder ``<out>/<timestamp>_<label>``."""
        return cls(create_run_dir(out, label))

    # -------------------------------------------------------------------------------------- state

    kept_model = _file(KEPT_MODEL)
    fine_tuned_model = _file(FINE_TUNED)

    def require_finished(self) -> None:
        """Raise FileNotFoundError unless the run kept a model (the folder is a trained run)."""
        if not self.kept_model.is_file():
            raise FileNotFoundError(f"{self.path}: no {KEPT_MODEL} (is this a finished cellseg run folder?)")

    def status(self) -> str:
        """``finished`` (it wrote its summary), ``interrupted`` (it started: config or checkpoint on disk;
        resuming continues it, from epoch 1 if none had finished) or ``new``."""
        if (self.path / SUMMARY).is_file():
            return "finished"
        if (self.path / CONFIG).is_file() or (self.path / STATE).is_file():
            return "interrupted"
        return "new"

    # ------------------------------------------------------------------------------------ paths
    # Files that others write in their own way (Keras saves the models, callbacks append rows, a sweep
    # records a failure): Run names them, so no module joins a run folder's paths itself.

    history_file = _file(HISTORY)
    diagnostics_file = _file(DIAGNOSTICS)
    last_model = _file(LAST_MODEL)
    state_file = _file(STATE)
    split_file = _file(SPLIT)
    loss_plot = _file(LOSS_PLOT)
    tensorboard_dir = _file(TENSORBOARD)
    failed_file = _file(FAILED)

    def evaluation_dir(self, val: bool = False) -> Path:
        """``evaluate.py``'s default output: ``evaluation/`` (held-out images) or ``evaluation_val/``."""
        return self.path / (VAL_EVALUATION if val else EVALUATION)

    def snapshot(self, epoch: int) -> Path:
        return snapshot_path(self.path, epoch)

    # ------------------------------------------------------------------------------------ files

    @property
    def config(self) -> Config:
        return load_run_config(self.path)

    def save_config(self, config: Config) -> None:
        import yaml

        write_text(self.path / CONFIG, yaml.safe_dump(config.to_dict(), sort_keys=False))

    @property
    def split(self) -> dict[str, list[str]]:
        """``{"train": [...], "val": [...]}``: the image ids of each side."""
        return read_json(self.path / SPLIT, "train/validation split")

    def save_split(self, train: list[str], val: list[str]) -> None:
        write_json(self.path / SPLIT, {"train": train, "val": val})

    def history(self, name: str = HISTORY) -> list[dict[str, float]]:
        return read_history(self.path, name)

    @property
    def summary(self) -> Summary:
        path = self.path / SUMMARY
        return Summary.from_dict(read_json(path, Summary.WHAT), path)

    def save_summary(self, summary: Summary) -> None:
        summary.write(self.path / SUMMARY)

    @property
    def kept_epoch(self) -> int | None:
        return self.summary.kept_epoch

    def kept_row(self) -> dict[str, float]:
        """The history row of the epoch ``model.keras`` holds."""
        epoch = self.kept_epoch
        return next(r for r in self.history() if r["epoch"] == epoch)

    @property
    def postprocess(self) -> Calibration | None:
        """The post-processing calibrated on the validation images, or None before the first calibration."""
        return Calibration.read(self.path / POSTPROCESS)

    def save_postprocess(self, record: Calibration) -> None:
        record.write(self.path / POSTPROCESS)

    def evaluation_metrics(self, folder: str | Path | None = None) -> Metrics | None:
        """The metrics of the run's last evaluation (``evaluation/metrics.json`` or ``folder``'s), or None."""
        return read_metrics(Path(folder) if folder is not None else self.evaluation_dir())

    @property
    def card(self) -> Card | None:
        """A shipped model's card, or None for a run that was never shipped."""
        return Card.read(self.path / CARD)

    def save_card(self, card: Card) -> None:
        card.write(self.path / CARD)


def read_metrics(folder: str | Path) -> Metrics | None:
    """An evaluation folder's ``metrics.json``, or None where it has none."""
    return Metrics.read(Path(folder) / EVALUATION_METRICS)


def write_metrics(folder: str | Path, metrics: Metrics) -> None:
    metrics.write(Path(folder) / EVALUATION_METRICS)

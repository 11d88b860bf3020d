"""The run folder: where a training run keeps everything it produces, and how it is read back.

:class:`Run` is the one owner of a run folder's files and what they mean; the module-level names below
are its file names, and the helpers write any file atomically.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import difflib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cellseg.files import csv_rows, read_json, write_csv, write_json, write_text

if TYPE_CHECKING:
    from cellseg.config import Config

CONFIG = "config.yaml"
HISTORY = "history.csv"
SUMMARY = "summary.json"
SPLIT = "split.json"
KEPT_MODEL = "model.keras"  # the epoch train.keep_model picks: lowest val_loss, or the last
LAST_MODEL = "checkpoint/last.keras"
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


#: The version of ``summary.json``'s layout :class:`Summary` writes; files without one are version 0.
SUMMARY_SCHEMA = 1


@dataclasses.dataclass
class Summary:
    """``summary.json``: what a run trained on, how far it got and on what machine. Written once when
    training ends (:func:`cellseg.trainer.write_summary`); a fine-tuned run adds ``init_comparison``."""

    activation: str  # its label (cellseg.runs.label_of_spec)
    activation_spec: str | dict[str, Any]
    data_source: str
    epochs_run: int
    epochs_planned: int
    best_epoch: int | None  # lowest val_loss
    kept_epoch: int | None  # the epoch model.keras holds (train.keep_model)
    best_val_loss: float | None
    best_val_iou: float | None
    best_val_dice: float | None
    max_val_iou: float | None
    final: dict[str, float] | None  # the last epoch's history row
    stopped_reason: str  # "completed", or why training stopped early (divergence)
    params: int
    wall_seconds: float
    session_starts: list[int]  # first epoch of each process: its seconds include tracing
    seconds_to_first_step: float | None
    train_images: int
    val_images: int
    val_patches: int
    streamed: bool
    train_modalities: dict[str, int]
    skipped_samples: int
    skipped: list[dict[str, str]]
    seed: int
    machine: dict[str, Any]  # the precision and oneDNN kernels it trained with, and why
    versions: dict[str, str]
    train_inverted: int = 0  # training images data.polarity inverted (runs since 2026-12-02)
    init: dict[str, Any] | None = None  # the model a fine-tuned run started from
    init_comparison: dict[str, Any] | None = None  # a fine-tuned run against its start, on its images
    schema: int = SUMMARY_SCHEMA

    @property
    def completed(self) -> bool:
        return self.stopped_reason == "completed"

    @classmethod
    def from_dict(cls, data: dict[str, Any], path: str | Path = SUMMARY) -> Summary:
        """A summary read back; a file of a newer layout, or one missing what every run writes, raises
        ValueError naming the file and what is wrong."""
        schema = data.get("schema", 0)
        if schema > SUMMARY_SCHEMA:
            raise ValueError(
                f"{path}: run summary of layout {schema}, written by a newer cellseg (this one reads up to "
                f"{SUMMARY_SCHEMA}); upgrade cellseg"
            )
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        required = [n for n, f in fields.items() if f.default is dataclasses.MISSING]
        missing = [n for n in required if n not in data]
        if unknown or missing:
            raise ValueError(
                f"{path}: the run summary is damaged or not cellseg's"
                + (f"; missing {', '.join(missing)}" if missing else "")
                + (f"; unknown {', '.join(unknown)}" if unknown else "")
            )
        return cls(**{**data, "schema": SUMMARY_SCHEMA})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


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

    from cellseg.config import ConfigError, config_from_dict

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

    @property
    def kept_model(self) -> Path:
        return self.path / KEPT_MODEL

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
        return Summary.from_dict(read_json(path, "run summary"), path)

    def save_summary(self, summary: Summary) -> None:
        write_json(self.path / SUMMARY, summary.to_dict())

    @property
    def kept_epoch(self) -> int | None:
        return self.summary.kept_epoch

    def kept_row(self) -> dict[str, float]:
        """The history row of the epoch ``model.keras`` holds."""
        epoch = self.kept_epoch
        return next(r for r in self.history() if r["epoch"] == epoch)

    @property
    def postprocess(self) -> dict[str, Any] | None:
        """The post-processing calibrated on the validation images (``params``, ``val_dsb_score``,
        ``inference``, ``grid``), or None before the first calibration."""
        path = self.path / POSTPROCESS
        return read_json(path, "post-processing record") if path.is_file() else None

    def save_postprocess(self, record: dict[str, Any]) -> None:
        write_json(self.path / POSTPROCESS, record)

    def evaluation_metrics(self, folder: str | Path | None = None) -> dict[str, Any] | None:
        """The metrics of the run's last evaluation (``evaluation/metrics.json``), or None."""
        path = Path(folder) if folder is not None else self.path / EVALUATION
        return (
            read_json(path / EVALUATION_METRICS, "evaluation metrics")
            if (path / EVALUATION_METRICS).is_file()
            else None
        )

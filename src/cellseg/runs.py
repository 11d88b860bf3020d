"""The run folder: where a training run keeps everything it produces, and how it is read back."""

from __future__ import annotations

import csv
import difflib
import json
import math
import os
import time
from pathlib import Path
from typing import Any

CONFIG = "config.yaml"
HISTORY = "history.csv"
SUMMARY = "summary.json"
SPLIT = "split.json"
BEST_MODEL = "model.keras"
LAST_MODEL = "checkpoint/last.keras"
STATE = "checkpoint/state.json"
LOSS_PLOT = "loss_curve.png"
DIAGNOSTICS = "diagnostics.csv"  # optional per-layer training diagnostics (train.diagnostics)
POSTPROCESS = "postprocess.json"  # post-processing chosen on the validation images (evaluate.py)

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


def _json_safe(data: Any) -> Any:
    """NaN / inf (e.g. a mean over no matched nuclei) become null: JSON has no NaN."""
    if isinstance(data, dict):
        return {k: _json_safe(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_json_safe(v) for v in data]
    if isinstance(data, float) and not math.isfinite(data):
        return None
    return data


def write_json(path: Path, data: Any) -> None:
    """Write atomically (temp file + rename), so a kill never leaves half a file behind."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(_json_safe(data), indent=2, default=float) + "\n")
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


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


def append_row(path: Path, row: dict[str, Any]) -> None:
    """Append one row to a per-epoch CSV, writing the header first if the file is new."""
    new = not path.exists() or path.stat().st_size == 0
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


def truncate_history(run_dir: Path, epochs: int, name: str = HISTORY) -> None:
    """Drop rows past ``epochs`` (written before a kill, but never checkpointed)."""
    path = run_dir / name
    if not path.is_file():
        return
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    kept = [rows[0], *(r for r in rows[1:] if int(r[0]) <= epochs)] if rows else []
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(kept)


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

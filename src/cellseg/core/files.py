"""Files written so that a kill or a full disk never leaves half of one: every file cellseg writes
goes through :func:`atomic_path` (one file) or :func:`staged_outputs` (a folder of outputs)."""

from __future__ import annotations

import contextlib
import csv
import errno
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _json_safe(data: Any) -> Any:
    """NaN / inf (e.g. a mean over no matched nuclei) become null: JSON has no NaN."""
    if isinstance(data, dict):
        return {k: _json_safe(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_json_safe(v) for v in data]
    if isinstance(data, float) and not math.isfinite(data):
        return None
    return data


class WriteError(OSError):
    """A run file could not be written (disk full, no permission); nothing half-written was left."""


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary name beside ``path`` to write to; renamed over ``path`` only if the block succeeds.

    Whatever instant the process is killed, or whenever a write fails (a full disk), ``path`` holds
    either its old content or the complete new one, never half a file. The temporary name keeps the
    suffix, so writers that choose the format by extension (Keras, OpenCV, matplotlib) still work; on
    failure it is removed, and an OSError becomes a :class:`WriteError` naming ``path``.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and not isinstance(exc, WriteError):
            full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
            why = "no space left on the device" if full else (exc.strerror or str(exc))
            raise WriteError(f"could not write {path}: {why}; nothing was half-written") from exc
        raise


@contextlib.contextmanager
def staged_outputs(dest: str | Path) -> Iterator[Path]:
    """A fresh temporary folder beside ``dest`` to write outputs into, moved into ``dest`` on success.

    Each top-level entry written replaces the entry of that name in ``dest`` (a folder replaces the
    folder whole; JSON files move last, so a ``metrics.json`` is never newer than what it describes).
    Failure or a kill leaves ``dest`` as it was; old and new outputs are never mixed.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    try:
        yield stage
        dest.mkdir(exist_ok=True)
        for entry in sorted(stage.iterdir(), key=lambda e: (e.suffix == ".json", e.name)):
            target = dest / entry.name
            if target.is_dir() and not target.is_symlink():
                old = target.with_name(f".{target.name}.old-{os.getpid()}")
                os.replace(target, old)
                os.replace(entry, target)
                shutil.rmtree(old)
            else:
                os.replace(entry, target)
    except OSError as exc:
        if isinstance(exc, WriteError):
            raise
        raise WriteError(f"could not write the outputs in {dest}: {exc.strerror or exc}") from exc
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def remove_temporaries(folder: Path) -> list[Path]:
    """Delete what a kill in the middle of a write left in ``folder``: temp files and staging folders."""
    stale = [*folder.rglob(".*.tmp[0-9]*"), *folder.rglob(".*.partial-*")]
    for path in stale:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return stale


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: Path, data: Any) -> None:
    """Write atomically, so a kill never leaves half a file behind (NaN / inf become null)."""
    write_text(path, json.dumps(_json_safe(data), indent=2, default=float) + "\n")


def read_json(path: Path, what: str = "file") -> Any:
    """A JSON file of a run; a damaged one raises ValueError naming the file and ``what`` it is."""
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: the {what} is damaged (not valid JSON: {exc})") from exc


def write_csv(path: str | Path, rows: list[dict[str, Any]], columns: list[str] | None = None) -> None:
    """A whole CSV table, written atomically; the header is ``columns`` or the first row's keys."""
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns or (list(rows[0]) if rows else []))
        writer.writeheader()
        writer.writerows(rows)


def csv_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def append_row(path: Path, row: dict[str, Any]) -> None:
    """Add one row to a per-epoch CSV by rewriting it atomically: a kill never leaves half a row."""
    write_csv(path, [*csv_rows(path), row])

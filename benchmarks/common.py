"""Helpers shared by the benchmarks: timing, interleaved A/B repeats, the real-data location, a run's
held-out images of one source."""

from __future__ import annotations

import argparse
import csv
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

DSB2018 = Path(__file__).resolve().parents[2] / "shared" / "data" / "dsb2018"


def require_dsb2018() -> Path:
    if not DSB2018.is_dir():
        raise SystemExit(f"this benchmark needs the real DSB2018 sample at {DSB2018}")
    return DSB2018


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def timed_both(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process). On a shared VM wall time also counts time stolen
    by neighbours; CPU time does not, and shows directly how much work a change adds."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def interleaved(candidates: dict[str, Callable[[], object]], repeats: int) -> dict[str, tuple[float, float]]:
    """Run each candidate once per round (A B A B ...); median (wall, CPU) seconds of each."""
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, run in candidates.items():
            runs[name].append(timed_both(run))
    return {
        name: (statistics.median(w for w, _ in values), statistics.median(c for _, c in values))
        for name, values in runs.items()
    }


def machine(precision: str = "auto") -> str:
    """The machine line of :func:`cellseg.core.hardware.this_machine` (CPU, features, GPU, precision, oneDNN),
    with the Python and TensorFlow versions: every benchmark prints it with its figures."""
    import tensorflow as tf

    from cellseg.core.hardware import this_machine

    versions = f"Python {platform.python_version()}, TensorFlow {tf.__version__}"
    return f"{this_machine(precision).line()}; {versions}"


def source_samples(segment: Any, source: str) -> list[Any]:
    """A segmenter's run's validation images from one data source (with ``data.folds``, the fold it
    never trained on), as :class:`cellseg.data.sample.SampleRef` to load one at a time."""
    from cellseg.data.sample import source_of
    from cellseg.infer.calibration import run_samples

    ids = [i for i in segment.run.split["val"] if source_of(i) == source]
    if not ids:
        raise SystemExit(f"{segment.run.path}: no validation images from source '{source}'")
    return run_samples(segment.run.path, segment.config, ids)


def runs_on_source_parser(doc: str | None) -> argparse.ArgumentParser:
    """The arguments of a benchmark that predicts finished runs' validation images of one source."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=Path, nargs="+", required=True, help="finished run folders")
    p.add_argument("--source", required=True, help="the data source whose validation images are scored")
    p.add_argument("--csv", type=Path, help="write every image's row here")
    return p


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rows as CSV, with every column any row has."""
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for row in rows for k in row)))
        writer.writeheader()
        writer.writerows(rows)

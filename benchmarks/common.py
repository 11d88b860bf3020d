"""Helpers shared by the benchmarks: timing, interleaved A/B repeats, the real-data location."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

DSB2018 = Path(__file__).resolve().parents[2] / "shared" / "data" / "dsb2018"


def require_dsb2018() -> Path:
    if not DSB2018.is_dir():
        raise SystemExit(f"this benchmark needs the real DSB2018 sample at {DSB2018}")
    return DSB2018


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved(candidates: dict[str, Callable[[], float]], repeats: int) -> dict[str, float]:
    """Run each candidate once per round (A B A B ...), return the median of each one's figure."""
    figures: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, run in candidates.items():
            figures[name].append(run())
    return {name: statistics.median(values) for name, values in figures.items()}


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}"

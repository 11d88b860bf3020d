"""Sweep throughput: runs per hour with 1, 2, ... worker processes splitting this machine's cores.

    python benchmarks/bench_sweep.py [--workers 1 2] [--runs 4] [--epochs 3] [--steps 25]

The same small sweep (``--runs`` activations x 1 seed on the synthetic default data, the default U-Net,
each run trained and scored on its validation images) is run once per worker count, each in a fresh
sweep folder; wall time includes every process start, as a user's sweep pays it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import machine

ROOT = Path(__file__).resolve().parents[1]
ACTIVATIONS = ["relu", "mish", "selu", "gelu", "elu", "swish", "prelu", "isru"]


def sweep(workers: int, runs: int, epochs: int, steps: int, out: Path) -> float:
    grid = f"model.activation={','.join(ACTIVATIONS[:runs])}"
    cmd = [sys.executable, str(ROOT / "scripts/sweep.py"), "--grid", grid, "--seeds", "0",
           "--workers", str(workers), "--out", str(out),
           f"--set=train.epochs={epochs}", f"--set=train.steps_per_epoch={steps}"]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return time.perf_counter() - start


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    p.add_argument("--runs", type=int, default=4, help=f"runs per sweep (at most {len(ACTIVATIONS)})")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--steps", type=int, default=25, help="steps per epoch")
    args = p.parse_args()
    budget = f"{args.runs} runs of {args.epochs} x {args.steps} steps"
    print(f"{machine()}; {budget} (synthetic data, default U-Net)")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for workers in args.workers:
            wall = sweep(workers, args.runs, args.epochs, args.steps, Path(tmp) / f"w{workers}")
            results[workers] = args.runs / wall * 3600
            print(f"workers {workers}: {wall:.0f} s, {results[workers]:.1f} runs/hour", flush=True)
    base = results[args.workers[0]]
    print("\n| workers | runs/hour | ratio |\n|---|---|---|")
    for workers, rate in results.items():
        print(f"| {workers} | {rate:.1f} | {rate / base:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

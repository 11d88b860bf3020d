"""Evaluation wall time, peak memory and tiled-prediction throughput on the 58 real DSB2018 images.

    python benchmarks/bench_evaluate.py [--run RUN_DIR] [--epochs 8]

Without --run, a ReLU U-Net is first trained on stage1_train for a few epochs (post-processing time
depends on what the model predicts, so an untrained model would give meaningless figures). Then
``scripts/evaluate.py`` scores all 58 images (stage1_train + stage1_test, sizes 161x519 to 520x696) in a
fresh process, without and with test-time flips; each process reports its own peak memory.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import machine, require_dsb2018

ROOT = Path(__file__).resolve().parents[1]


def train_run(out: Path, epochs: int, data: Path) -> Path:
    cmd = [sys.executable, str(ROOT / "scripts/train.py"), "--config", str(ROOT / "configs/relu.yaml"),
           "--data", str(data / "stage1_train"), "--out", str(out), "--quiet",
           f"--set=train.epochs={epochs}"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return Path(proc.stdout.strip().splitlines()[-1])


def evaluate(run: Path, data: Path, out: Path, *extra: str) -> tuple[dict, float]:
    cmd = [sys.executable, str(ROOT / "scripts/evaluate.py"), "--run", str(run), "--out", str(out),
           "--data", str(data / "stage1_train"), str(data / "stage1_test"), *extra]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads((out / "metrics.json").read_text()), time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, help="a trained run folder (default: train one first)")
    p.add_argument("--epochs", type=int, default=8, help="epochs of the run trained when --run is not given")
    args = p.parse_args()
    data = require_dsb2018()
    print(machine())
    with tempfile.TemporaryDirectory() as tmp:
        run = args.run or train_run(Path(tmp) / "runs", args.epochs, data)
        print(f"run: {run}")
        print("| variant | images | megapixels | process wall s | evaluation s | predict s | post-process s "
              "| score + write s | prediction MP/s | peak memory MB | DSB score |")  # fmt: skip
        print("|---" * 11 + "|")
        variants = {"calibrate + evaluate": ["--recalibrate"], "evaluate": [], "evaluate, --tta": ["--tta"]}
        for name, extra in variants.items():
            m, wall = evaluate(run, data, Path(tmp) / name.replace(" ", "_"), *extra)
            t = m["seconds_by_stage"]
            print(
                f"| {name} | {m['images']} | {m['megapixels']:.1f} | {wall:.1f} | {m['seconds']:.1f} "
                f"| {t['predict']:.1f} | {t['postprocess']:.1f} | {t['score'] + t['write']:.1f} "
                f"| {m['prediction_megapixels_per_second']:.2f} | {m['peak_memory_mb']:.0f} "
                f"| {m['instance']['dsb_score']:.3f} |"
            )


if __name__ == "__main__":
    main()

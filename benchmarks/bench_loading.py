"""Opening the full DSB2018 training set: data preparation time and memory, and time to the first step.

    python benchmarks/bench_loading.py [--data ../shared/data/dsb2018/stage1_train_full]

Each case runs in a fresh process: reading and checking all 664 images and merging their 28,986 mask
PNGs (``prepare_split`` as training does) without the sample cache, with an empty cache (decode and fill
it) and with a warm one; then the real-scale recipe (``configs/dsb2018.yaml``) trained for one step, as a
command, giving the wall time from command start to the first finished training step.
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

PREPARE = """
import json, resource, sys, time
start = time.perf_counter()
from cellseg.core.config import load_config
from cellseg.data import collect_samples
from cellseg.data.pipeline import prepare_split
cfg = load_config(sys.argv[1], sys.argv[2:])
samples, source = collect_samples(cfg)
t = time.perf_counter()
data = prepare_split(samples, cfg.data, source, cfg.model.num_classes, cfg.data_seed)
print(json.dumps({"prepare_s": time.perf_counter() - t, "images": len(data.train_ids) + len(data.val_ids),
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def prepare(recipe: Path, data: Path, cache: Path, *extra: str) -> dict:
    cmd = [sys.executable, "-c", PREPARE, str(recipe), f"data.path={data}", f"data.cache_dir={cache}", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def first_step(recipe: Path, data: Path, cache: Path, out: Path) -> tuple[float, float]:
    """(command wall seconds to the end of a one-step run, seconds_to_first_step in its summary)."""
    cmd = [sys.executable, str(ROOT / "scripts/train.py"), "--config", str(recipe), "--out", str(out),
           "--quiet", "--data", str(data), f"--set=data.cache_dir={cache}", "--set=train.epochs=1",
           "--set=train.steps_per_epoch=1", "--set=train.snapshot_every=0"]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    summary = json.loads((Path(proc.stdout.strip().splitlines()[-1]) / "summary.json").read_text())
    return wall, summary["seconds_to_first_step"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=require_dsb2018() / "stage1_train_full")
    p.add_argument("--recipe", type=Path, default=ROOT / "configs/dsb2018.yaml")
    args = p.parse_args()
    print(f"{machine()}; {args.data}")
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        rows = [
            ("no cache (data.cache: false)", prepare(args.recipe, args.data, cache, "data.cache=false")),
            ("empty cache (decode, fill it)", prepare(args.recipe, args.data, cache)),
            ("warm cache", prepare(args.recipe, args.data, cache)),
        ]
        size = sum(f.stat().st_size for f in cache.rglob("*.npz")) / 2**20
        print("\n| data preparation | images | seconds | peak memory (MB) |\n|---|---|---|---|")
        for name, r in rows:
            print(f"| {name} | {r['images']} | {r['prepare_s']:.1f} | {r['peak_mb']:.0f} |")
        speedup = rows[0][1]["prepare_s"] / rows[2][1]["prepare_s"]
        print(f"\ncache: {size:.0f} MB; no cache / warm cache = {speedup:.1f}x")
        wall, to_step = first_step(args.recipe, args.data, cache, Path(tmp) / "runs")
        print(f"{args.recipe.name}, warm cache: first training step {to_step:.1f} s after train() starts; "
              f"a one-step run takes {wall:.1f} s as a command")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

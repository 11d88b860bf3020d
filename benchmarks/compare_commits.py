"""Does a change of code change behaviour? Train the same seeded run with two commits and compare outputs.

Each side runs the project's own scripts from its own source tree (a ``git worktree`` of the commit, put
first on ``PYTHONPATH``) in fresh processes, with the same config, seed and data: ``train.py`` (the quick
start's ISRU config, small), ``evaluate.py`` and ``predict.py`` on the same synthetic annotated images, and
``export.py``. It then compares ``history.csv`` (every column but timings), ``metrics.json`` and
``per_image.csv`` (every figure both sides have; figures only one side has are listed), the predicted
label images pixel by pixel, the per-nucleus tables, and the export package's test input and output
tensors. Exit status 0 when nothing differs.

    python benchmarks/compare_commits.py --base dd756e3            # against the working tree
    python benchmarks/compare_commits.py --base dd756e3 --head 572f466
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from common import machine

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from conftest import TINY, write_paired

#: A run of a few seconds: the test suite's tiny settings, traced as users' runs are, a fixed seed and
#: the base's precision (later commits choose it by the CPU, issue 22), with the quick start's ISRU config.
SETS = [*(s for s in TINY if not s.startswith("train.run_eagerly")), "train.epochs=3", "seed=3",
        "train.precision=float32"]  # fmt: skip
TIMINGS = {
    "seconds",
    "wall_seconds",
    "seconds_by_stage",
    "prediction_megapixels_per_second",
    "peak_memory_mb",
}


def worktree(commit: str, where: Path) -> Path:
    subprocess.run(["git", "worktree", "add", "--detach", str(where), commit], cwd=ROOT, check=True,
                   capture_output=True)  # fmt: skip
    return where


def run(tree: Path, script: str, *args: str, ok: tuple[int, ...] = (0,)) -> str:
    env = {**os.environ, "PYTHONPATH": str(tree / "src"), "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, str(tree / "scripts" / script), *args], cwd=tree, env=env,
                          capture_output=True, text=True)  # fmt: skip
    if proc.returncode not in ok:
        raise SystemExit(f"{tree.name}: {script} failed\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout


def outputs(tree: Path, out: Path, data: Path) -> Path:
    """Train, evaluate, predict and export with ``tree``'s code; the run folder."""
    sets = [f"--set={s}" for s in SETS]
    stdout = run(
        tree, "train.py", "--config", "configs/isru.yaml", "--out", str(out / "runs"), "--quiet", *sets
    )
    run_dir = Path(stdout.strip().splitlines()[-1])
    run(tree, "evaluate.py", "--run", str(run_dir), "--data", str(data), "--out", str(out / "evaluation"))
    run(tree, "predict.py", "--run", str(run_dir), str(data / "images"), "--out", str(out / "segmented"))
    # exit status 1: the package was written but bioimage.io's check failed; its verdict is compared
    report = run(tree, "export.py", "--run", str(run_dir), "--out", str(out / "package"), ok=(0, 1))
    (out / "export.txt").write_text(report.splitlines()[0] + "\n")
    return run_dir


def numbers(a: object, b: object, where: str, diffs: list[str], only: list[str]) -> None:
    """Record every difference between two JSON-like values (timings excepted)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key in TIMINGS:
                continue
            if key not in a or key not in b:
                only.append(f"{where}.{key} ({'head' if key in b else 'base'} only)")
            else:
                numbers(a[key], b[key], f"{where}.{key}", diffs, only)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            numbers(x, y, f"{where}[{i}]", diffs, only)
    elif isinstance(a, list) and isinstance(b, list):
        diffs.append(f"{where}: {len(a)} rows -> {len(b)} rows")
    elif a != b and not (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)):
        diffs.append(f"{where}: {a!r} -> {b!r}")


def table(path: Path, drop: set[str] = frozenset()) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return [{k: v for k, v in row.items() if k not in drop} for row in csv.DictReader(f)]


def images(folder: Path) -> dict[str, np.ndarray]:
    import cv2

    return {p.name: cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in sorted(folder.glob("*.png"))}


def compare(base: Path, head: Path, base_run: Path, head_run: Path) -> tuple[list[str], list[str]]:
    diffs: list[str] = []
    only: list[str] = []
    numbers(table(base_run / "history.csv", {"seconds"}), table(head_run / "history.csv", {"seconds"}),
            "history.csv", diffs, only)  # fmt: skip
    for name in ("metrics.json",):
        a, b = (json.loads((side / "evaluation" / name).read_text()) for side in (base, head))
        for key in ("run",):  # paths differ by construction
            a.pop(key, None), b.pop(key, None)
        numbers(a, b, name, diffs, only)
    per_image = [table(side / "evaluation/per_image.csv") for side in (base, head)]
    numbers(*per_image, "per_image.csv", diffs, only)
    drop = {"seconds", "path"}
    numbers(table(base / "segmented/summary.csv", drop), table(head / "segmented/summary.csv", drop),
            "summary.csv", diffs, only)  # fmt: skip
    for sub in ("nuclei",):
        for f in sorted((base / "segmented" / sub).glob("*.csv")):
            numbers(table(f), table(head / "segmented" / sub / f.name), f"{sub}/{f.name}", diffs, only)
    for sub in ("segmented/labels", "segmented/overlays", "evaluation/overlays"):
        a, b = images(base / sub), images(head / sub)
        if a.keys() != b.keys():
            diffs.append(f"{sub}: files {sorted(a)} -> {sorted(b)}")
        diffs += [f"{sub}/{k}: pixels differ" for k in a if k in b and not np.array_equal(a[k], b[k])]
    verdicts = [(side / "export.txt").read_text().strip() for side in (base, head)]
    if verdicts[0] != verdicts[1]:
        diffs.append(f"export: {verdicts[0]!r} -> {verdicts[1]!r}")
    for side_a, side_b in [(base / "package", head / "package")]:
        for f in sorted(side_a.glob("*.npy")):
            if not np.array_equal(np.load(f), np.load(side_b / f.name)):
                diffs.append(f"package/{f.name}: values differ")
    return diffs, only


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True, help="the commit before the change")
    p.add_argument("--head", help="the commit after it (default: the working tree)")
    p.add_argument("--keep", type=Path, help="keep the outputs here (default: a temporary folder)")
    args = p.parse_args()
    print(machine())
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        data = write_paired(work / "data", seed=11, count=3, size=80)
        trees = [worktree(args.base, work / "tree-base")]
        trees.append(worktree(args.head, work / "tree-head") if args.head else ROOT)
        try:
            base_run = outputs(trees[0], work / "base", data)
            head_run = outputs(trees[1], work / "head", data)
            diffs, only = compare(work / "base", work / "head", base_run, head_run)
        finally:
            for t in trees:
                if t != ROOT:
                    subprocess.run(["git", "worktree", "remove", "--force", str(t)], cwd=ROOT, check=False)
    print(f"base {args.base}, head {args.head or 'working tree'}: {len(diffs)} differences")
    for line in diffs:
        print(f"  differs: {line}")
    for line in only:
        print(f"  new or removed: {line}")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())

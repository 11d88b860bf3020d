"""Label efficiency: how many annotated images does adapting a shipped model need?

For each k and fold, k images drawn from DATA (the fold seeds the draw) train a run, and every other image
of DATA scores it, so each score is on images the run never saw. Arms, on the same images:

- ``zero-shot``: the shipped model as it is;
- ``fine-tuned``: ``configs/finetune.yaml --init MODEL`` on the k images;
- ``scratch`` (with ``--scratch``): the same config, architecture and budget from random weights.

Each run is a fresh ``train.py`` / ``evaluate.py`` process, as a user runs them (their folders go under
``WORK``). Rows go to ``OUT/results.csv`` as they finish, so a killed study resumes where it stopped; the
table gives mean AJI and DSB score over folds with 95 % t-intervals, and ``--plot`` draws them against k.

    python benchmarks/bench_label_efficiency.py --data ../shared/data/monuseg --init dsb2018 --k 5 --folds 3
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from common import machine

from cellseg.core import files, runs
from cellseg.infer import pretrained
from cellseg.sweep.stats import paired
from cellseg.train.finetune import CONTRACT, start_folder

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ("arm", "k", "fold", "aji", "dsb_score", "ap_50", "held_out", "train_seconds", "kept", "run")


def draw(n: int, k: int, fold: int) -> np.ndarray:
    """The images of draw ``fold`` in order, its first k for training: a permutation seeded by the next
    seed whose k images no earlier draw trained on (seeds 0, 1, 2 gave one k = 2 set twice)."""
    seen: set[frozenset[int]] = set()
    seed = 0
    for _ in range(fold + 1):
        while True:
            order = np.random.default_rng(seed).permutation(n)
            seed += 1
            if frozenset(order[:k].tolist()) not in seen:
                seen.add(frozenset(order[:k].tolist()))
                break
    return order


def folds(data: Path, k: int, fold: int, out: Path) -> tuple[Path, Path]:
    """Folders of symbolic links: the k training images of draw ``fold`` (:func:`draw`), the rest held out."""
    ids = sorted(p.name for p in data.iterdir() if p.is_dir())
    if not 1 <= k < len(ids):
        raise SystemExit(f"k = {k} must leave held-out images among the {len(ids)} of {data}")
    order = draw(len(ids), k, fold)
    where = out / "data" / f"k{k}_f{fold}"
    for name, chosen in (("train", order[:k]), ("held_out", order[k:])):
        (where / name).mkdir(parents=True, exist_ok=True)
        for i in chosen:
            link = where / name / ids[i]
            if not link.exists():
                link.symlink_to((data / ids[i]).resolve())
    return where / "train", where / "held_out"


def script(name: str, *args: str) -> str:
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / name), *args], capture_output=True,
                          text=True, cwd=ROOT)  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"{name} {' '.join(args)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout


def scores(metrics_dir: Path) -> dict[str, float]:
    m = runs.read_metrics(metrics_dir)
    if m is None:
        raise SystemExit(f"{metrics_dir}: no {runs.EVALUATION_METRICS}")
    found = {key: m.instance[key] for key in ("aji", "dsb_score", "ap_50")}
    return {**found, "held_out": m.images}


def contract_sets(init: str) -> list[str]:
    """``--set`` overrides giving a scratch run the starting model's architecture and preprocessing."""
    cfg = runs.Run(start_folder(init)).config
    sets = []
    for key in CONTRACT:
        section, name = key.split(".")
        sets += ["--set", f"{key}={json.dumps(getattr(getattr(cfg, section), name))}"]
    return sets


def run_arm(arm: str, args: argparse.Namespace, k: int, fold: int) -> dict[str, object]:
    out = args.work
    train, held = folds(args.data, k, fold, out)
    tag = f"{arm}_k{k}_f{fold}"
    if arm == "zero-shot":
        if args.init not in pretrained.available():
            raise SystemExit("the zero-shot arm scores a shipped model: give --init NAME")
        script("evaluate.py", "--model", args.init, "--data", str(held), "--out", str(out / "eval" / tag))
        return {"arm": arm, "k": k, "fold": fold, **scores(out / "eval" / tag), "run": args.init}
    config = ["--config", str(ROOT / "configs/finetune.yaml"), "--data", str(train), "--quiet"]
    config += (
        ["--init", args.init]
        if arm == "fine-tuned"
        else ["--set", "train.init=null", *contract_sets(args.init)]
    )
    config += [x for s in args.set for x in ("--set", s)]
    run_dir = Path(script("train.py", *config, "--out", str(out / "runs" / tag)).strip().splitlines()[-1])
    script("evaluate.py", "--run", str(run_dir), "--data", str(held), "--out", str(out / "eval" / tag))
    summary = runs.Run(run_dir).summary
    where = run_dir.relative_to(ROOT) if run_dir.is_relative_to(ROOT) else run_dir
    return {"arm": arm, "k": k, "fold": fold, **scores(out / "eval" / tag), "run": str(where),
            "train_seconds": summary.wall_seconds,
            "kept": (summary.init_comparison or {}).get("kept", "")}  # fmt: skip


def table(rows: list[dict[str, str]]) -> str:
    lines = [
        "| arm | k | folds | AJI (95 % interval) | DSB score (95 % interval) | training s |",
        "|---|---|---|---|---|---|",
    ]
    for arm in ("zero-shot", "fine-tuned", "scratch"):
        for k in sorted({int(r["k"]) for r in rows if r["arm"] == arm}):
            mine = [r for r in rows if r["arm"] == arm and int(r["k"]) == k]
            cells = []
            for key in ("aji", "dsb_score"):
                s = paired([float(r[key]) for r in mine])
                cells.append(
                    f"{s.diff:.3f} ({s.ci_low:.3f} to {s.ci_high:.3f})" if s.n > 1 else f"{s.diff:.3f}"
                )
            seconds = [float(r["train_seconds"]) for r in mine if r["train_seconds"]]
            cost = f"{np.mean(seconds):.0f}" if seconds else "-"
            lines.append(f"| {arm} | {k} | {len(mine)} | {cells[0]} | {cells[1]} | {cost} |")
    lines += ["", "Paired by fold (the same held-out images): difference in AJI, 95 % interval, p", ""]
    by = {(r["arm"], int(r["k"]), int(r["fold"])): float(r["aji"]) for r in rows}
    for arm, other in (("fine-tuned", "zero-shot"), ("fine-tuned", "scratch")):
        for k in sorted({key[1] for key in by if key[0] == arm}):
            diffs = [by[(arm, k, f)] - by[(other, k, f)] for (a, kk, f) in by if a == arm and kk == k
                     and (other, k, f) in by]  # fmt: skip
            d = paired(diffs)
            if d.n > 1:
                interval = f"{d.ci_low:+.3f} to {d.ci_high:+.3f}"
                lines.append(
                    f"- k = {k}, {arm} - {other}: {d.diff:+.3f} ({interval}), p {d.p:.2f}, {d.n} folds"
                )
    return "\n".join(lines)


def plot(rows: list[dict[str, str]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, key in zip(axes, ("aji", "dsb_score"), strict=True):
        for arm in ("zero-shot", "fine-tuned", "scratch"):
            ks = sorted({int(r["k"]) for r in rows if r["arm"] == arm})
            if not ks:
                continue
            stats = [
                paired([float(r[key]) for r in rows if r["arm"] == arm and int(r["k"]) == k]) for k in ks
            ]
            means = [s.diff for s in stats]
            errors = [0.0 if s.n < 2 else s.ci_high - s.diff for s in stats]
            ax.errorbar(ks, means, yerr=errors, marker="o", capsize=3, label=arm)
        ax.set_xlabel("annotated training images (k)")
        ax.set_ylabel(key.replace("_", " "))
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="annotated images (one folder per image)")
    p.add_argument("--init", default="dsb2018", help="the shipped model (or run folder) to start from")
    p.add_argument("--k", type=int, nargs="+", default=[5], help="training images per run")
    p.add_argument("--folds", type=int, default=3, help="draws of the k images (seeds 0, 1, ...)")
    p.add_argument("--scratch", action="store_true", help="also train from random weights at the same budget")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="overrides of finetune.yaml"
    )
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/label_efficiency", help="results")
    p.add_argument("--work", type=Path, default=ROOT / "runs/label_efficiency", help="runs and their scores")
    p.add_argument("--plot", action="store_true", help="draw OUT/label_efficiency.png")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = args.out / "results.csv"
    done = list(csv.DictReader(results.open())) if results.is_file() else []
    have = {(r["arm"], int(r["k"]), int(r["fold"])) for r in done}
    print(f"{machine()}; {args.data}, start {args.init}, overrides {args.set or 'none'}")
    arms = ["zero-shot", "fine-tuned", *(["scratch"] if args.scratch else [])]
    for k in args.k:
        for fold in range(args.folds):
            for arm in arms:
                if (arm, k, fold) in have:
                    continue
                row = {c: "" for c in COLUMNS} | run_arm(arm, args, k, fold)
                files.append_row(results, row)
                done.append({key: str(value) for key, value in row.items()})
                aji, dsb = float(row["aji"]), float(row["dsb_score"])
                print(f"{arm:<10} k={k} fold {fold}: AJI {aji:.3f}, DSB {dsb:.3f}", flush=True)
    print(table(done))
    if args.plot:
        plot(done, args.out / "label_efficiency.png")


if __name__ == "__main__":
    main()

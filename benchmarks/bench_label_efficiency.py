"""Label efficiency: how many annotated images does adapting a shipped model need?

For each k and fold, k images drawn from DATA (the fold seeds the draw) train a run, and every other image
of DATA scores it, so each score is on images the run never saw. Arms, on the same images:

- ``zero-shot``: the shipped model as it is;
- ``fine-tuned``: ``configs/finetune.yaml --init MODEL`` on the k images;
- ``scratch`` (with ``--scratch``): the same config, architecture and budget from random weights;
- ``reference`` (with ``--reference``): a run of a full recipe trained without the held-out images.

With ``--group`` the held-out images of fold f are a group-wise fold (e.g. MoNuSeg's tissue source sites,
as ``sweep.py --folds`` holds them out) and the k training images are drawn from the other folds, so a
sweep's fold runs of a full recipe score the same images as the fine-tuned runs (``--reference``).
A draw of k = 1 trains on one region of its image and validates on the other (two halves, as QuPath
region annotations), so even one image gives a validation sample.

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
Folds = tuple[int, str] | None  # (folds, regular expression of the group its images share), or draws
ARMS = ("zero-shot", "fine-tuned", "scratch", "reference")
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


def held_out_fold(ids: list[str], k: int, fold: int, group: Folds) -> tuple[list[int], list[int]]:
    """Draw ``fold`` as (training, held-out) indices of ``ids``: with ``group`` (folds, regular expression),
    the held-out images are fold ``fold`` of :func:`cellseg.data.pipeline.assign_folds` (as a sweep with
    ``data.folds`` deals them, seed 0) and k training images are drawn from the others; else :func:`draw`."""
    if group is None:
        order = draw(len(ids), k, fold)
        return order[:k].tolist(), order[k:].tolist()
    from cellseg.data.pipeline import assign_folds

    fold_of = assign_folds(ids, group[0], 0, group[1])
    rest = [i for i, f in enumerate(fold_of) if f != fold]
    if k > len(rest):
        raise SystemExit(f"k = {k} is more than the {len(rest)} images outside fold {fold}")
    return [rest[i] for i in draw(len(rest), k, fold)[:k]], [i for i, f in enumerate(fold_of) if f == fold]


def folds(data: Path, k: int, fold: int, out: Path, group: Folds = None) -> tuple[Path, Path]:
    """Folders of symbolic links: the k training images of draw ``fold`` (:func:`held_out_fold`), the
    held-out images. One image (k = 1) is annotated as a user would, as two regions (:func:`two_regions`)."""
    ids = sorted(p.name for p in data.iterdir() if p.is_dir())
    if not 1 <= k < len(ids):
        raise SystemExit(f"k = {k} must leave held-out images among the {len(ids)} of {data}")
    chosen_train, chosen_held = held_out_fold(ids, k, fold, group)
    where = out / "data" / (f"k{k}_f{fold}" if group is None else f"k{k}_group_f{fold}")
    for name, chosen in (("train", chosen_train), ("held_out", chosen_held)):
        (where / name).mkdir(parents=True, exist_ok=True)
        for i in chosen:
            link = where / name / ids[i]
            if k == 1 and name == "train":
                two_regions(data / ids[i], where / name)
            elif not link.exists():
                link.symlink_to((data / ids[i]).resolve())
    return where / "train", where / "held_out"


def two_regions(folder: Path, out: Path, gap: int = 8) -> None:
    """One DSB2018-layout image as QuPath exports it: ``<id>.png`` beside ``<id>.geojson`` holding its nuclei
    (detections) and two region annotations, its left and right halves ``gap`` px apart, so the image
    gives two samples: one trains and the other validates (a nucleus cut by a region's edge is cropped)."""
    from cellseg.data.readers import scan_dsb2018
    from cellseg.labels.outputs import nucleus_table, save_geojson

    (ref,) = [r for r in scan_dsb2018(folder.parent) if r.id == folder.name]
    sample = ref.load()
    image = out / f"{folder.name}.png"
    if not image.exists():
        image.symlink_to(next((folder / "images").iterdir()).resolve())
    geojson = out / f"{folder.name}.geojson"
    save_geojson(geojson, sample.labels, nucleus_table(sample.labels, sample.image))
    height, width = sample.labels.shape
    half = width // 2

    def box(x0: int, x1: int) -> dict[str, object]:
        ring = [[x0, 0], [x1, 0], [x1, height], [x0, height], [x0, 0]]
        return {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
                "properties": {"objectType": "annotation"}}  # fmt: skip

    collection = json.loads(geojson.read_text())
    collection["features"] += [box(0, half - gap // 2), box(half + gap // 2, width)]
    geojson.write_text(json.dumps(collection))


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
    group = (args.folds, args.group) if args.group else None
    train, held = folds(args.data, k, fold, out, group)
    tag = f"{arm}_k{k}_f{fold}"
    if arm == "reference":
        return reference_row(Path(args.reference[fold]), held, out / "eval" / tag, k, fold)
    if arm == "zero-shot":  # a run folder as its own validation images calibrated it
        model = ["--model", args.init] if args.init in pretrained.available() else ["--run", args.init]
        script("evaluate.py", *model, "--data", str(held), "--out", str(out / "eval" / tag))
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


def reference_row(run_dir: Path, held: Path, out: Path, k: int, fold: int) -> dict[str, object]:
    """A run trained without the held-out images (e.g. a sweep's fold run of the full recipe) scored on
    them: refused unless its validation split holds every one of them, so it never trained on them."""
    val = {i.split("/")[-1] for i in runs.Run(run_dir).split["val"]}
    unseen = sorted(p.name for p in held.iterdir())
    if not set(unseen) <= val:
        raise SystemExit(f"{run_dir} trained on some of the held-out images of fold {fold}: {unseen}")
    script("evaluate.py", "--run", str(run_dir), "--data", str(held), "--out", str(out))
    summary = runs.Run(run_dir).summary
    return {"arm": "reference", "k": k, "fold": fold, **scores(out), "run": str(run_dir),
            "train_seconds": summary.wall_seconds}  # fmt: skip


def table(rows: list[dict[str, str]]) -> str:
    lines = [
        "| arm | k | folds | AJI (95 % interval) | DSB score (95 % interval) | training s |",
        "|---|---|---|---|---|---|",
    ]
    for arm in ARMS:
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
    for arm, other in (("fine-tuned", "zero-shot"), ("fine-tuned", "scratch"), ("fine-tuned", "reference")):
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
        for arm in ARMS:
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
    p.add_argument("--only", type=int, nargs="+", metavar="F", help="run these draws of --folds only")
    p.add_argument("--scratch", action="store_true", help="also train from random weights at the same budget")
    p.add_argument(
        "--group",
        metavar="REGEX",
        help="hold out --folds folds of images grouped by this regular expression (e.g. 'TCGA-(..)-', the"
        " tissue source site), as a sweep's data.folds does with seed 0, instead of random draws",
    )
    p.add_argument(
        "--reference",
        nargs="+",
        metavar="RUN",
        help="with --group: per fold, a run trained without its images (a sweep's fold run), scored on them",
    )
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
    if args.reference and (not args.group or len(args.reference) != args.folds):
        raise SystemExit("--reference needs --group and one run per fold")
    arms = [
        "zero-shot",
        "fine-tuned",
        *(["scratch"] if args.scratch else []),
        *(["reference"] if args.reference else []),
    ]
    for k in args.k:
        for fold in args.only or range(args.folds):
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

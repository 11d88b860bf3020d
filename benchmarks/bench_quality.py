"""Time to quality: held-out DSB2018 scores of the real-scale recipes against minutes of training.

    python benchmarks/bench_quality.py [--recipes configs/dsb2018.yaml configs/dsb2018_long.yaml]
                                       [--runs RUN_DIR|- ...] [--out benchmarks/results/quality]

Each recipe is trained as a user would (``scripts/train.py`` in a fresh process, whose wall time is the
"training minutes" of the recipe), or taken from ``--runs`` when already trained. Every snapshot the
recipe keeps (``train.snapshot_every``) is then scored on the 38 held-out ``stage1_test`` images, its
post-processing calibrated on the run's own validation images as ``evaluate.py`` does; the last row of a
recipe is the model it keeps (``model.keras``, see ``train.keep_model``) scored by ``evaluate.py``
itself. With ``--runs``, training minutes are the run's own ``wall_seconds`` (from the start of
``train()``: without the 5 s of Python and TensorFlow start-up that a command adds). Prints one table
and each recipe's distance from its targets, and writes ``quality.csv`` and ``quality.png`` (scores
against training minutes).
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from common import machine, require_dsb2018

ROOT = Path(__file__).resolve().parents[1]

#: Targets of the real-scale issue: training minutes at most, scores at least (stage1_test).
TARGETS = {
    "dsb2018": {"minutes": 10, "dsb_score": 0.45, "ap_50": 0.70, "ap_75": 0.45, "pixel_iou": 0.82},
    "dsb2018_long": {"minutes": 60, "dsb_score": 0.50},
}
# stage1_test has 31 and 7 images of these (preprocessing.modality), no brightfield
MODALITIES = ("fluorescence", "stained")
COLUMNS = ("dsb_score", "ap_50", "ap_75", "aji", "pixel_iou", "dsb_fluorescence", "dsb_stained")


def figures(metrics: dict) -> dict[str, float]:
    """The table's columns from a ``metrics.json``-style summary (NaN for a modality with no image)."""
    by_modality = metrics["by_modality"]
    return {
        **{k: metrics["instance"][k] for k in ("dsb_score", "ap_50", "ap_75", "aji")},
        "pixel_iou": metrics["pixel"]["iou"],
        **{f"dsb_{m}": by_modality.get(m, {}).get("dsb_score", math.nan) for m in MODALITIES},
    }


def train(recipe: Path, out: Path) -> tuple[Path, float]:
    """Train ``recipe`` in a fresh process; its run folder and the process's wall seconds."""
    cmd = [
        sys.executable,
        str(ROOT / "scripts/train.py"),
        "--config",
        str(recipe),
        "--out",
        str(out),
        "--quiet",
    ]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"training {recipe} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return Path(proc.stdout.strip().splitlines()[-1]), wall


def scores(predictor, plan, test_samples) -> dict[str, float]:
    from cellseg.data.preprocessing import modality
    from cellseg.labels.metrics import score_image, summarize
    from cellseg.labels.postprocess import instances

    return figures(
        summarize(
            [
                score_image(
                    s.id,
                    s.labels,
                    instances(predictor(s.image, s.id), plan.params_for(s.image)),
                    modality(s.image, s.labels),
                )
                for s in test_samples
            ]
        )
    )


def snapshot_rows(run: Path, test_samples: list, minutes_at: dict[int, float]) -> list[dict]:
    """Score every snapshot of ``run``, each with post-processing calibrated on the validation images."""
    from cellseg.core import runs
    from cellseg.core.config import InferenceOptions
    from cellseg.infer.calibration import calibrate, validation_samples
    from cellseg.infer.predictor import load_predictor

    rows = []
    for epoch, path in runs.snapshots(run).items():
        predictor, cfg = load_predictor(run, InferenceOptions(), model_path=path)
        choice = calibrate(predictor, validation_samples(run, cfg), cfg.model.outputs)
        rows.append({"model": f"epoch {epoch}", "minutes": minutes_at[epoch], "val_dsb": choice.score,
                     **scores(predictor, choice.plan, test_samples)})  # fmt: skip
        print(
            f"  {run.name} epoch {epoch}: "
            + ", ".join(f"{k} {v:.3f}" for k, v in rows[-1].items() if k != "model")
        )
    return rows


def minutes_by_epoch(run: Path, process_wall: float | None) -> dict[int, float]:
    """Minutes from the command's start to the end of each epoch (start-up, data, training, validation)."""
    from cellseg.core import files, runs

    summary = files.read_json(run / runs.SUMMARY)
    history = runs.read_history(run)
    start = summary["seconds_to_first_step"] or 0.0
    ends = start + np.cumsum([row["seconds"] for row in history])
    scale = 1.0 if process_wall is None else process_wall / max(summary["wall_seconds"], 1e-9)
    return {int(row["epoch"]): float(end * scale / 60) for row, end in zip(history, ends, strict=True)}


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4), constrained_layout=True)
    for ax, metric in zip(axes, ("dsb_score", "ap_50", "pixel_iou"), strict=True):
        for recipe in dict.fromkeys(r["recipe"] for r in rows):
            points = [r for r in rows if r["recipe"] == recipe and r["model"].startswith("epoch")]
            ax.plot([r["minutes"] for r in points], [r[metric] for r in points], "o-", label=recipe)
            target = TARGETS.get(recipe, {}).get(metric)
            if target is not None:
                ax.axhline(target, ls="--", lw=0.8, color=ax.lines[-1].get_color())
        ax.set(xlabel="training minutes (2 CPU cores)", ylabel=metric, title=f"stage1_test {metric}")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.savefig(path, dpi=120)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--recipes",
        nargs="+",
        type=Path,
        default=[ROOT / "configs/dsb2018.yaml", ROOT / "configs/dsb2018_long.yaml"],
    )
    p.add_argument(
        "--runs",
        nargs="+",
        help="finished runs of the recipes, in the same order (skip training); - trains that recipe",
    )
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/quality")
    args = p.parse_args()  # fmt: skip
    data = require_dsb2018()
    args.out.mkdir(parents=True, exist_ok=True)

    from cellseg.core import files, runs
    from cellseg.data.readers import scan_samples
    from cellseg.evaluate.evaluation import evaluate_run

    test = data / "stage1_test"
    test_samples = []
    for ref in scan_samples(str(test)):
        sample = ref.load()
        sample.id = ref.id
        test_samples.append(sample)
    print(f"{machine()}; held-out: {len(test_samples)} images of {test}")
    rows: list[dict] = []
    given = [None if r == "-" else Path(r) for r in args.runs] if args.runs else [None] * len(args.recipes)
    for recipe, run in zip(args.recipes, given, strict=True):
        name = recipe.stem
        wall = None
        if run is None:
            print(f"training {recipe} ...", flush=True)
            run, wall = train(recipe, args.out / "runs")
            print(f"  {run}: {wall / 60:.1f} min as a process")
        minutes_at = minutes_by_epoch(run, wall)
        recipe_rows = snapshot_rows(run, test_samples, minutes_at)
        _, metrics = evaluate_run(run, str(test), out=args.out / "evaluation" / name)
        summary = files.read_json(run / runs.SUMMARY)
        final = {
            "model": f"kept (epoch {runs.kept_epoch(summary)}, evaluate.py)",
            "minutes": (wall if wall is not None else summary["wall_seconds"]) / 60,
            "val_dsb": files.read_json(run / runs.POSTPROCESS)["val_dsb_score"],
            **figures(metrics.to_dict()),
        }
        rows += [{"recipe": name, "run": str(run), **r} for r in [*recipe_rows, final]]

    files.write_csv(args.out / "quality.csv", rows)
    plot(rows, args.out / "quality.png")
    print("\n| recipe | model | training min | val DSB | test DSB | AP50 | AP75 | AJI | pixel IoU "
          "| DSB fluorescence | DSB stained |")  # fmt: skip
    print("|---" * 11 + "|")
    for r in rows:
        print(f"| {r['recipe']} | {r['model']} | {r['minutes']:.1f} | {r['val_dsb']:.3f} | "
              + " | ".join(f"{r[c]:.3f}" for c in COLUMNS) + " |")  # fmt: skip
    print()
    for name, target in TARGETS.items():
        final = [r for r in rows if r["recipe"] == name and r["model"].startswith("kept")]
        if not final:
            continue
        gaps = [f"minutes {final[0]['minutes']:.1f} (target <= {target['minutes']})"]
        gaps += [
            f"{k} {final[0][k]:.3f} ({final[0][k] - v:+.3f} vs target {v})"
            for k, v in target.items()
            if k != "minutes"
        ]
        met = final[0]["minutes"] <= target["minutes"] and all(
            final[0][k] >= v for k, v in target.items() if k != "minutes"
        )
        print(f"{name}: {'MEETS' if met else 'misses'} its targets: " + "; ".join(gaps))  # fmt: skip
    print(f"\n{args.out / 'quality.csv'}\n{args.out / 'quality.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

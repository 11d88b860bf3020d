"""Training throughput against the machine: achieved GFLOP/s, the real pipeline against a plain Keras
baseline, the options for bigger machines, and start-up time.

    python benchmarks/bench_training.py [--steps 10] [--repeats 5] [--skip-startup]
    python benchmarks/bench_training.py --kernels [--steps 10] [--repeats 2]

1. Utilisation: the default U-Net (ReLU) trained through cellseg's real pipeline (training patches cut and
   flipped on the fly from the images in memory) against a plain ``model.fit`` of the same architecture
   with Keras's built-in ``ReLU`` layer on in-memory NumPy patches; both converted to GFLOP/s from the
   analytic FLOP count (training step = 3x forward). Target: pipeline >= 0.95 of the plain baseline.
2. Options, each where the hardware has it, against the default through the same pipeline:
   ``train.jit_compile: true`` (XLA), ``train.precision: mixed_bfloat16`` (CPU with AVX512-BF16 or AMX, or
   a GPU), ``mixed_float16`` (GPU) and ``train.distribute: mirrored`` (more than one GPU).
3. Start-up: ``train.py --help`` (must not import TensorFlow) and the time to the first training step of
   ``train.py`` with the default config, in fresh processes.

4. ``--kernels``: precision x oneDNN on this machine, for the DSB2018 recipe as a user runs it: fresh
   ``train.py --config configs/dsb2018.yaml`` processes (oneDNN is fixed when TensorFlow is imported), each
   2 epochs of ``--steps`` steps, timed by the second epoch in ``history.csv``. Rows: float32 and
   mixed_bfloat16 with oneDNN off and on, and the defaults (``precision: auto``, oneDNN as cellseg sets it);
   the ratio of the defaults to the fastest float32 row is the check of issue 22 (>= 0.95).

Candidates run interleaved (A B A B ...), median of the repeats, as wall-clock and process-CPU-time ratios.
Uses DSB2018 stage1_train when present, else the synthetic default data.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from cellseg.core.hardware import configure_process  # reads no TensorFlow

configure_process()  # as the commands do: before TensorFlow is imported

import keras
import numpy as np
import tensorflow as tf
from common import DSB2018, interleaved, machine

from cellseg.core.config import Config
from cellseg.core.hardware import ONEDNN_MARKER, ONEDNN_VAR, read_cpu
from cellseg.data import collect_samples
from cellseg.data.pipeline import prepare, split_samples, train_dataset
from cellseg.model.activations import Elementwise
from cellseg.model.optim import compile_model, make_strategy
from cellseg.model.unet import build_unet, conv_flops

ROOT = Path(__file__).resolve().parents[1]


def builtin_relu_copy(model: keras.Model) -> keras.Model:
    """The same architecture with Keras's own ReLU layer in place of the registry's."""

    def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
        if isinstance(layer, Elementwise):
            return keras.layers.ReLU(name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    return keras.models.clone_model(model, clone_function=clone)


def fit_runner(cfg: Config, data, steps: int, make_model=None):
    """A function training ``steps`` steps through the real pipeline (warmed up and traced already)."""
    keras.config.set_dtype_policy(cfg.train.precision)
    model = (make_model or (lambda: build_unet(cfg.model, cfg.data.channels)))()
    keras.config.set_dtype_policy("float32")
    compile_model(model, cfg.train)
    ds = train_dataset(data, cfg.data, cfg.train.batch_size, cfg.seed)
    model.fit(ds, steps_per_epoch=2, verbose=0)
    return lambda: model.fit(ds, steps_per_epoch=steps, verbose=0)


def recipe_epoch_seconds(data: Path, steps: int, env: dict[str, str], overrides: list[str]) -> dict:
    """Seconds of epoch 2 of the DSB2018 recipe in a fresh ``train.py`` process, with what it chose."""
    with tempfile.TemporaryDirectory() as tmp:
        args = ["--config", str(ROOT / "configs/dsb2018.yaml"), "--data", str(data), "--out", tmp, "--quiet"]
        sets = ["train.epochs=2", f"train.steps_per_epoch={steps}", "train.snapshot_every=0", *overrides]
        for item in sets:
            args += ["--set", item]
        proc = subprocess.run(
            [sys.executable, str(ROOT / "scripts/train.py"), *args], capture_output=True, text=True, env=env
        )
        if proc.returncode != 0:
            raise SystemExit(f"train.py failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        run = Path(proc.stdout.strip().splitlines()[-1])
        epoch2 = (run / "history.csv").read_text().strip().splitlines()[-1].split(",")
        header = (run / "history.csv").read_text().splitlines()[0].split(",")
        machine = json.loads((run / "summary.json").read_text())["machine"]
    losses = {k: float(epoch2[header.index(k)]) for k in ("loss", "val_loss")}
    return {"seconds": float(epoch2[header.index("seconds")]), "machine": machine, **losses}


def kernel_table(steps: int, repeats: int) -> None:
    """Precision x oneDNN for the DSB2018 recipe, and the defaults against the fastest float32 setting."""
    data = DSB2018 / "stage1_train" if DSB2018.is_dir() else None
    if data is None:
        raise SystemExit(f"--kernels trains the DSB2018 recipe and needs {DSB2018 / 'stage1_train'}")
    base = {k: v for k, v in os.environ.items() if k not in (ONEDNN_VAR, ONEDNN_MARKER)}
    rows = {"defaults (precision auto, oneDNN as cellseg sets it)": (base, [])}
    for precision in ("float32", "mixed_bfloat16"):
        for onednn in ("off", "on"):
            env = {**base, ONEDNN_VAR: "1" if onednn == "on" else "0"}
            rows[f"{precision}, oneDNN {onednn}"] = (env, [f"train.precision={precision}"])
    results: dict[str, list[dict]] = {name: [] for name in rows}
    for _ in range(repeats):
        for name, (env, overrides) in rows.items():
            results[name].append(recipe_epoch_seconds(data, steps, env, overrides))
    default = results[next(iter(rows))][0]["machine"]
    print(machine())
    print(
        f"configs/dsb2018.yaml on {data.name}, epoch 2 of {steps} steps (batch 8) in a fresh train.py "
        f"process, median of {repeats}, interleaved"
    )
    print("| setting | precision used | oneDNN | s / epoch | s / step | ratio to defaults |")
    print("|---|---|---|---|---|---|")
    medians = {name: statistics.median(r["seconds"] for r in runs) for name, runs in results.items()}
    first = next(iter(medians.values()))
    for name, runs in results.items():
        used = runs[0]["machine"]
        print(
            f"| {name} | {used['precision']} | {'on' if used['onednn'] else 'off'} | {medians[name]:.1f} | "
            f"{medians[name] / steps:.2f} | {first / medians[name]:.2f} |"
        )
    for name, runs in results.items():  # train.deterministic: repeats of one setting must agree exactly
        same = all((r["loss"], r["val_loss"]) == (runs[0]["loss"], runs[0]["val_loss"]) for r in runs)
        print(f"{name}: epoch-2 loss {runs[0]['loss']:.6f}, val_loss {runs[0]['val_loss']:.6f}; "
              f"repeats {'bit-identical' if same else 'DIFFER'}")  # fmt: skip
    off, on = results["float32, oneDNN off"][0], results["float32, oneDNN on"][0]
    gaps = ", ".join(f"{k} {abs(on[k] / off[k] - 1):.2e}" for k in ("loss", "val_loss"))
    print(f"oneDNN against Eigen kernels, same seed, float32, after 2 epochs: relative difference {gaps}")
    best = min(medians[n] for n in rows if n.startswith("float32"))
    print(
        f"defaults ({default['precision']}, oneDNN {'on' if default['onednn'] else 'off'}) against the "
        f"fastest float32 setting: speed ratio {best / first:.3f} (target >= 0.95)"
    )


def startup() -> None:
    train_py = [sys.executable, str(ROOT / "scripts/train.py")]
    helps = []
    for _ in range(5):
        start = time.perf_counter()
        subprocess.run([*train_py, "--help"], capture_output=True, check=True)
        helps.append(time.perf_counter() - start)
    help_s = statistics.median(helps)
    print(f"\nstart-up: `train.py --help` {help_s:.2f} s (median of 5; TensorFlow not imported)")
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        args = ["--out", tmp, "--quiet", "--set", "train.epochs=1", "--set", "train.steps_per_epoch=2"]
        proc = subprocess.run([*train_py, *args], capture_output=True, text=True, check=True)
        wall = time.perf_counter() - start
        summary = json.loads((Path(proc.stdout.strip().splitlines()[-1]) / "summary.json").read_text())
    print(
        f"          default config, first training step {summary['seconds_to_first_step']:.1f} s after "
        f"train() was called (data generation, model build, tracing); whole 1-epoch process {wall:.1f} s"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=10, help="training steps per timed run")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--skip-startup", action="store_true")
    p.add_argument("--kernels", action="store_true", help="only the precision x oneDNN table (section 4)")
    args = p.parse_args()
    if args.kernels:
        kernel_table(args.steps, args.repeats)
        return
    cfg = Config()
    if DSB2018.is_dir():
        cfg.data.path = str(DSB2018 / "stage1_train")
    samples, source = collect_samples(cfg)
    train, val = split_samples(samples, cfg.data.val_fraction, cfg.seed)
    data = prepare(train, val, cfg.data, source)
    batch, patch = cfg.train.batch_size, cfg.data.patch_size
    flops = 3 * conv_flops(build_unet(cfg.model, cfg.data.channels), patch, patch)  # per training patch

    # the plain baseline: the same patches cut once, as NumPy arrays, and Keras's ReLU
    x, y = [], []
    for images, masks in train_dataset(data, cfg.data, batch, cfg.seed).take(args.steps):
        x.append(images.numpy())
        y.append(masks.numpy())
    x, y = np.concatenate(x), np.concatenate(y)
    plain_model = builtin_relu_copy(build_unet(cfg.model, cfg.data.channels))
    compile_model(plain_model, cfg.train)
    plain_model.fit(x[: 2 * batch], y[: 2 * batch], batch_size=batch, verbose=0)

    candidates = {
        "plain model.fit, built-in ReLU, NumPy arrays": lambda: plain_model.fit(
            x, y, batch_size=batch, shuffle=False, verbose=0
        ),
        "cellseg pipeline, registry ReLU (default)": fit_runner(cfg, data, args.steps),
        "  + train.jit_compile: true (XLA)": fit_runner(
            replace(cfg, train=replace(cfg.train, jit_compile=True)), data, args.steps
        ),
    }
    gpus = tf.config.list_physical_devices("GPU")
    options = {
        "  + train.precision: mixed_bfloat16": ("precision", "mixed_bfloat16", read_cpu().bf16 or bool(gpus)),
        "  + train.precision: mixed_float16": ("precision", "mixed_float16", bool(gpus)),
        "  + train.distribute: mirrored": ("distribute", "mirrored", len(gpus) > 1),
    }
    for name, (key, value, available) in options.items():
        if not available:
            print(f"skipped (no hardware for it here): {name.strip()}")
            continue
        option_cfg = replace(cfg, train=replace(cfg.train, **{key: value}))
        with make_strategy(option_cfg.train).scope():
            candidates[name] = fit_runner(option_cfg, data, args.steps)
    print(f"{machine()}\ndata: {source}")
    print(
        f"default U-Net, {patch} px patches, batch {batch}, {args.steps} steps per run, median of "
        f"{args.repeats}; {flops / 1e9:.2f} GFLOP per training patch (3x forward)"
    )
    seconds = interleaved(candidates, args.repeats)
    base_wall, base_cpu = seconds["plain model.fit, built-in ReLU, NumPy arrays"]
    print("| run | patches/s | GFLOP/s | wall ratio to plain | CPU ratio to plain |")
    print("|---|---|---|---|---|")
    for name, (wall, cpu) in seconds.items():
        rate = args.steps * batch / wall
        ratios = f"{base_wall / wall:.3f} | {base_cpu / cpu:.3f}"
        print(f"| {name} | {rate:.1f} | {rate * flops / 1e9:.0f} | {ratios} |")
    if not args.skip_startup:
        startup()


if __name__ == "__main__":
    main()

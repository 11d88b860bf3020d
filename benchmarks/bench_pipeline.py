"""Data pipeline throughput on the real DSB2018 images, and training through it vs in-memory arrays.

    python benchmarks/bench_pipeline.py [--steps 20] [--repeats 3]

1. patches/s the training pipeline delivers alone (random patches + augmentation), for the default
   augmentation (flips / rotations) and for every albumentations effect switched on;
2. training patches/s of the default U-Net fed by that pipeline, as a ratio to ``model.fit`` on the same
   patches already held in memory as NumPy arrays, measured interleaved (A B A B ...), median of repeats.
Target (issue 3): the ratio is at least 0.95, i.e. the pipeline is not the bottleneck.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

from cellseg.core.hardware import configure_process  # reads no TensorFlow

configure_process()  # as the commands do: before TensorFlow is imported

import numpy as np
import tensorflow as tf
from common import interleaved, machine, require_dsb2018, timed

from cellseg.core.config import AugmentConfig, Config
from cellseg.data.pipeline import prepare, split_samples, train_dataset
from cellseg.data.readers import scan_samples
from cellseg.model.optim import compile_model
from cellseg.model.unet import build_unet

HEAVY = AugmentConfig(scale=0.2, elastic=0.3, brightness_contrast=0.2, blur=0.3, noise=0.3)


def pipeline_rate(ds: tf.data.Dataset, batches: int, batch: int) -> float:
    it = iter(ds)
    next(it)  # warm-up: tracing and the first prefetch
    return batches * batch / timed(lambda: [next(it) for _ in range(batches)])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=15, help="training steps per timed epoch")
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args()
    root = require_dsb2018() / "stage1_train"
    cfg = Config()
    batch = cfg.train.batch_size
    start = time.perf_counter()
    train, val = split_samples(scan_samples(str(root)), cfg.data.val_fraction, cfg.seed)
    in_memory = prepare(train, val, cfg.data, "dsb2018 stage1_train")
    streamed = prepare(train, val, replace(cfg.data, stream=True), "dsb2018 stage1_train")
    print(machine())
    print(
        f"data: {len(train)} training images from {root}, "
        f"read and checked in {time.perf_counter() - start:.1f} s"
    )
    variants = {
        "in memory, flips/rotations (default)": (in_memory, cfg.data),
        "in memory, all albumentations on": (in_memory, replace(cfg.data, augment=HEAVY)),
        "streamed from disk, flips/rotations": (streamed, cfg.data),
    }

    print(f"\n1. pipeline alone (patches of {cfg.data.patch_size} px, batch {batch})")
    for label, (data, data_cfg) in variants.items():
        rate = pipeline_rate(train_dataset(data, data_cfg, batch, seed=0), 100, batch)
        print(f"   {label:38s} {rate:8.0f} patches/s")

    print(
        f"\n2. training the default U-Net ({args.steps} steps of {batch}) fed by the pipeline "
        "vs model.fit on "
        f"the same patches as NumPy arrays; median of {args.repeats} interleaved runs"
    )
    model = build_unet(cfg.model, cfg.data.channels)
    compile_model(model, cfg.train)
    n = args.steps * batch
    for label, (data, data_cfg) in variants.items():
        ds = train_dataset(data, data_cfg, batch, seed=0)
        x, y = (np.concatenate(a) for a in zip(*ds.take(args.steps).as_numpy_iterator(), strict=True))
        model.fit(ds, steps_per_epoch=args.steps, epochs=1, verbose=0)  # compile and warm both paths
        model.fit(x, y, batch_size=batch, epochs=1, verbose=0, shuffle=False)
        seconds = interleaved(
            {
                "pipeline": lambda ds=ds: model.fit(ds, steps_per_epoch=args.steps, verbose=0),
                "arrays": lambda x=x, y=y: model.fit(
                    x, y, batch_size=batch, epochs=1, verbose=0, shuffle=False
                ),
            },
            args.repeats,
        )
        (pw, pc), (aw, ac) = seconds["pipeline"], seconds["arrays"]
        print(
            f"   {label:38s} wall: pipeline {n / pw:5.1f}, arrays {n / aw:5.1f} patches/s, "
            f"ratio {aw / pw:.3f};"
            f" CPU: {1000 * pc / n:5.1f} vs {1000 * ac / n:5.1f} ms/patch, ratio {ac / pc:.3f}"
        )
    print("   target (issue 3): ratio >= 0.95, i.e. the pipeline is not the bottleneck")


if __name__ == "__main__":
    main()

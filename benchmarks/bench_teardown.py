"""How long deleting the training pipeline's iterator takes, with tf.data's autotuning on and off.

    python benchmarks/bench_teardown.py [--seconds 150] [--trials 2]

Keras deletes the training iterator when ``fit`` returns. With autotuning on (tf.data's default),
deletion waits for the iterator's autotuning thread, whose optimisation period doubles up to a minute:
the DSB2018 recipe's ``fit`` returned 42-57 s after its last epoch in some runs and 5 s in others. This
builds cellseg's training pipeline (synthetic images, the recipe's augmentations), draws a batch every
0.1 s for ``--seconds`` (long enough for the period to reach its cap), then times the deletion; once as
cellseg builds it (autotuning off, fixed parallelism) and once with autotuning switched back on. The
wait, when it happens, lands anywhere in the current period, so a trial can show none.
"""

from __future__ import annotations

import argparse
import gc
import time

from cellseg.core.hardware import configure_process

configure_process()  # as the commands do: before TensorFlow is imported

import tensorflow as tf
from common import machine

from cellseg.core.config import AugmentConfig, DataConfig, SyntheticConfig
from cellseg.data.pipeline import prepare, train_dataset
from cellseg.data.synthetic import make_samples


def teardown_seconds(ds: tf.data.Dataset, seconds: float) -> tuple[int, float]:
    """Batches drawn in ``seconds`` at one per 0.1 s, and the seconds deleting the iterator took."""
    iterator, drawn, start = iter(ds), 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        next(iterator)
        drawn += 1
        time.sleep(0.1)
    start = time.perf_counter()
    del iterator
    gc.collect()
    return drawn, time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=150.0, help="how long to draw batches before deleting")
    p.add_argument("--trials", type=int, default=2)
    args = p.parse_args()
    samples = make_samples(SyntheticConfig(num_images=8, image_size=256), 0)
    augment = AugmentConfig(scale=0.4, brightness_contrast=0.2, blur=0.2, noise=0.2, colour=0.3)
    cfg = DataConfig(patch_size=128, augment=augment)
    data = prepare(samples[:6], samples[6:], cfg, "synthetic")
    autotune = tf.data.Options()
    autotune.autotune.enabled = True
    print(f"{machine()}; a batch every 0.1 s for {args.seconds:.0f} s, then delete")
    print("| pipeline | trial | batches | deletion s |")
    print("|---|---|---|---|")
    for trial in range(1, args.trials + 1):
        for name, ds in (
            ("cellseg (autotuning off)", train_dataset(data, cfg, 8, seed=trial)),
            (
                "autotuning on (tf.data default)",
                train_dataset(data, cfg, 8, seed=trial).with_options(autotune),
            ),
        ):
            drawn, seconds = teardown_seconds(ds, args.seconds)
            print(f"| {name} | {trial} | {drawn} | {seconds:.2f} |", flush=True)


if __name__ == "__main__":
    main()

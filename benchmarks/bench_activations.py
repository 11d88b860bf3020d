"""Training throughput of the default U-Net with every trainable activation, as a ratio to ReLU.

    python benchmarks/bench_activations.py [--steps 8] [--repeats 7] [names ...]

Every activation, ReLU included, trains once per round (ReLU, A, B, ..., ReLU, A, B, ...) on the same
in-memory batches, median of the rounds, as wall-clock and as process-CPU-time ratios (see
benchmarks/README.md for why both). Target (issue 6): every activation at >= 0.85 of ReLU.
"""

from __future__ import annotations

import argparse

from cellseg.core.hardware import configure_process  # reads no TensorFlow

configure_process()  # as the commands do: before TensorFlow is imported

import numpy as np
import tensorflow as tf
from common import interleaved, machine

from cellseg.core.config import Config
from cellseg.model.activations import available_activations
from cellseg.model.optim import compile_model
from cellseg.model.unet import build_unet


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("names", nargs="*", help="activations to measure (default: every trainable one)")
    p.add_argument("--steps", type=int, default=8, help="training steps per timed run")
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args()
    cfg = Config()
    batch, patch = cfg.train.batch_size, cfg.data.patch_size
    rng = np.random.default_rng(0)
    x = rng.random((args.steps * batch, patch, patch, cfg.data.channels), dtype=np.float32)
    y = (rng.random((args.steps * batch, patch, patch, 1)) > 0.8).astype(np.float32)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch).cache()

    def trained(name: str):
        model_cfg = Config().model
        model_cfg.activation = name
        model = build_unet(model_cfg, cfg.data.channels)
        compile_model(model, cfg.train)
        model.fit(ds.take(2), verbose=0)  # trace, compile the fused kernels, warm up
        return lambda: model.fit(ds, verbose=0)

    print(machine())
    print(
        f"default U-Net, {patch} px patches, batch {batch}, {args.steps} steps per run, "
        f"median of {args.repeats}"
    )
    names = args.names or [n for n in available_activations(trainable_only=True) if n != "relu"]
    runners = {"relu": trained("relu"), **{name: trained(name) for name in names}}
    seconds = interleaved(runners, args.repeats)  # one round = every activation once, ReLU included
    (rw, rc) = seconds["relu"]
    print(f"   relu                   {args.steps * batch / rw:.1f} patches/s")
    rows = []
    for name in names:
        aw, ac = seconds[name]
        rows.append((name, rw / aw, rc / ac))
        rate = args.steps * batch / aw
        print(f"   {name:22s} wall ratio {rw / aw:.3f}  CPU ratio {rc / ac:.3f}  ({rate:.1f} patches/s)")
    print("\nsorted by CPU ratio (target >= 0.85 of ReLU; judged on CPU time, see benchmarks/README.md):")
    for name, wall, cpu in sorted(rows, key=lambda r: r[2]):
        verdict = "ok" if cpu >= 0.85 else "BELOW 0.85"
        print(f"   {name:22s} CPU {cpu:.3f}  wall {wall:.3f}  {verdict}")


if __name__ == "__main__":
    main()

"""Cost of ``train.diagnostics``: one default training epoch with and without the per-layer probe.

    python benchmarks/bench_diagnostics.py [--repeats 5]

Interleaved (plain epoch, epoch + diagnostics, ...), median of the repeats, on in-memory batches of the
default config (25 steps of 8 patches of 128 px); wall-clock and process-CPU-time ratios.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from cellseg.core.hardware import configure_process  # reads no TensorFlow

configure_process()  # as the commands do: before TensorFlow is imported

import numpy as np
import tensorflow as tf
from common import interleaved, machine

from cellseg.core.config import Config
from cellseg.model.optim import compile_model
from cellseg.model.unet import build_unet
from cellseg.train.callbacks import Diagnostics, StopOnDivergence


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    cfg = Config()
    steps, batch, patch = cfg.train.steps_per_epoch, cfg.train.batch_size, cfg.data.patch_size
    rng = np.random.default_rng(0)
    x = rng.random((steps * batch, patch, patch, cfg.data.channels), dtype=np.float32)
    y = (rng.random((steps * batch, patch, patch, 1)) > 0.8).astype(np.float32)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch).cache()
    model = build_unet(cfg.model, cfg.data.channels)
    compile_model(model, cfg.train)
    with tempfile.TemporaryDirectory() as tmp:
        probe = Diagnostics(Path(tmp), x[:batch], y[:batch], StopOnDivergence())
        model.fit(ds.take(2), verbose=0, callbacks=[probe])  # trace both
        seconds = interleaved(
            {
                "plain": lambda: model.fit(ds, verbose=0),
                "diagnostics": lambda: model.fit(ds, verbose=0, callbacks=[probe]),
            },
            args.repeats,
        )
    (pw, pc), (dw, dc) = seconds["plain"], seconds["diagnostics"]
    print(machine())
    print(f"epoch of {steps} steps x {batch} patches of {patch} px, median of {args.repeats}")
    print(f"   plain epoch        wall {pw:.2f} s  CPU {pc:.2f} s")
    print(f"   with diagnostics   wall {dw:.2f} s  CPU {dc:.2f} s")
    print(f"   added cost: wall {dw / pw - 1:+.1%}, CPU {dc / pc - 1:+.1%}")


if __name__ == "__main__":
    main()

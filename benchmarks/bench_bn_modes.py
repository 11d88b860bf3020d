"""Batch-norm train / inference mismatch of a trained run, layer by layer.

    python benchmarks/bench_bn_modes.py --run RUN [--run RUN ...] [--batch 8]

For each hidden activation layer: the standard deviation of its output on a fixed batch of the run's
validation patches, with batch normalisation in inference mode (moving statistics: what validation,
evaluation and prediction use) and in training mode (the batch's own statistics: what training saw), and
their ratio. A ReLU network carries a mismatch of a few per cent from layer to layer; a unit of degree 2
in its input scale (``a * mish(b)``: doubling the input quadruples the output) squares it at every
layer, so after a dozen layers the inference-mode activations vanish to exactly zero or overflow.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cellseg.core.hardware import configure_process  # reads no TensorFlow

configure_process()  # as the commands do: before TensorFlow is imported

import keras
import numpy as np
from common import machine

from cellseg.core.runs import Run
from cellseg.data.prepare import prepare_run_data
from cellseg.model.unet import activation_layers, load_model


def mode_stds(model: keras.Model, images: np.ndarray) -> list[tuple[str, float, float]]:
    """(layer, std in inference mode, std in training mode) of every hidden activation layer."""
    layers = activation_layers(model)
    probe = keras.Model(model.inputs, [layer.output for layer in layers])
    inference = probe(images, training=False)
    training = probe(images, training=True)  # batch statistics; moving averages are not updated here
    return [
        (layer.name, float(np.std(np.asarray(i, np.float64))), float(np.std(np.asarray(t, np.float64))))
        for layer, i, t in zip(layers, inference, training, strict=True)
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, action="append", required=True, help="a run folder (repeatable)")
    p.add_argument("--batch", type=int, default=8, help="validation patches probed (default 8)")
    args = p.parse_args()
    print(machine())
    for run_dir in args.run:
        run = Run(run_dir)
        cfg = run.config
        model = load_model(run.kept_model, compile=False)
        data = prepare_run_data(cfg)
        images = data.val_images[: args.batch]
        rows = mode_stds(model, images)
        print(f"\n{run_dir} ({cfg.model.activation}, epoch {run.kept_epoch})")
        print("| layer | std, inference mode | std, training mode | ratio |")
        print("|---|---|---|---|")
        for name, inference, training in rows:
            ratio = inference / training if training else float("nan")
            print(f"| {name} | {inference:.3g} | {training:.3g} | {ratio:.3g} |")


if __name__ == "__main__":
    main()

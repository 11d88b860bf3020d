"""Activation mean / std across depth at initialisation, before any training step (issue 24, part 3).

A sweep's ``depth_profile.csv`` gives these statistics after training (``diagnostics.csv``'s last
epoch). SELU's self-normalisation is a claim about initialisation too: with LeCun-normal weights and
standardised inputs, activations keep mean 0 / std 1 through depth without batch norm. This builds each
variant's U-Net (the DSB2018 recipe with the given overrides, untrained) and measures every hidden
activation on one fixed batch of validation patches (as the runs' diagnostics do; by default from the
20-image DSB2018 sample, which prepares in seconds), once on the inputs as cellseg feeds them
(intensities in [0, 1]) and once standardised per channel:

    python benchmarks/bench_init_profile.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse

from cellseg.core.hardware import configure_process

configure_process()  # as the commands do: before TensorFlow is imported

import keras
import numpy as np
from common import machine

from cellseg.core.config import load_config
from cellseg.data.prepare import prepare_run_data
from cellseg.model.unet import activation_layers, build_unet

VARIANTS = {
    "selu, no batch norm": ["model.activation=selu", "model.batch_norm=false"],
    "selu, batch norm": ["model.activation=selu", "model.batch_norm=true"],
    "relu, no batch norm": ["model.activation=relu", "model.batch_norm=false"],
    "relu, batch norm": ["model.activation=relu", "model.batch_norm=true"],
}


def profile(model: keras.Model, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) of every hidden activation layer's output on ``images``, in network order; training
    mode, so batch norm normalises with the batch's statistics, as in the first training step."""
    probe = keras.Model(model.inputs, [layer.output for layer in activation_layers(model)])
    outputs = [np.asarray(a, dtype=np.float64) for a in probe([images], training=True)]
    return np.array([a.mean() for a in outputs]), np.array([a.std() for a in outputs])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/dsb2018.yaml")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--data", default="../shared/data/dsb2018/stage1_train", help="images to probe with")
    args = parser.parse_args()
    print(machine("float32"))
    cfg = load_config(args.config, ["data.seed=0", "train.precision=float32", f"data.path={args.data}"])
    data = prepare_run_data(cfg)
    images = data.val_images[: cfg.train.batch_size]  # a batch as the runs' diagnostics probe
    flat = images.reshape(-1, images.shape[-1])
    standardised = ((images - flat.mean(0)) / flat.std(0)).astype(np.float32)
    print(f"probe: {len(images)} validation patches, input mean {flat.mean():.3f}, std {flat.std():.3f}")
    for name, overrides in VARIANTS.items():
        for inputs, what in ((images, "inputs as fed"), (standardised, "inputs standardised")):
            stds, means = [], []
            for seed in args.seeds:
                keras.utils.set_random_seed(seed)
                mean, std = profile(build_unet(load_config(args.config, overrides).model), inputs)
                means.append(mean)
                stds.append(std)
            mean, std = np.mean(means, axis=0), np.mean(stds, axis=0)
            print(f"{name}, {what} (mean over seeds {args.seeds}), layer 0 -> {len(std) - 1}:")
            print("  std  " + " ".join(f"{v:.2f}" for v in std))
            print("  mean " + " ".join(f"{v:+.2f}" for v in mean))


if __name__ == "__main__":
    main()

"""The U-Net (Ronneberger et al. 2015) whose hidden activation comes from the registry by name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np

from cellseg.core.config import ModelConfig
from cellseg.model import losses as _losses  # noqa: F401  (registers the loss and metrics for load_model)
from cellseg.model.activations import check_trainable, create_activation, get_entry, parse_spec


class _Builder:
    """Holds what every conv block shares: activation spec, initializer, normalisation."""

    def __init__(self, cfg: ModelConfig) -> None:
        check_trainable(cfg.activation)
        entry = get_entry(cfg.activation)
        self.cfg = cfg
        self.factor = entry.channel_factor
        self.initializer = cfg.kernel_initializer or entry.initializer

    def conv_act(self, x: Any, filters: int, name: str) -> Any:
        x = keras.layers.Conv2D(
            filters * self.factor,
            3,
            padding="same",
            use_bias=not self.cfg.batch_norm,
            kernel_initializer=self.initializer,
            name=f"{name}_conv",
        )(x)
        if self.cfg.batch_norm:
            # momentum 0.9: moving statistics settle within the short epochs used to compare activations
            x = keras.layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
        return create_activation(self.cfg.activation, name=f"{name}_act")(x)

    def block(self, x: Any, filters: int, name: str) -> Any:
        x = self.conv_act(x, filters, f"{name}_1")
        if self.cfg.dropout > 0:
            x = keras.layers.SpatialDropout2D(self.cfg.dropout, name=f"{name}_drop")(x)
        return self.conv_act(x, filters, f"{name}_2")

    def up(self, x: Any, filters: int, name: str) -> Any:
        if self.cfg.decoder == "transpose":
            return keras.layers.Conv2DTranspose(
                filters, 2, strides=2, kernel_initializer=self.initializer, name=f"{name}_up"
            )(x)
        x = keras.layers.UpSampling2D(2, interpolation="bilinear", name=f"{name}_up")(x)
        return self.conv_act(x, filters, f"{name}_upconv")


def check_model_config(cfg: ModelConfig) -> None:
    """Raise ValueError for anything :func:`build_unet` would reject (unknown activation or option, an
    activation that cannot train), without building: the trainer calls it before reading any data."""
    check_trainable(cfg.activation)
    create_activation(cfg.activation)  # checks the activation's options


def build_unet(cfg: ModelConfig, input_channels: int = 3) -> keras.Model:
    """A U-Net of ``cfg.depth`` down-samplings; inputs of any size divisible by 2**depth are accepted.

    The output is the foreground probability (one sigmoid channel) or, with ``num_classes`` 3, softmax
    probabilities of background, nucleus interior and nucleus boundary, followed with ``head: hover``
    by the horizontal and vertical maps of :mod:`cellseg.data.hover` (tanh).
    """
    b = _Builder(cfg)
    inputs = keras.Input((None, None, input_channels), name="image")
    x = inputs
    skips = []
    for level in range(cfg.depth):
        x = b.block(x, cfg.base_filters * 2**level, f"enc{level}")
        skips.append(x)
        x = keras.layers.MaxPooling2D(2, name=f"enc{level}_pool")(x)
    x = b.block(x, cfg.base_filters * 2**cfg.depth, "bottleneck")
    for level in reversed(range(cfg.depth)):
        filters = cfg.base_filters * 2**level
        x = b.up(x, filters, f"dec{level}")
        x = keras.layers.Concatenate(name=f"dec{level}_concat")([x, skips[level]])
        x = b.block(x, filters, f"dec{level}")
    head = ("sigmoid", "foreground") if cfg.num_classes == 1 else ("softmax", "classes")
    outputs = keras.layers.Conv2D(cfg.num_classes, 1, activation=head[0], dtype="float32", name=head[1])(x)
    if cfg.head == "hover":  # the two distance maps, in [-1, 1], after the classes: one output tensor
        maps = keras.layers.Conv2D(2, 1, activation="tanh", dtype="float32", name="hv_maps")(x)
        outputs = keras.layers.Concatenate(dtype="float32", name="classes_hv")([outputs, maps])
    return keras.Model(inputs, outputs, name=f"unet_{parse_spec(cfg.activation)[0]}")


def activation_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The model's hidden activation layers, in order (named ``*_act``)."""
    return [layer for layer in model.layers if layer.name.endswith("_act")]


def activation_parameters(model: keras.Model) -> dict[str, float]:
    """Current value of every learnable activation parameter, keyed ``<layer>.<param>``.

    Per-channel parameters (PReLU) are summarised by their mean.
    """
    values = {}
    for layer in activation_layers(model):
        for weight in layer.trainable_weights:
            values[f"{layer.name}.{weight.name}"] = float(keras.ops.mean(weight))
    return values


def load_model(path: str | Path, compile: bool = True) -> keras.Model:
    """Load a saved ``.keras`` model; importing this module registers cellseg's layers and losses."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no saved model at {path}")
    return keras.saving.load_model(path, compile=compile)


def as_float32(model: keras.Model, cfg: ModelConfig) -> keras.Model:
    """``model`` with float32 layers: the same weights, computed in float32 whatever policy it was
    trained in. A mixed-bfloat16 model computes in bfloat16, whose rounding differs between CPUs
    (AMX, AVX512-BF16, emulation) and between a Keras call and a traced graph; float32 does not."""
    if all(layer.dtype_policy.name == "float32" for layer in model.layers):
        return model
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        copy = build_unet(cfg, model.input_shape[-1])
        copy.set_weights(model.get_weights())
    finally:
        keras.config.set_dtype_policy(policy)
    return copy


def conv_flops(model: keras.Model, height: int, width: int) -> int:
    """Analytic forward FLOPs of one (height x width) image: 2 x multiply-adds of every convolution.

    Convolutions are all but a fraction of a percent of a U-Net's arithmetic (normalisation and
    activations are a few operations per value); a training step costs about 3x the forward pass.
    """
    convs = [
        layer
        for layer in model.layers
        if isinstance(layer, keras.layers.Conv2D | keras.layers.Conv2DTranspose)
    ]
    probe = keras.Model(model.inputs, [layer.output for layer in convs])
    outputs = probe([np.zeros((1, height, width, model.input_shape[-1]), np.float32)], training=False)
    total = 0
    for layer, out in zip(convs, outputs, strict=True):
        pixels = int(out.shape[1]) * int(out.shape[2])
        if isinstance(layer, keras.layers.Conv2DTranspose):  # each input pixel feeds a stride x stride block
            pixels //= layer.strides[0] * layer.strides[1]
        total += 2 * int(np.prod(layer.kernel.shape)) * pixels
    return total

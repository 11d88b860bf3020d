"""The activation registry: one flat table from name to a Keras layer, and one ``create_activation``.

>>> layer = create_activation({"name": "isru", "alpha": 0.5})   # learnable alpha, initial 0.5
>>> layer = create_activation("mish")

Every layer is registered for Keras serialization, so a saved model reloads with plain
``keras.saving.load_model`` once ``cellseg.activations`` has been imported (``cellseg.models.load_model``
does that for you).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from cellseg.activations import functions
from cellseg.activations.layers import ISRU, Elementwise, GatedMish, SwishBeta, TrainableLeakyReLU

HE, LECUN, GLOROT = "he_normal", "lecun_normal", "glorot_uniform"


def _prelu(alpha: float, **kwargs: Any) -> keras.layers.Layer:
    # One learnable slope per channel, shared over height and width of NHWC feature maps.
    return keras.layers.PReLU(
        alpha_initializer=keras.initializers.Constant(alpha), shared_axes=[1, 2], **kwargs
    )


def _fixed(function: str) -> Callable[..., keras.layers.Layer]:
    return lambda **kwargs: Elementwise(function, **kwargs)


def _learnable(cls: type[keras.layers.Layer], param: str) -> Callable[..., keras.layers.Layer]:
    return lambda **kwargs: cls(kwargs.pop(param), **kwargs)


@dataclass(frozen=True)
class ActivationEntry:
    """What the registry knows about one activation.

    ``defaults`` holds the activation's options (its learnable initial value, or its fixed constant) and
    their default values; a spec may override them by name.
    """

    make: Callable[..., keras.layers.Layer]
    initializer: str
    defaults: dict[str, float] = field(default_factory=dict)
    learnable: bool = False
    channel_factor: int = 1
    has_gradient: bool = True  # False: zero almost everywhere, so no network can learn with it (plots only)
    summary: str = ""

    @property
    def params(self) -> tuple[str, ...]:
        return tuple(self.defaults)


ACTIVATIONS: dict[str, ActivationEntry] = {
    "isru": ActivationEntry(
        _learnable(ISRU, "alpha"), GLOROT, {"alpha": 1.0}, True, summary="x/sqrt(1+a x^2), learnable a>=0"
    ),
    "trainable_leaky_relu": ActivationEntry(
        _learnable(TrainableLeakyReLU, "alpha"),
        HE,
        {"alpha": 0.2},
        True,
        summary="x if x>=0 else a x, learnable a",
    ),
    "prelu": ActivationEntry(_prelu, HE, {"alpha": 0.25}, True, summary="per-channel learnable leaky slope"),
    "swish_beta": ActivationEntry(
        _learnable(SwishBeta, "beta"), HE, {"beta": 1.0}, True, summary="x sigmoid(b x), learnable b"
    ),
    "gated_mish": ActivationEntry(GatedMish, HE, channel_factor=2, summary="a*mish(b) over channel halves"),
    "mish": ActivationEntry(_fixed("mish"), HE, summary="x tanh(softplus(x))"),
    "swish": ActivationEntry(_fixed("swish"), HE, summary="x sigmoid(x)"),
    "silu": ActivationEntry(_fixed("silu"), HE, summary="x sigmoid(x) (alias of swish)"),
    "gelu": ActivationEntry(_fixed("gelu"), HE, summary="x Phi(x), exact"),
    "gelu_tanh": ActivationEntry(_fixed("gelu_tanh"), HE, summary="GELU, tanh approximation"),
    "selu": ActivationEntry(_fixed("selu"), LECUN, summary="scaled ELU, self-normalising"),
    "elu": ActivationEntry(_fixed("elu"), HE, {"alpha": 1.0}, summary="x if x>0 else a(e^x-1)"),
    "leaky_relu": ActivationEntry(_fixed("leaky_relu"), HE, {"alpha": 0.01}, summary="x if x>=0 else 0.01 x"),
    "relu": ActivationEntry(_fixed("relu"), HE, summary="max(0, x)"),
    "lisht": ActivationEntry(_fixed("lisht"), HE, summary="x tanh(x)"),
    "isrlu": ActivationEntry(_fixed("isrlu"), HE, {"alpha": 1.0}, summary="x if x>=0 else ISRU"),
    "softplus": ActivationEntry(_fixed("softplus"), HE, summary="log(1+e^x)"),
    "tanh": ActivationEntry(_fixed("tanh"), GLOROT, summary="tanh(x)"),
    "sigmoid": ActivationEntry(_fixed("sigmoid"), GLOROT, summary="1/(1+e^-x)"),
    "linear": ActivationEntry(_fixed("linear"), GLOROT, summary="x (no non-linearity)"),
    "binary_step": ActivationEntry(
        _fixed("binary_step"), GLOROT, has_gradient=False, summary="1 if x>=0 else 0 (plots only)"
    ),
}

_COMMON_KEYS = ("name", "trainable")


def markdown_table() -> str:
    """The registry as the Markdown table the README shows (``train.py --list-activations`` prints it)."""
    lines = ["| name | function | learnable | default init |", "|---|---|---|---|"]
    for name, e in ACTIVATIONS.items():
        learnable = ", ".join(e.params) if e.learnable else "–"
        lines.append(f"| `{name}` | {e.summary} | {learnable} | {e.initializer} |")
    return "\n".join(lines)


def available_activations(trainable_only: bool = False) -> list[str]:
    """Registry names, optionally only those a model can be trained with."""
    return [name for name, e in ACTIVATIONS.items() if e.has_gradient or not trainable_only]


def parse_spec(spec: str | Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """Split ``"isru"`` or ``{name: isru, alpha: 1}`` into a normalised name and its options."""
    if isinstance(spec, str):
        name, options = spec, {}
    elif isinstance(spec, Mapping):
        if "name" not in spec:
            raise ValueError(f"activation mapping {dict(spec)} needs a 'name' key, e.g. {{name: isru}}")
        options = {k: v for k, v in spec.items() if k != "name"}
        name = spec["name"]
    else:
        raise TypeError(f"activation must be a name or a mapping with 'name', got {type(spec).__name__}")
    return str(name).strip().lower().replace("-", "_"), options


def get_entry(spec: str | Mapping[str, Any]) -> ActivationEntry:
    """The registry entry for a spec; unknown names fail with the valid names and the closest match."""
    name, _ = parse_spec(spec)
    if name not in ACTIVATIONS:
        close = difflib.get_close_matches(name, ACTIVATIONS, n=1, cutoff=0.5)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ValueError(f"unknown activation '{name}'.{hint} Valid names: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def check_trainable(spec: str | Mapping[str, Any]) -> None:
    """Fail early, with the reason, for activations that cannot train a network."""
    name, _ = parse_spec(spec)
    if not get_entry(spec).has_gradient:
        raise ValueError(
            f"activation '{name}' has zero gradient almost everywhere, so a network using it cannot learn "
            "by gradient descent; it is in the registry for plots only. Choose a trainable activation: "
            + ", ".join(available_activations(trainable_only=True))
        )


def create_activation(spec: str | Mapping[str, Any], name: str | None = None) -> keras.layers.Layer:
    """Build a fresh activation layer from a name or a mapping (``{name, <param>, trainable}``)."""
    key, options = parse_spec(spec)
    entry = get_entry(key)
    unknown = set(options) - set(entry.params) - set(_COMMON_KEYS)
    if unknown:
        valid = ", ".join((*entry.params, "trainable")) or "trainable"
        raise ValueError(f"activation '{key}' has no option(s) {sorted(unknown)}; valid options: {valid}")
    return entry.make(**{**entry.defaults, **options}, name=name)


def activation_curve(spec: str | Mapping[str, Any], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Values and derivatives of an activation (at its initial or given parameters) at the points ``x``.

    A gated activation gets the same ``x`` in both halves, so it is drawn as a function of one input.
    """
    entry = get_entry(spec)
    layer = create_activation(spec)
    column = np.asarray(x, np.float32).reshape(-1, 1, 1, 1)  # NHWC, as inside the U-Net
    inputs = tf.constant(np.repeat(column, entry.channel_factor, axis=-1))
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        outputs = layer(inputs)
    grads = tape.gradient(outputs, inputs)
    slope = np.zeros(len(x), np.float32) if grads is None else grads.numpy().sum(axis=-1).ravel()
    return outputs.numpy()[:, 0, 0, 0], slope


__all__ = [
    "ACTIVATIONS",
    "ISRU",
    "ActivationEntry",
    "Elementwise",
    "GatedMish",
    "SwishBeta",
    "TrainableLeakyReLU",
    "activation_curve",
    "available_activations",
    "check_trainable",
    "create_activation",
    "functions",
    "get_entry",
    "markdown_table",
    "parse_spec",
]

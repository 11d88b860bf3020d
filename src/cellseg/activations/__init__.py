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

from cellseg.activations import functions
from cellseg.activations.layers import ISRU, Elementwise, GatedMish, SwishBeta, TrainableLeakyReLU

HE, LECUN, GLOROT = "he_normal", "lecun_normal", "glorot_uniform"


def _prelu(alpha: float = 0.25, **kwargs: Any) -> keras.layers.Layer:
    # One learnable slope per channel, shared over height and width of NHWC feature maps.
    return keras.layers.PReLU(
        alpha_initializer=keras.initializers.Constant(alpha), shared_axes=[1, 2], **kwargs
    )


def _fixed(function: str, **defaults: float) -> Callable[..., keras.layers.Layer]:
    def make(**kwargs: Any) -> keras.layers.Layer:
        return Elementwise(function, **{**defaults, **kwargs})

    return make


def _learnable(cls: type[keras.layers.Layer], default: float) -> Callable[..., keras.layers.Layer]:
    def make(alpha: float | None = None, beta: float | None = None, **kwargs: Any) -> keras.layers.Layer:
        given = alpha if alpha is not None else beta
        return cls(default if given is None else given, **kwargs)

    return make


@dataclass(frozen=True)
class ActivationEntry:
    """What the registry knows about one activation."""

    make: Callable[..., keras.layers.Layer]
    initializer: str
    params: tuple[str, ...] = ()
    learnable: bool = False
    channel_factor: int = 1
    trainable: bool = True
    summary: str = ""
    defaults: dict[str, float] = field(default_factory=dict)


ACTIVATIONS: dict[str, ActivationEntry] = {
    "isru": ActivationEntry(
        _learnable(ISRU, 1.0),
        GLOROT,
        ("alpha",),
        True,
        summary="x/sqrt(1+a x^2), learnable a>=0",
        defaults={"alpha": 1.0},
    ),
    "trainable_leaky_relu": ActivationEntry(
        _learnable(TrainableLeakyReLU, 0.2),
        HE,
        ("alpha",),
        True,
        summary="x if x>=0 else a x, learnable a",
        defaults={"alpha": 0.2},
    ),
    "prelu": ActivationEntry(
        _prelu, HE, ("alpha",), True, summary="per-channel learnable leaky slope", defaults={"alpha": 0.25}
    ),
    "swish_beta": ActivationEntry(
        _learnable(SwishBeta, 1.0),
        HE,
        ("beta",),
        True,
        summary="x sigmoid(b x), learnable b",
        defaults={"beta": 1.0},
    ),
    "gated_mish": ActivationEntry(
        lambda **kw: GatedMish(**kw), HE, channel_factor=2, summary="a*mish(b) over channel halves"
    ),
    "mish": ActivationEntry(_fixed("mish"), HE, summary="x tanh(softplus(x))"),
    "swish": ActivationEntry(_fixed("swish"), HE, summary="x sigmoid(x)"),
    "silu": ActivationEntry(_fixed("silu"), HE, summary="x sigmoid(x) (alias of swish)"),
    "gelu": ActivationEntry(_fixed("gelu"), HE, summary="x Phi(x), exact"),
    "gelu_tanh": ActivationEntry(_fixed("gelu_tanh"), HE, summary="GELU, tanh approximation"),
    "selu": ActivationEntry(_fixed("selu"), LECUN, summary="scaled ELU, self-normalising"),
    "elu": ActivationEntry(_fixed("elu", alpha=1.0), HE, ("alpha",), summary="x if x>0 else a(e^x-1)"),
    "leaky_relu": ActivationEntry(_fixed("leaky_relu", alpha=0.01), HE, ("alpha",), summary="x if x>=0 else 0.01 x"),
    "relu": ActivationEntry(_fixed("relu"), HE, summary="max(0, x)"),
    "lisht": ActivationEntry(_fixed("lisht"), HE, summary="x tanh(x)"),
    "isrlu": ActivationEntry(_fixed("isrlu", alpha=1.0), HE, ("alpha",), summary="x if x>=0 else ISRU"),
    "softplus": ActivationEntry(_fixed("softplus"), HE, summary="log(1+e^x)"),
    "tanh": ActivationEntry(_fixed("tanh"), GLOROT, summary="tanh(x)"),
    "sigmoid": ActivationEntry(_fixed("sigmoid"), GLOROT, summary="1/(1+e^-x)"),
    "linear": ActivationEntry(_fixed("linear"), GLOROT, summary="x (no non-linearity)"),
    "binary_step": ActivationEntry(
        _fixed("binary_step"), GLOROT, trainable=False, summary="1 if x>=0 else 0 (plots only)"
    ),
}

_COMMON_KEYS = ("name", "trainable")


def available_activations(trainable_only: bool = False) -> list[str]:
    """Registry names, optionally only those a model can be trained with."""
    return [name for name, e in ACTIVATIONS.items() if e.trainable or not trainable_only]


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
    if not get_entry(spec).trainable:
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
    return entry.make(**options, name=name)


__all__ = [
    "ACTIVATIONS",
    "ISRU",
    "ActivationEntry",
    "Elementwise",
    "GatedMish",
    "SwishBeta",
    "TrainableLeakyReLU",
    "available_activations",
    "check_trainable",
    "create_activation",
    "functions",
    "get_entry",
    "parse_spec",
]

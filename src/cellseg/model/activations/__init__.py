"""The activation registry: one flat table from name to activation, and one ``create_activation``.

>>> layer = create_activation({"name": "isru", "alpha": 0.5})   # learnable alpha, initial 0.5
>>> layer = create_activation("mish")
>>> register("tanh_x", lambda x: x * tf.tanh(x))                 # your own: now model.activation: tanh_x

Every layer is registered for Keras serialization, so a saved model reloads with plain
``keras.saving.load_model`` once ``cellseg.model.activations`` has been imported (which registers cellseg's
loss and metrics too; ``cellseg.model.unet.load_model`` does that for you).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from cellseg.model import losses as _losses  # noqa: F401  (a saved model's compile state: cellseg's loss, metrics)
from cellseg.model.activations import functions
from cellseg.model.activations.layers import ISRU, Elementwise, GatedMish, SwishBeta, TrainableLeakyReLU

HE, LECUN, GLOROT = "he_normal", "lecun_normal", "glorot_uniform"


def _prelu(alpha: float, **kwargs: Any) -> keras.layers.Layer:
    # One learnable slope per channel, shared over height and width of NHWC feature maps.
    return keras.layers.PReLU(
        alpha_initializer=keras.initializers.Constant(alpha), shared_axes=[1, 2], **kwargs
    )


def _learnable(cls: type[keras.layers.Layer], param: str) -> Callable[..., keras.layers.Layer]:
    return lambda **kwargs: cls(kwargs.pop(param), **kwargs)


@dataclass(frozen=True)
class ActivationEntry:
    """What the registry knows about one activation: either an elementwise ``function`` (the U-Net gets an
    :class:`Elementwise` layer naming it) or a ``layer`` factory (a Keras layer, e.g. with learnable weights).

    ``defaults`` holds the activation's options (its learnable initial value, or its fixed constant) and
    their default values; a spec may override them by name.
    """

    initializer: str
    function: Callable[..., tf.Tensor] | None = None
    layer: Callable[..., keras.layers.Layer] | None = None
    defaults: dict[str, Any] = field(default_factory=dict)
    learnable: bool = False
    channel_factor: int = 1
    has_gradient: bool = True  # False: zero almost everywhere, so no network can learn with it (plots only)
    summary: str = ""

    @property
    def params(self) -> tuple[str, ...]:
        return tuple(self.defaults)


def _fn(function: Callable[..., tf.Tensor], initializer: str, summary: str, **kw: Any) -> ActivationEntry:
    return ActivationEntry(initializer, function=function, summary=summary, **kw)


#: The one table: name -> activation. :func:`register` adds to it.
ACTIVATIONS: dict[str, ActivationEntry] = {
    "isru": ActivationEntry(
        GLOROT, layer=_learnable(ISRU, "alpha"), defaults={"alpha": 1.0}, learnable=True,
        summary="x/sqrt(1+a x^2), learnable a>=0",
    ),
    "trainable_leaky_relu": ActivationEntry(
        HE, layer=_learnable(TrainableLeakyReLU, "alpha"), defaults={"alpha": 0.2}, learnable=True,
        summary="x if x>=0 else a x, learnable a",
    ),
    "prelu": ActivationEntry(
        HE, layer=_prelu, defaults={"alpha": 0.25}, learnable=True,
        summary="per-channel learnable leaky slope",
    ),
    "swish_beta": ActivationEntry(
        HE, layer=_learnable(SwishBeta, "beta"), defaults={"beta": 1.0}, learnable=True,
        summary="x sigmoid(b x), learnable b",
    ),
    "gated_mish": ActivationEntry(
        HE, layer=GatedMish, channel_factor=2, defaults={"gate": "mish_gate"},  # gate: mish = a*mish(b)
        summary="a*tanh(softplus(b)) over channel halves (GLU, Mish gate)",
    ),
    "mish": _fn(functions.mish, HE, "x tanh(softplus(x))"),
    "swish": _fn(tf.nn.silu, HE, "x sigmoid(x)"),
    "silu": _fn(tf.nn.silu, HE, "x sigmoid(x) (alias of swish)"),
    "gelu": _fn(functions.gelu, HE, "x Phi(x), exact"),
    "gelu_tanh": _fn(functions.gelu_tanh, HE, "GELU, tanh approximation"),
    "selu": _fn(tf.nn.selu, LECUN, "scaled ELU, self-normalising"),
    "elu": _fn(functions.elu, HE, "x if x>0 else a(e^x-1)", defaults={"alpha": 1.0}),
    "leaky_relu": _fn(functions.leaky_relu, HE, "x if x>=0 else 0.01 x", defaults={"alpha": 0.01}),
    "relu": _fn(tf.nn.relu, HE, "max(0, x)"),
    "lisht": _fn(functions.lisht, HE, "x tanh(x)"),
    "isrlu": _fn(functions.isrlu, HE, "x if x>=0 else ISRU", defaults={"alpha": 1.0}),
    "softplus": _fn(tf.nn.softplus, HE, "log(1+e^x)"),
    "tanh": _fn(tf.tanh, GLOROT, "tanh(x)"),
    "sigmoid": _fn(tf.sigmoid, GLOROT, "1/(1+e^-x)"),
    "linear": _fn(tf.identity, GLOROT, "x (no non-linearity)"),
    "binary_step": _fn(functions.binary_step, GLOROT, "1 if x>=0 else 0 (plots only)", has_gradient=False),
}  # fmt: skip


def register(
    name: str,
    activation: Callable[..., tf.Tensor] | type[keras.layers.Layer],
    *,
    initializer: str = HE,
    defaults: Mapping[str, float] | None = None,
    channel_factor: int = 1,
    summary: str = "",
    replace: bool = False,
) -> ActivationEntry:
    """Add an activation to the registry, so configs, sweeps and saved models can name it.

    ``activation`` is a TensorFlow function ``f(x)`` (``f(x, alpha)`` with ``defaults={"alpha": ...}``),
    or a Keras layer class whose constructor takes the options in ``defaults`` as keyword arguments; its
    weights (e.g. a learnable slope) train, are logged each epoch and are saved with the model. A layer
    class is registered for Keras serialization (package ``cellseg_user``) unless it already is.
    A process that reloads a model using it must call ``register`` again first, as for any Keras custom
    object. ``initializer`` is the convolutions' default (He normal suits ReLU-like functions).

    >>> register("tanh_x", lambda x: x * tf.tanh(x), summary="x tanh(x)")
    """
    key, _ = parse_spec(name)
    if key in ACTIVATIONS and not replace:
        raise ValueError(f"activation '{key}' is already registered; pass replace=True to redefine it")
    options = dict(defaults or {})
    if isinstance(activation, type) and issubclass(activation, keras.layers.Layer):
        if ">" not in keras.saving.get_registered_name(activation):  # not yet known to Keras by name
            keras.saving.register_keras_serializable(package="cellseg_user")(activation)
        probe = activation(**options)
        probe.build((None, 8, 8, 2 * channel_factor))
        entry = ActivationEntry(
            initializer, layer=activation, defaults=options, learnable=bool(probe.trainable_weights),
            channel_factor=channel_factor, summary=summary or activation.__name__,
        )  # fmt: skip
    elif callable(activation):
        entry = ActivationEntry(
            initializer, function=activation, defaults=options, summary=summary or key,
            channel_factor=channel_factor,
        )  # fmt: skip
    else:
        raise TypeError(f"register('{key}', ...) needs a function or a Keras layer class, not {activation!r}")
    ACTIVATIONS[key] = entry
    return entry


def elementwise_function(name: str) -> Callable[..., tf.Tensor]:
    """The function of an elementwise registry entry (what an :class:`Elementwise` layer applies)."""
    entry = ACTIVATIONS.get(name)
    if entry is None or entry.function is None:
        known = ", ".join(n for n, e in ACTIVATIONS.items() if e.function is not None)
        hint = " (call cellseg.model.activations.register first if it is your own)" if entry is None else ""
        raise ValueError(f"unknown elementwise activation '{name}'{hint}; known: {known}")
    return entry.function


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


def create_activation(
    spec: str | Mapping[str, Any], name: str | None = None, **layer_kwargs: Any
) -> keras.layers.Layer:
    """Build a fresh activation layer from a name or a mapping (``{name, <param>, trainable}``);
    ``layer_kwargs`` go to the layer (e.g. ``dtype``)."""
    key, options = parse_spec(spec)
    entry = get_entry(key)
    unknown = set(options) - set(entry.params) - set(_COMMON_KEYS)
    if unknown:
        valid = ", ".join((*entry.params, "trainable")) or "trainable"
        raise ValueError(f"activation '{key}' has no option(s) {sorted(unknown)}; valid options: {valid}")
    kwargs = {**entry.defaults, **options, **layer_kwargs}
    if entry.function is not None:
        return Elementwise(key, name=name, **kwargs)
    assert entry.layer is not None
    return entry.layer(**kwargs, name=name)


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
    "elementwise_function",
    "functions",
    "get_entry",
    "markdown_table",
    "parse_spec",
    "register",
]

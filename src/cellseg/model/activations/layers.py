"""Keras layers for the activation registry, registered so saved ``.keras`` models reload by name.

Learnable parameters are real Keras weights (``alpha``, ``beta``): the optimiser updates them, they are
saved with the model, and the trainer logs their value every epoch.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from cellseg.model.activations import functions as F

register = keras.saving.register_keras_serializable(package="cellseg")


@register
class Elementwise(keras.layers.Layer):
    """A parameter-free (or fixed-constant) activation, looked up by its registry name.

    ``alpha`` is a constant (not a weight) for the functions that take one: leaky_relu, elu, isrlu. The
    function comes from the registry (:func:`cellseg.model.activations.register` adds one), so a saved model
    stores only the name.
    """

    def __init__(self, function: str, alpha: float | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        from cellseg.model.activations import elementwise_function  # the registry imports this module

        self.function = function
        self.alpha = alpha
        self._fn = elementwise_function(function)

    def call(self, x: tf.Tensor) -> tf.Tensor:
        return self._fn(x) if self.alpha is None else self._fn(x, self.alpha)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "function": self.function, "alpha": self.alpha}


class _ScalarParameterActivation(keras.layers.Layer):
    """Base for activations with one learnable scalar weight; subclasses set ``param`` and ``op``."""

    param = "alpha"
    non_negative = False

    def __init__(self, initial: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.initial = float(initial)

    def build(self, input_shape: tuple) -> None:
        constraint = keras.constraints.NonNeg() if self.non_negative else None
        weight = self.add_weight(
            name=self.param,
            shape=(),
            initializer=keras.initializers.Constant(self.initial),
            constraint=constraint,
            trainable=True,
        )
        setattr(self, self.param, weight)

    def call(self, x: tf.Tensor) -> tf.Tensor:
        value = tf.cast(getattr(self, self.param), x.dtype)
        return self.op(x, value)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "initial": self.initial}


@register
class ISRU(_ScalarParameterActivation):
    """x / sqrt(1 + alpha x^2) with learnable alpha >= 0 (a NonNeg constraint keeps it there)."""

    non_negative = True
    op = staticmethod(F.isru)


@register
class TrainableLeakyReLU(_ScalarParameterActivation):
    """Leaky ReLU whose negative slope alpha is learned (one scalar per layer)."""

    op = staticmethod(F.trainable_leaky_relu)


@register
class SwishBeta(_ScalarParameterActivation):
    """x * sigmoid(beta x) with learnable beta."""

    param = "beta"
    op = staticmethod(F.swish_beta)


@register
class GatedMish(keras.layers.Layer):
    """``a * tanh(softplus(b))`` for the two channel halves a, b of the input; halves the channel count.

    A gated linear unit with Mish's gate (see :func:`functions.gated_mish`): the layer before it must
    produce twice the channels wanted after it, which the U-Net does when the registry says
    ``channel_factor=2``. ``gate="mish"`` is the earlier ``a * mish(b)``, kept for models saved with it
    (their config has no ``gate``, so they reload with it).
    """

    GATES = ("mish_gate", "mish")

    def __init__(self, gate: str = "mish_gate", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if gate not in self.GATES:
            raise ValueError(f"gated_mish gate must be one of {self.GATES}, got {gate!r}")
        self.gate = gate

    def call(self, x: tf.Tensor) -> tf.Tensor:
        return F.gated_mish(x, self.gate)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        channels = input_shape[-1]
        if channels is not None and channels % 2:
            raise ValueError(f"gated_mish needs an even channel count, got {channels}")
        return (*input_shape[:-1], None if channels is None else channels // 2)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "gate": self.gate}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> GatedMish:
        return cls(**{"gate": "mish", **config})  # saved before the gate option: a * mish(b)

"""Activation functions as TensorFlow ops, with closed-form gradients where autodiff would be slower.

Autodiff through ``x * tanh(softplus(x))`` keeps several intermediates alive and runs a chain of small
kernels; the hand-written gradients below keep only the input and evaluate one expression, which is both
faster and lighter on memory. Every function here is checked against a NumPy reference and finite
differences in ``tests/test_activations.py``.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf


@tf.custom_gradient
def mish(x: tf.Tensor) -> tf.Tensor:
    """x * tanh(softplus(x)) (Misra 2019)."""
    tsp = tf.tanh(tf.nn.softplus(x))

    def grad(dy: tf.Tensor) -> tf.Tensor:
        return dy * (tsp + x * (1.0 - tsp * tsp) * tf.sigmoid(x))

    return x * tsp, grad


@tf.custom_gradient
def lisht(x: tf.Tensor) -> tf.Tensor:
    """Linearly scaled hyperbolic tangent, x * tanh(x) (Roy et al. 2019)."""
    t = tf.tanh(x)

    def grad(dy: tf.Tensor) -> tf.Tensor:
        return dy * (t + x * (1.0 - t * t))

    return x * t, grad


def _isru_core(x: tf.Tensor, alpha: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Return (1 + a x^2)^-1/2 and its cube, shared by ISRU and ISRLU."""
    r = tf.math.rsqrt(1.0 + alpha * x * x)
    return r, r * r * r


@tf.custom_gradient
def isru(x: tf.Tensor, alpha: tf.Tensor) -> tf.Tensor:
    """Inverse square root unit x / sqrt(1 + a x^2) (Carlile et al. 2017); ``alpha`` is a scalar."""
    r, r3 = _isru_core(x, alpha)

    def grad(dy: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        dalpha = tf.reduce_sum(dy * (-0.5) * x * x * x * r3)
        return dy * r3, tf.cast(dalpha, alpha.dtype)

    return x * r, grad


def isrlu(x: tf.Tensor, alpha: float = 1.0) -> tf.Tensor:
    """Inverse square root linear unit: x for x >= 0, ISRU for x < 0 (Carlile et al. 2017)."""
    return _isrlu(x, tf.constant(alpha, x.dtype))


@tf.custom_gradient
def _isrlu(x: tf.Tensor, alpha: tf.Tensor) -> tf.Tensor:
    r, r3 = _isru_core(x, alpha)
    neg = x < 0

    def grad(dy: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return dy * tf.where(neg, r3, tf.ones_like(r3)), tf.zeros_like(alpha)

    return tf.where(neg, x * r, x), grad


@tf.custom_gradient
def trainable_leaky_relu(x: tf.Tensor, alpha: tf.Tensor) -> tf.Tensor:
    """x for x >= 0 and a * x below; the piecewise form stays correct for a > 1, unlike max(x, a x)."""
    neg = x < 0

    def grad(dy: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        dx = dy * tf.where(neg, alpha, tf.ones_like(alpha))
        dalpha = tf.reduce_sum(tf.where(neg, dy * x, tf.zeros_like(x)))
        return dx, tf.cast(dalpha, alpha.dtype)

    return tf.where(neg, alpha * x, x), grad


@tf.custom_gradient
def swish_beta(x: tf.Tensor, beta: tf.Tensor) -> tf.Tensor:
    """x * sigmoid(b x) with a scalar, learnable b (Ramachandran et al. 2017)."""
    s = tf.sigmoid(beta * x)

    def grad(dy: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        ds = s * (1.0 - s)
        dbeta = tf.reduce_sum(dy * x * x * ds)
        return dy * (s + beta * x * ds), tf.cast(dbeta, beta.dtype)

    return x * s, grad


def gated_mish(x: tf.Tensor) -> tf.Tensor:
    """cellseg's Gated Mish: split the channels into halves a, b and return a * mish(b) (GLU-style)."""
    a, b = tf.split(x, 2, axis=-1)
    return a * mish(b)


def binary_step(x: tf.Tensor) -> tf.Tensor:
    """1 for x >= 0, else 0. Its gradient is zero almost everywhere: for plots only."""
    return tf.cast(x >= 0, x.dtype)


def _leaky_relu(x: tf.Tensor, alpha: float = 0.01) -> tf.Tensor:
    return tf.nn.leaky_relu(x, alpha=alpha)


def _elu(x: tf.Tensor, alpha: float = 1.0) -> tf.Tensor:
    return tf.nn.elu(x) if alpha == 1.0 else tf.where(x > 0, x, alpha * tf.math.expm1(tf.minimum(x, 0.0)))


#: Parameter-free (or fixed-parameter) functions; the ones taking ``alpha`` accept it as a float.
FIXED_FUNCTIONS: dict[str, Callable[..., tf.Tensor]] = {
    "relu": tf.nn.relu,
    "leaky_relu": _leaky_relu,
    "elu": _elu,
    "selu": tf.nn.selu,
    "gelu": lambda x: tf.nn.gelu(x, approximate=False),
    "gelu_tanh": lambda x: tf.nn.gelu(x, approximate=True),
    "swish": tf.nn.silu,
    "silu": tf.nn.silu,
    "mish": mish,
    "lisht": lisht,
    "isrlu": isrlu,
    "softplus": tf.nn.softplus,
    "tanh": tf.tanh,
    "sigmoid": tf.sigmoid,
    "linear": tf.identity,
    "binary_step": binary_step,
}

"""Activation functions as TensorFlow ops, with closed-form gradients compiled into fused kernels.

Autodiff through ``x * tanh(softplus(x))`` keeps several intermediates alive and runs a chain of small
kernels, each one a full pass over the activation tensor. Here each function's forward and backward
pass is one XLA-compiled kernel (``_fused``): on a CPU the chain of elementwise ops becomes a single loop
over memory, which is what bounds activations' cost. Kernels compute in float32 whatever the input
(``exp`` and ``x**2`` overflow float16; the casts fuse away), and return the input's dtype. Every function
here is checked against a NumPy reference and finite differences in ``tests/test_activations.py``.
Gradients of a learnable scalar are summed outside the kernel (see ``_with_scalar``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import tensorflow as tf


def _fused(kernel: Callable) -> Callable:
    """Compile an elementwise kernel with XLA (one compilation per input shape and dtype)."""
    return tf.function(kernel, jit_compile=True, autograph=False)


def _wide(t: tf.Tensor, like: tf.Tensor | None = None) -> tf.Tensor:
    """16-bit tensors as float32 (or as ``like``'s dtype); float32 / float64 ones unchanged."""
    if like is not None:
        return tf.cast(t, like.dtype)
    return tf.cast(t, tf.float32) if t.dtype in (tf.float16, tf.bfloat16) else t


def _elementwise(fwd: Callable, bwd: Callable, doc: str) -> Callable:
    """f(x) from fused kernels: ``fwd(x) -> (y, *saved)`` and ``bwd(dy, *saved) -> dx``."""

    @tf.custom_gradient
    def f(x: tf.Tensor) -> tf.Tensor:
        y, *saved = fwd(x)
        return y, lambda dy: bwd(dy, *saved)

    f.__doc__ = doc
    return f


def _with_scalar(fwd: Callable, bwd: Callable, doc: str) -> Callable:
    """f(x, p) with a learnable scalar p: ``fwd(x, p) -> (y, *saved)``, ``bwd(dy, p, *saved) -> (dx, dp)``.

    ``dp`` is per element and summed here, outside the kernel: XLA's CPU reductions run on one thread,
    TensorFlow's own ``reduce_sum`` on all of them (a third less CPU time for ISRU's backward pass).
    """

    @tf.custom_gradient
    def f(x: tf.Tensor, p: tf.Tensor) -> tf.Tensor:
        y, *saved = fwd(x, p)

        def grad(dy: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            dx, dp = bwd(dy, p, *saved)
            return dx, tf.cast(tf.reduce_sum(dp), p.dtype)

        return y, grad

    f.__doc__ = doc
    return f


# mish(x) = x tanh(softplus(x)) = x n / (n + 2) with n = e^x (e^x + 2): one exp instead of exp, log1p and
# tanh. Past x = 20 the ratio is 1 in float32, so the exp is clamped there to avoid overflow.
@_fused
def _mish_fwd(x: tf.Tensor) -> tuple[tf.Tensor, ...]:
    xf = _wide(x)
    e = tf.exp(tf.minimum(xf, 20.0))
    n = e * (e + 2.0)
    r = 1.0 / (n + 2.0)
    return tf.cast(xf * n * r, x.dtype), xf, e, r


@_fused
def _mish_bwd(dy: tf.Tensor, xf: tf.Tensor, e: tf.Tensor, r: tf.Tensor) -> tf.Tensor:
    # d/dx [x n/(n+2)] = n/(n+2) + x * 2 n'/(n+2)^2, n' = 2 e (e + 1)
    return tf.cast(_wide(dy) * (e * (e + 2.0) * r + 4.0 * xf * e * (e + 1.0) * r * r), dy.dtype)


mish = _elementwise(_mish_fwd, _mish_bwd, "x * tanh(softplus(x)) (Misra 2019).")


@_fused
def _lisht_fwd(x: tf.Tensor) -> tuple[tf.Tensor, ...]:
    xf = _wide(x)
    t = tf.tanh(xf)
    return tf.cast(xf * t, x.dtype), xf, t


@_fused
def _lisht_bwd(dy: tf.Tensor, xf: tf.Tensor, t: tf.Tensor) -> tf.Tensor:
    return tf.cast(_wide(dy) * (t + xf * (1.0 - t * t)), dy.dtype)


lisht = _elementwise(
    _lisht_fwd, _lisht_bwd, "Linearly scaled hyperbolic tangent, x * tanh(x) (Roy et al. 2019)."
)


@_fused
def _isru_fwd(x: tf.Tensor, alpha: tf.Tensor, linear_above_zero: bool) -> tuple[tf.Tensor, ...]:
    xf = _wide(x)
    a = _wide(alpha, like=xf)
    r = tf.math.rsqrt(1.0 + a * xf * xf)
    y = xf * r
    if linear_above_zero:
        y = tf.where(xf < 0, y, xf)
    return tf.cast(y, x.dtype), xf, r


@_fused
def _isru_bwd(dy: tf.Tensor, xf: tf.Tensor, r: tf.Tensor, linear_above_zero: bool) -> tuple[tf.Tensor, ...]:
    dyf, r3 = _wide(dy), r * r * r
    if linear_above_zero:
        return tf.cast(dyf * tf.where(xf < 0, r3, tf.ones_like(r3)), dy.dtype), tf.zeros([], xf.dtype)
    return tf.cast(dyf * r3, dy.dtype), dyf * (-0.5) * xf * xf * xf * r3  # d/da per element


isru = _with_scalar(
    lambda x, alpha: _isru_fwd(x, alpha, False),
    lambda dy, alpha, xf, r: _isru_bwd(dy, xf, r, False),
    "Inverse square root unit x / sqrt(1 + a x^2) (Carlile et al. 2017); ``alpha`` is a scalar.",
)


def isrlu(x: tf.Tensor, alpha: float = 1.0) -> tf.Tensor:
    """Inverse square root linear unit: x for x >= 0, ISRU for x < 0 (Carlile et al. 2017)."""
    return _isrlu(x, tf.constant(alpha, tf.float32))


@tf.custom_gradient
def _isrlu(x: tf.Tensor, alpha: tf.Tensor) -> tf.Tensor:
    y, xf, r = _isru_fwd(x, alpha, True)

    def grad(dy: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return _isru_bwd(dy, xf, r, True)[0], tf.zeros_like(alpha)

    return y, grad


@_fused
def _leaky_fwd(x: tf.Tensor, alpha: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    return tf.where(x < 0, tf.cast(alpha, x.dtype) * x, x), x


@_fused
def _leaky_bwd(dy: tf.Tensor, alpha: tf.Tensor, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    neg = x < 0
    dx = tf.where(neg, tf.cast(alpha, dy.dtype) * dy, dy)
    return dx, tf.where(neg, _wide(dy) * _wide(x), tf.zeros_like(_wide(x)))  # d/da per element


trainable_leaky_relu = _with_scalar(
    _leaky_fwd,
    _leaky_bwd,
    "x for x >= 0 and a * x below; the piecewise form stays correct for a > 1, unlike max(x, a x).",
)


@_fused
def _swish_fwd(x: tf.Tensor, beta: tf.Tensor) -> tuple[tf.Tensor, ...]:
    xf = _wide(x)
    s = tf.sigmoid(_wide(beta, like=xf) * xf)
    return tf.cast(xf * s, x.dtype), xf, s


@_fused
def _swish_bwd(dy: tf.Tensor, beta: tf.Tensor, xf: tf.Tensor, s: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    dyf, ds = _wide(dy), s * (1.0 - s)
    dx = dyf * (s + _wide(beta, like=xf) * xf * ds)
    return tf.cast(dx, dy.dtype), dyf * xf * xf * ds  # d/db per element


swish_beta = _with_scalar(
    _swish_fwd, _swish_bwd, "x * sigmoid(b x) with a scalar, learnable b (Ramachandran et al. 2017)."
)


_SQRT_HALF = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


@_fused
def _gelu_fwd(x: tf.Tensor) -> tuple[tf.Tensor, ...]:
    xf = _wide(x)
    cdf = 0.5 * (1.0 + tf.math.erf(xf * _SQRT_HALF))
    return tf.cast(xf * cdf, x.dtype), xf, cdf


@_fused
def _gelu_bwd(dy: tf.Tensor, xf: tf.Tensor, cdf: tf.Tensor) -> tf.Tensor:
    return tf.cast(_wide(dy) * (cdf + xf * _INV_SQRT_2PI * tf.exp(-0.5 * xf * xf)), dy.dtype)


gelu = _elementwise(_gelu_fwd, _gelu_bwd, "x Phi(x), the exact GELU (Hendrycks & Gimpel 2016).")


@_fused
def _gelu_tanh_fwd(x: tf.Tensor) -> tuple[tf.Tensor, ...]:
    xf = _wide(x)
    t = tf.tanh(_SQRT_2_OVER_PI * (xf + 0.044715 * xf * xf * xf))
    return tf.cast(0.5 * xf * (1.0 + t), x.dtype), xf, t


@_fused
def _gelu_tanh_bwd(dy: tf.Tensor, xf: tf.Tensor, t: tf.Tensor) -> tf.Tensor:
    du = _SQRT_2_OVER_PI * (1.0 + 3.0 * 0.044715 * xf * xf)
    return tf.cast(_wide(dy) * (0.5 * (1.0 + t) + 0.5 * xf * (1.0 - t * t) * du), dy.dtype)


gelu_tanh = _elementwise(_gelu_tanh_fwd, _gelu_tanh_bwd, "GELU with the tanh approximation.")


@_fused
def _mish_gate_fwd(x: tf.Tensor) -> tuple[tf.Tensor, ...]:
    xf = _wide(x)
    e = tf.exp(tf.minimum(xf, 20.0))
    r = 1.0 / (e * (e + 2.0) + 2.0)
    return tf.cast(e * (e + 2.0) * r, x.dtype), e, r


@_fused
def _mish_gate_bwd(dy: tf.Tensor, e: tf.Tensor, r: tf.Tensor) -> tf.Tensor:
    # d/dx [n/(n+2)] = 2 n'/(n+2)^2 with n' = 2 e (e + 1)
    return tf.cast(_wide(dy) * 4.0 * e * (e + 1.0) * r * r, dy.dtype)


mish_gate = _elementwise(
    _mish_gate_fwd, _mish_gate_bwd, "tanh(softplus(x)), Mish's gate: mish(x) = x * mish_gate(x), in (0, 1)."
)


def gated_mish(x: tf.Tensor, gate: str = "mish_gate") -> tf.Tensor:
    """cellseg's Gated Mish over the channel halves a, b: ``a * tanh(softplus(b))``, a gated linear unit
    (Dauphin et al. 2017) with Mish's gate in place of the sigmoid.

    ``gate="mish"`` gives ``a * mish(b)`` (the SwiGLU form of Shazeer 2020 with Mish), the definition
    before 2026-12-02: of degree 2 in its input's scale, it squares at every layer the gap between batch
    norm's training and inference statistics, so a batch-normalised U-Net's inference output vanishes to
    exactly 0 or overflows (docs/study.md). It is kept so models saved with it reload as they were.
    """
    a, b = tf.split(x, 2, axis=-1)
    return a * (mish(b) if gate == "mish" else mish_gate(b))


def binary_step(x: tf.Tensor) -> tf.Tensor:
    """1 for x >= 0, else 0. Its gradient is zero almost everywhere: for plots only."""
    return tf.cast(x >= 0, x.dtype)


def leaky_relu(x: tf.Tensor, alpha: float = 0.01) -> tf.Tensor:
    return tf.nn.leaky_relu(x, alpha=alpha)


def elu(x: tf.Tensor, alpha: float = 1.0) -> tf.Tensor:
    return tf.nn.elu(x) if alpha == 1.0 else tf.where(x > 0, x, alpha * tf.math.expm1(tf.minimum(x, 0.0)))

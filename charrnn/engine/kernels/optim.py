"""Fused optimizer, norm and clipping loops over flat parameter vectors.

Every model keeps all its parameters in one flat vector, and gradients and optimizer moments share that
layout, so each update is one pass that reads p, g and the moments once and writes them once (numpy
would make a temporary per operator and read the vectors five or six times).

Precision: callers pass every scalar already cast to the arrays' dtype and precompute anything that
involves a constant (1 - beta, bias corrections, the weight-decay factor). A Python float reaches Numba
as float64, and float32 * float64 promotes, so an uncast scalar would silently turn a float32 update
into float64 arithmetic (slower, no SIMD width gain, and different rounding from the float32 model).
For the same reason the loops contain no numeric literals.

Weight decay is decoupled (AdamW-style): `decay` = 1 - lr * weight_decay multiplies p before the
gradient step; decay == 1 exactly when weight decay is off, which leaves p bit-for-bit untouched.

All kernels assume 1-D contiguous arrays of one float dtype and equal length (the wrapper in
charrnn/optim.py checks that once per call). They also run as plain Python with NUMBA_DISABLE_JIT=1.
"""
import numpy as np

from charrnn.engine.kernels.jit import kernel


@kernel
def _adam_update(p, g, m, v, decay, beta1, one_minus_beta1, beta2, one_minus_beta2, step_size,
                 inv_bias_correction2_sqrt, eps):
    """torch.optim.Adam: p = decay*p - step_size * m / (sqrt(v) / sqrt(bc2) + eps), step_size = lr/bc1."""
    for i in range(p.shape[0]):
        gi = g[i]
        mi = beta1 * m[i] + one_minus_beta1 * gi
        vi = beta2 * v[i] + one_minus_beta2 * (gi * gi)
        m[i] = mi
        v[i] = vi
        p[i] = decay * p[i] - step_size * mi / (np.sqrt(vi) * inv_bias_correction2_sqrt + eps)


@kernel
def _rmsprop_update(p, g, v, decay, lr, alpha, one_minus_alpha, eps):
    """torch.optim.RMSprop (no momentum, not centered): v = alpha*v + (1-alpha)*g^2; p -= lr*g/(sqrt(v)+eps)."""
    for i in range(p.shape[0]):
        gi = g[i]
        vi = alpha * v[i] + one_minus_alpha * (gi * gi)
        v[i] = vi
        p[i] = decay * p[i] - lr * gi / (np.sqrt(vi) + eps)


@kernel
def _adagrad_update(p, g, s, decay, lr, eps):
    """torch.optim.Adagrad (no lr decay, zero initial accumulator): s += g^2; p -= lr*g/(sqrt(s)+eps)."""
    for i in range(p.shape[0]):
        gi = g[i]
        si = s[i] + gi * gi
        s[i] = si
        p[i] = decay * p[i] - lr * gi / (np.sqrt(si) + eps)


@kernel
def _sgd_momentum_update(p, g, buf, decay, lr, momentum):
    """torch.optim.SGD with momentum, no dampening/nesterov: buf = momentum*buf + g; p -= lr*buf.

    torch sets buf = g on the first step; a zero-initialised buffer gives exactly that (momentum*0 + g).
    """
    for i in range(p.shape[0]):
        bi = momentum * buf[i] + g[i]
        buf[i] = bi
        p[i] = decay * p[i] - lr * bi


@kernel
def _sgd_update(p, g, decay, lr):
    """Plain SGD: p = decay*p - lr*g."""
    for i in range(p.shape[0]):
        p[i] = decay * p[i] - lr * g[i]


@kernel
def _sum_squares(x):
    """Sum of x^2 accumulated in float64 (float32 partial sums lose digits on million-element vectors).

    NaN/inf propagate (the project's fastmath flags keep IEEE non-finite semantics), so the caller can
    detect a diverged gradient from the result alone.
    """
    acc = np.float64(0)
    for i in range(x.shape[0]):
        xi = np.float64(x[i])
        acc += xi * xi
    return acc


@kernel
def _scale_inplace(x, factor):
    """x *= factor (factor already cast to x's dtype)."""
    for i in range(x.shape[0]):
        x[i] *= factor


@kernel
def _clamp_inplace(x, lo, hi):
    """Clamp x to [lo, hi] in place. Written as comparisons so NaN stays NaN (like torch.clamp_)."""
    for i in range(x.shape[0]):
        xi = x[i]
        if xi > hi:
            x[i] = hi
        elif xi < lo:
            x[i] = lo

"""Scalar tanh and sigmoid that LLVM can vectorize inside Numba loops.

This machine's llvmlite has no SVML, so `np.tanh` inside an njit loop is a scalar libm call (~20 ns per
element, ~50x slower than numpy's ufunc). For float32 we use Eigen's [13/6] rational approximation of
tanh: pure multiply/add/divide plus a clamp, so it vectorizes, and its error against float64 tanh is
a few float32 ulps (< 1e-6 absolute; measured in tests). float64 inputs take the exact libm path, so
float64 gradient checks see the true function.
"""
import math

import numpy as np
from numba.extending import overload

# Eigen's generic_fast_tanh_float coefficients (odd numerator, even denominator).
_CLAMP = np.float32(7.90531110763549805)
_TINY = np.float32(0.0004)
_A1 = np.float32(4.89352455891786e-03)
_A3 = np.float32(6.37261928875436e-04)
_A5 = np.float32(1.48572235717979e-05)
_A7 = np.float32(5.12229709037114e-08)
_A9 = np.float32(-8.60467152213735e-11)
_A11 = np.float32(2.00018790482477e-13)
_A13 = np.float32(-2.76076847742355e-16)
_B0 = np.float32(4.89352518554385e-03)
_B2 = np.float32(2.26843463243900e-03)
_B4 = np.float32(1.18534705686654e-04)
_B6 = np.float32(1.19825839466702e-06)
_HALF32 = np.float32(0.5)


def _tanh32(x):
    if abs(x) < _TINY:
        return x
    x = min(max(x, -_CLAMP), _CLAMP)
    x2 = x * x
    p = x2 * _A13 + _A11
    p = x2 * p + _A9
    p = x2 * p + _A7
    p = x2 * p + _A5
    p = x2 * p + _A3
    p = x2 * p + _A1
    p = x * p
    q = x2 * _B6 + _B4
    q = x2 * q + _B2
    q = x2 * q + _B0
    return p / q


def tanh(x):
    """tanh for a float32 or float64 scalar (pure-Python path, used when JIT is disabled)."""
    if isinstance(x, np.float32):
        return np.float32(_tanh32(x))
    return math.tanh(x)


def sigmoid(x):
    """Logistic sigmoid as 0.5 + 0.5*tanh(x/2): one formula, vectorizable, no overflow."""
    if isinstance(x, np.float32):
        return _HALF32 + _HALF32 * np.float32(_tanh32(_HALF32 * x))
    return 0.5 + 0.5 * math.tanh(0.5 * x)


@overload(tanh, jit_options={"fastmath": {"nsz", "arcp", "contract", "afn", "reassoc"}})
def _tanh_ol(x):
    if x == np.float32 or str(x) == "float32":
        def impl(x):
            # Branch-free clamp keeps the loop vectorizable; the tiny-|x| branch is only needed for
            # the relative error near 0, where the rational form is already accurate to ~1 ulp.
            x = min(max(x, -_CLAMP), _CLAMP)
            x2 = x * x
            p = x2 * _A13 + _A11
            p = x2 * p + _A9
            p = x2 * p + _A7
            p = x2 * p + _A5
            p = x2 * p + _A3
            p = x2 * p + _A1
            p = x * p
            q = x2 * _B6 + _B4
            q = x2 * q + _B2
            q = x2 * q + _B0
            return p / q
        return impl
    def impl64(x):
        return math.tanh(x)
    return impl64


@overload(sigmoid, jit_options={"fastmath": {"nsz", "arcp", "contract", "afn", "reassoc"}})
def _sigmoid_ol(x):
    if x == np.float32 or str(x) == "float32":
        def impl(x):
            return _HALF32 + _HALF32 * tanh(_HALF32 * x)
        return impl
    def impl64(x):
        return 0.5 + 0.5 * math.tanh(0.5 * x)
    return impl64

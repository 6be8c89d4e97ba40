"""The one decorator policy for every Numba kernel in charrnn.

fastmath without nnan/ninf: reassociation lets LLVM vectorize reductions, but NaN/inf checks must keep
working (the divergence guard relies on them). cache=True so a second run skips compilation. nogil so
kernels can run beside BLAS or on a second Python thread.
"""
import numba

FASTMATH = frozenset({"nsz", "arcp", "contract", "afn", "reassoc"})


def kernel(fn=None, **overrides):
    """`@kernel` or `@kernel(parallel=True)`: numba.njit with the project's policy."""
    opts = dict(cache=True, fastmath=set(FASTMATH), nogil=True, error_model="numpy")
    opts.update(overrides)
    if fn is None:
        return lambda f: numba.njit(**opts)(f)
    return numba.njit(**opts)(fn)

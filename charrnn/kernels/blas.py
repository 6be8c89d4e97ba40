"""Every GEMM in charrnn goes through Numba's np.dot (scipy's OpenBLAS).

Why not numpy's matmul for the large ones: numpy and scipy ship two separate OpenBLAS builds, each with
its own thread pool whose workers spin after a call. Mixing them, the idle pool steals the second core
from the busy one (measured: GRU 2x256 step 1.76 s mixed vs 0.36 s with one pool), and numpy's 2-thread
build is itself pathological at 50x128x512 here (2 GFLOP/s vs 123 for scipy's). One pool, always.
"""
import numpy as np

from .jit import kernel


@kernel
def matmul(a, b, out):
    """out (M, N) = a (M, K) @ b (K, N). a and b may be C- or F-contiguous (transposed views are free);
    out must be C-contiguous and all three the same float dtype."""
    np.dot(a, b, out)


_SET_THREADS = None
_CURRENT: int | None = None


def _find_setter():
    """scipy's OpenBLAS `set_num_threads`, found among the loaded libraries (None if unavailable)."""
    import ctypes
    import glob
    import os

    import scipy
    libs = glob.glob(os.path.join(os.path.dirname(scipy.__file__), os.pardir, "scipy.libs", "*openblas*"))
    for path in libs:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in ("scipy_openblas_set_num_threads", "openblas_set_num_threads",
                     "scipy_openblas_set_num_threads64_", "openblas_set_num_threads64_"):
            fn = getattr(lib, name, None)
            if fn is not None:
                return fn
    return False


def set_blas_threads(n: int) -> None:
    """Set the thread count of the BLAS behind np.dot in Numba (scipy's OpenBLAS). charrnn runs its two
    stream groups on two threads of its own, each with single-threaded BLAS (faster here than one
    2-thread BLAS call per step, and immune to idle BLAS workers spinning). No-op if not found."""
    global _SET_THREADS, _CURRENT
    if _CURRENT == n:
        return
    if _SET_THREADS is None:
        _SET_THREADS = _find_setter()
    if _SET_THREADS:
        _SET_THREADS(int(n))
    _CURRENT = n

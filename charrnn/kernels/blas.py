"""Every GEMM in charrnn: numpy's matmul on numpy's OpenBLAS, single-threaded.

Measured side by side on this machine (AVX-512 Xeon, 2 cores): numpy's OpenBLAS beat scipy's (the one
behind np.dot inside Numba) at every shape we use, per-step 32x512x2048 84 vs 54 GFLOP/s, and a whole
LSTM 2x512 step 569 vs 678 ms with the large GEMMs on numpy's. Both builds are pinned to one thread
(`set_blas_threads(1)`) because charrnn runs its two stream groups on two threads of its own; with
2-thread pools the idle pool's spinning workers steal the core the busy one needs (GRU 2x256 step
1.76 s vs 0.36 s), and numpy's 2-thread build ran 50x128x512 at 2 GFLOP/s.
"""
import numpy as np



def matmul(a, b, out):
    """out (M, N) = a (M, K) @ b (K, N). a and b may be transposed views (BLAS takes the transpose
    flags); out must be C-contiguous and all three the same float dtype."""
    np.matmul(a, b, out=out)


_SET_THREADS = None
_CURRENT: int | None = None


def _find_setters():
    """`set_num_threads` of scipy's OpenBLAS (np.dot in Numba) and numpy's (np.matmul), found among
    the wheels' bundled libraries; empty if unavailable (e.g. another BLAS vendor)."""
    import ctypes
    import glob
    import os

    import scipy
    found = []
    for pkg in (scipy, np):
        libs = glob.glob(os.path.join(os.path.dirname(pkg.__file__), os.pardir, pkg.__name__ + ".libs",
                                      "*openblas*"))
        fn = _setter_in(libs)
        if fn is not None:
            found.append(fn)
    return found


def _setter_in(libs):
    import ctypes
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
    return None


def set_blas_threads(n: int) -> None:
    """Set the thread count of both OpenBLAS builds (scipy's behind np.dot in Numba, numpy's behind
    np.matmul). charrnn runs its two stream groups on two threads of its own, each with
    single-threaded BLAS: faster here than 2-thread BLAS calls per step, and single-threaded OpenBLAS
    has no idle workers spinning against our threads. No-op where the libraries are not found."""
    global _SET_THREADS, _CURRENT
    if _CURRENT == n:
        return
    if _SET_THREADS is None:
        _SET_THREADS = _find_setters()
    for fn in _SET_THREADS:
        fn(int(n))
    _CURRENT = n

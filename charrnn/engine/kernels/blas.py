"""Every GEMM in charrnn: numpy's matmul on numpy's OpenBLAS, single-threaded.

Measured side by side on this machine (AVX-512 Xeon, 2 cores): numpy's OpenBLAS beat scipy's (the one
behind np.dot inside Numba) at every shape we use, per-step 32x512x2048 84 vs 54 GFLOP/s, and a whole
LSTM 2x512 step 569 vs 678 ms with the large GEMMs on numpy's. BLAS is pinned to one thread during a pass
(`single_threaded_blas`) because charrnn runs its two stream groups on two threads of its own; with
2-thread pools the idle pool's spinning workers steal the core the busy one needs (GRU 2x256 step
1.76 s vs 0.36 s), and numpy's 2-thread build ran 50x128x512 at 2 GFLOP/s.
"""
import threading
from contextlib import contextmanager

import numpy as np



def matmul(a, b, out):
    """out (M, N) = a (M, K) @ b (K, N). a and b may be transposed views (BLAS takes the transpose
    flags); out must be C-contiguous and all three the same float dtype."""
    np.matmul(a, b, out=out)


_WARM = threading.local()


def warm_up_thread() -> None:
    """One GEMM with a wide right-hand side, once per thread, before that thread's first pass.

    Measured on an AMD EPYC (Zen 1, AVX2, numpy's OpenBLAS 0.3.31 Haswell kernel, a Firecracker VM):
    single-threaded, (3200,256) @ (256,256) ran at 45 ms (9 GFLOP/s) until the thread had made a GEMM
    with N >= ~512 and enough rows, and at 12 ms afterwards; no page faults differ and glibc's malloc
    thresholds do not matter. (64,256) @ (256,1024) in the main thread was not enough for the pool
    threads; (256,256) @ (256,1024) in each thread is. LSTM and GRU passes make such a call anyway (gate
    width 3-4 H); a 2x256 RNN never did and trained at ~185 ms a step through `charrnn train` instead of
    ~130 (17-20k chars/s before any warm-up). Costs ~4 ms, once per thread."""
    if getattr(_WARM, "done", False):
        return
    _WARM.done = True
    np.matmul(np.ones((256, 256), np.float32), np.ones((256, 1024), np.float32))


_OPENBLAS = None  # (get_num_threads, set_num_threads) of numpy's OpenBLAS; False if not found


def _numpy_openblas():
    """numpy wheels bundle OpenBLAS as libscipy_openblas64_ with suffixed symbol names; other builds
    (MKL, system BLAS) are left alone."""
    global _OPENBLAS
    if _OPENBLAS is None:
        import ctypes
        import glob
        import os
        _OPENBLAS = False
        libdir = os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs")
        for path in glob.glob(os.path.join(libdir, "*openblas*")):
            try:
                lib = ctypes.CDLL(path)
            except OSError:
                continue
            for suffix in ("64_", ""):
                for prefix in ("scipy_openblas", "openblas"):
                    get = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
                    put = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
                    if get is not None and put is not None:
                        _OPENBLAS = (get, put)
                        return _OPENBLAS
    return _OPENBLAS


@contextmanager
def single_threaded_blas():
    """Run a model pass with numpy's OpenBLAS on one thread, then restore the caller's setting.

    charrnn runs its two stream groups on two threads of its own, each with single-threaded BLAS:
    faster here than 2-thread BLAS calls per step, and a single-threaded OpenBLAS has no idle workers
    spinning against our threads. Restoring keeps other numpy code in the same process at full speed."""
    lib = _numpy_openblas()
    previous = lib[0]() if lib else 1
    if previous != 1:
        lib[1](1)
    try:
        yield
    finally:
        if previous != 1:
            lib[1](previous)

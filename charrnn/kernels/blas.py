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

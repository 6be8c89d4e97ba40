"""The barrier a team of threads passes once per time step and between the phases of a training pass.

Built on kernels/sync.py's atomics. Each thread keeps its own count in `flags` (slot me * STRIDE, its own
cache lines); `step` raises it by one and waits until every other thread's count has reached it. Slot
nthreads * STRIDE is the abort flag: a thread whose Python work raised sets it (`abort`), and the others'
waits then return at once instead of spinning forever; the caller re-raises the error after the pass.
"""
import numpy as np

from .jit import kernel
from .sync import STRIDE, load_acquire, store_release, wait_or_abort


def make_flags(nthreads: int) -> np.ndarray:
    """Zeroed counters for a team of nthreads, plus the abort slot."""
    return np.zeros((nthreads + 1) * STRIDE, np.int64)


@kernel
def step(flags, me, nthreads):
    """Barrier: returns once every thread of the team has called step as often as this one (or the
    team was aborted). One thread alone returns at once."""
    count = load_acquire(flags, me * STRIDE) + 1
    store_release(flags, me * STRIDE, count)
    wait_or_abort(flags, me, nthreads, count, nthreads * STRIDE)


@kernel
def abort(flags, nthreads):
    """Release every waiting thread of the team (a member failed)."""
    store_release(flags, nthreads * STRIDE, 1)

"""The barrier a team of threads passes once per time step and between the phases of a training pass.

Built on kernels/sync.py's atomics. Each thread keeps its own count in `flags` (slot me * STRIDE, its own
cache lines); `step` raises it by one and waits until every other thread's count has reached it. Slot
nthreads * STRIDE is the abort flag: a thread whose Python work raised sets it (`abort`), and the others'
waits then return at once instead of spinning forever; the caller re-raises the error after the pass.
"""
import numpy as np

from .jit import kernel
from .sync import STRIDE, SPINS_BEFORE_YIELD, cpu_relax, load_acquire, os_yield, store_release


def make_flags(nthreads: int) -> np.ndarray:
    """Zeroed counters for a team of nthreads, plus the abort slot."""
    return np.zeros((nthreads + 1) * STRIDE, np.int64)


@kernel
def step(flags, me, nthreads):
    """Barrier: returns once every thread of the team has called step as often as this one (or the
    team was aborted). One thread alone returns at once."""
    count = load_acquire(flags, me * STRIDE) + 1
    store_release(flags, me * STRIDE, count)
    for t in range(nthreads):
        if t != me:
            spins = 0
            while load_acquire(flags, t * STRIDE) < count:
                if load_acquire(flags, nthreads * STRIDE) != 0:
                    return
                if spins < SPINS_BEFORE_YIELD:
                    spins += 1
                    cpu_relax()
                else:
                    os_yield()


@kernel
def abort(flags, nthreads):
    """Release every waiting thread of the team (a member failed)."""
    store_release(flags, nthreads * STRIDE, 1)

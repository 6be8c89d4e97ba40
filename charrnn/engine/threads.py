"""How many threads charrnn runs its own work on, and the one thread pool it runs them on.

`threads()` is the count: the cores this process may use (its CPU affinity), capped by
CHARRNN_THREADS (a sweep gives each of its workers a share of the cores) and by `set_threads(n)`
(`charrnn train --threads N`). Results never depend on it: every decomposition of the work is fixed by
the shapes, and the count only says how many threads share it out (at most MAX_WORKERS + 1: the pool's
workers and the calling thread). A forked child gets a fresh pool (the parent's worker threads do not
exist there, and work submitted to their queue would never run).
"""
import os
from concurrent.futures import ThreadPoolExecutor

_POOL: ThreadPoolExecutor | None = None
MAX_WORKERS = 64  # workers start on demand (an executor starts one only when none is idle)
_REQUESTED: int | None = None  # set_threads(n); None: follow usable_cores()


def usable_cores() -> int:
    """The cores this process may use: its CPU affinity, capped by CHARRNN_THREADS when set (a sweep
    runs several trials side by side and gives each its share). Results never depend on it."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
    cap = os.environ.get("CHARRNN_THREADS", "")
    return max(1, min(n, int(cap))) if cap.isdigit() else n


def set_threads(n: int | None) -> None:
    """Run on n threads from now on (None: back to usable_cores()). n may exceed the core count (the
    tests oversubscribe to check that the numbers do not change)."""
    global _REQUESTED
    if n is not None and (not isinstance(n, int) or n < 1):
        raise ValueError(f"threads must be a positive integer, got {n!r}")
    _REQUESTED = n


def requested() -> int | None:
    """The count set_threads(n) asked for (None: none, the count follows usable_cores())."""
    return _REQUESTED


def threads() -> int:
    """The thread count charrnn's passes run on: set_threads(n) if given, else usable_cores()."""
    return min(MAX_WORKERS + 1, _REQUESTED if _REQUESTED is not None else usable_cores())


def pool() -> ThreadPoolExecutor:
    """The shared pool. A team needs all its threads running at once (they meet at spin barriers), so
    a pass never asks for more than MAX_WORKERS besides the calling thread (set_threads caps it)."""
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=MAX_WORKERS, thread_name_prefix="charrnn")
    return _POOL


def _forget_pool() -> None:
    global _POOL
    _POOL = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)

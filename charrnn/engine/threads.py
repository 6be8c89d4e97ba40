"""The one thread pool charrnn runs its own work on (training's two stream groups, the sampler's
second part), and how many cores this process may use.

Workers start on demand (an executor starts one only when no idle one is there), so the cap costs
nothing until used: the training pass maps its two groups onto two; the sampler runs a team of up to
one thread per core (more when a test oversubscribes), the calling thread being one of them, and needs
all of them running at once (they meet at spin barriers). A forked child gets a fresh pool (the
parent's worker threads do not exist there, and work submitted to their queue would never run).
"""
import os
from concurrent.futures import ThreadPoolExecutor

_POOL: ThreadPoolExecutor | None = None
MAX_WORKERS = 64  # the most threads besides the caller one call may keep busy at once


def pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=MAX_WORKERS, thread_name_prefix="charrnn")
    return _POOL


def _forget_pool() -> None:
    global _POOL
    _POOL = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def usable_cores() -> int:
    """The cores this process may use: its CPU affinity, capped by CHARRNN_THREADS when set (a sweep
    runs several trials side by side and gives each its share). Results never depend on it."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
    cap = os.environ.get("CHARRNN_THREADS", "")
    return max(1, min(n, int(cap))) if cap.isdigit() else n

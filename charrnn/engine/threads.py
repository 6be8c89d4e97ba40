"""The one thread pool charrnn runs its own work on (training's two stream groups, the sampler's
second part), and how many cores this process may use.

Two workers: the training pass maps its two groups onto them; the sampler submits one helper and runs
its other part on the calling thread. A forked child gets a fresh pool (the parent's worker threads
do not exist there, and work submitted to their queue would never run).
"""
import os
from concurrent.futures import ThreadPoolExecutor

_POOL: ThreadPoolExecutor | None = None


def pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="charrnn")
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

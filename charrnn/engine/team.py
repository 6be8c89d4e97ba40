"""A team of threads that runs one training pass together, and the fixed splits that share its work.

Every thread of the team runs the same sequence of phases (docs/architecture.md, "Cores"). Within a
phase, work comes as a list of tasks whose boundaries depend on the shapes only (`split`, `chunks`);
thread `me` of n takes tasks me, me + n, me + 2n, ... Each task writes its own part of the output with
the same code and the same summation order whatever n is, so the numbers never depend on the thread
count. `sync` is the barrier between phases; the recurrent T loops pass the same barrier once per step
(kernels/team.py), each thread computing its own panels of hidden units.
"""
import threading

import numpy as np

from .kernels import team as _k
from .threads import pool

# Task counts: powers of two, so they share out evenly over teams of 2^k threads.
_COUNTS = (32, 16, 8, 4, 2, 1)
_ONE_AT_A_TIME = threading.Lock()


def split(n: int, parts: int, align: int = 1) -> list[tuple[int, int]]:
    """[0, n) cut into `parts` contiguous ranges, as even as whole `align`-sized units allow (the last
    range takes the remainder of an n that is not a multiple of align)."""
    units = -(-n // align)
    parts = max(1, min(parts, units))
    out, start = [], 0
    for j in range(parts):
        end = min(n, (units * (j + 1) // parts) * align)
        out.append((start, end))
        start = end
    return out


def chunks(n: int, min_size: int, align: int = 1, limit: int = _COUNTS[0]) -> list[tuple[int, int]]:
    """[0, n) in the largest task count of _COUNTS (at most `limit`) whose tasks keep at least min_size
    elements: big enough for a GEMM to run at speed, many enough to feed the threads."""
    for c in _COUNTS:
        if c <= limit and n // c >= min_size:
            return split(n, c, align)
    return [(0, n)]


class Team:
    """n threads passing barriers together (thread `me` of them runs its share of every phase)."""

    def __init__(self, n: int):
        self.n = n
        self.flags = _k.make_flags(n)

    def sync(self, me: int) -> None:
        """Wait until every thread of the team has reached this point."""
        if self.n > 1:
            _k.step(self.flags, me, self.n)

    def mine(self, me: int, tasks: list) -> list:
        """This thread's share of a phase's tasks (a fixed list): every n-th one, from the me-th."""
        return tasks[me::self.n]

    def panels(self, me: int, count: int) -> tuple[int, int]:
        """This thread's range of a recurrent kernel's `count` panels."""
        return split(count, self.n)[me] if count >= self.n else (min(me, count), min(me + 1, count))


def run_threads(n: int, body, teams: list[Team]) -> None:
    """Run body(j) for j = 0..n-1 at once, on the calling thread (j = 0) and n - 1 pool() workers (a pass
    is never started from inside a pool worker, so they are idle). If one raises, every team is
    released from its barriers (their threads run on through garbage to the end) and the first error
    is raised here."""
    for t in teams:
        t.flags[:] = 0
    errors: list[BaseException] = []

    def member(j: int) -> None:
        try:
            body(j)
        except BaseException as e:  # noqa: BLE001 - re-raised below; the others must not wait forever
            errors.append(e)
            for t in teams:
                _k.abort(t.flags, t.n)

    if n == 1:
        body(0)
        return
    # One multi-threaded pass at a time: two passes started together from two threads could each get
    # only part of the pool's workers and wait at their barriers for each other forever.
    with _ONE_AT_A_TIME:
        futures = []
        try:
            for j in range(1, n):
                futures.append(pool().submit(member, j))
            member(0)
        except BaseException:
            # A KeyboardInterrupt between two submits or before member(0) started: the submitted members
            # would wait at a barrier forever for one that never runs (and the interpreter for them at exit).
            for t in teams:
                _k.abort(t.flags, t.n)
            raise
        finally:
            for f in futures:
                f.result()
    if errors:
        raise errors[0]


def run_shared(n: int, count: int, job) -> None:
    """job(i) for i = 0..count-1, independent jobs shared out over min(n, count) threads (thread j runs
    j, j + n, ...): for element-wise work in fixed pieces, whose results do not depend on who runs them."""
    n = min(n, count)

    def member(j: int) -> None:
        for i in range(j, count, n):
            job(i)

    run_threads(n, member, [])


def solo_flags() -> np.ndarray:
    """Barrier flags for a kernel run by one thread alone (its barriers return at once)."""
    return _k.make_flags(1)

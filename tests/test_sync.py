"""The spin barrier (charrnn.engine.kernels.sync) that keeps the sampler's two threads in step."""
import threading

import numba
import numpy as np

from charrnn.engine.kernels import sync
from charrnn.engine.kernels.jit import kernel


@kernel
def _relay(flags, me, nthreads, rounds, slots, seen):
    """Round i: thread (i % nthreads) writes i into slots[i]; after a barrier every thread reads it.
    A missing or reordered barrier shows up as a wrong value in seen (written without atomics)."""
    cnt = 0
    for i in range(rounds):
        if i % nthreads == me:
            slots[i] = i * 7 + 1
        cnt += 1
        sync.barrier(flags, me, nthreads, cnt)
        seen[me, i] = slots[i]


def _run(nthreads, rounds):
    flags = np.zeros(nthreads * sync.STRIDE, np.int64)
    slots = np.zeros(rounds, np.int64)
    seen = np.zeros((nthreads, rounds), np.int64)
    threads = [threading.Thread(target=_relay, args=(flags, me, nthreads, rounds, slots, seen))
               for me in range(1, nthreads)]
    for t in threads:
        t.start()
    _relay(flags, 0, nthreads, rounds, slots, seen)
    for t in threads:
        t.join()
    return flags, seen


def test_barrier_makes_every_write_visible_to_every_thread():
    rounds = 200 if numba.config.DISABLE_JIT else 2000  # plain Python switches threads every 5 ms
    flags, seen = _run(2, rounds)
    want = np.arange(rounds) * 7 + 1
    for row in seen:
        np.testing.assert_array_equal(row, want)
    assert flags[0] == flags[sync.STRIDE] == rounds


def test_three_threads_and_one_thread():
    for n in (1, 3):
        _, seen = _run(n, 300)
        assert (seen == np.arange(300) * 7 + 1).all()


def test_wait_returns_once_a_late_thread_arrives():
    flags = np.zeros(2 * sync.STRIDE, np.int64)
    timer = threading.Timer(0.05, sync.arrive, args=(flags, 1, 1))
    timer.start()
    sync.wait(flags, 0, 2, 1)  # spins, then yields, until the timer thread arrives
    timer.join()
    assert flags[sync.STRIDE] == 1

"""A spin barrier for kernels running on several Python threads at once (nogil).

Numba has no atomics, so two llvmlite intrinsics supply them: `load_acquire(flags, i)` and
`store_release(flags, i, v)` on an int64 array, plus `cpu_relax()` (x86 `pause`, a no-op elsewhere)
for the spin. `arrive(flags, me, count)` publishes "thread `me` has arrived at barrier number
`count`"; `wait(flags, me, nthreads, count)` returns once every other thread has too (split so a
thread can do independent work in between); `barrier` is both. Counts only grow, so nothing is ever
reset while a thread may read it; each thread's counter sits on its own 128-byte stretch of `flags`
(index me * STRIDE) so the spinning reads do not false-share with the writes. After ~1 ms of
spinning a waiter calls sched_yield on each further check, so an oversubscribed machine (the other
thread not running) still makes progress. One barrier round trip costs ~0.2 us here.

Why not prange: a parallel region per character costs more than the character's work (~30 us), and
prange gives no guarantee that two iterations run at the same time, which a barrier needs. The
caller runs the threads itself and must start all of them (a missing thread means a spin forever).
"""
import os
import platform
import time

import numba
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .jit import kernel

STRIDE = 16  # int64 slots between two threads' counters: 128 bytes, two cache lines
SPINS_BEFORE_YIELD = 20000  # ~1 ms of `pause`: far above a normal wait (~0.2-20 us)

_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")
_POSIX = os.name == "posix"


def _item_pointer(context, builder, aryty, ary, idx):
    arr = context.make_array(aryty)(context, builder, ary)
    return cgutils.get_item_pointer(context, builder, aryty, arr, [idx])


@intrinsic
def _load_acquire_ir(typingctx, flags, idx):
    """flags[idx] read with acquire ordering (later reads cannot move before it)."""
    if not (isinstance(flags, types.Array) and flags.dtype == types.int64 and flags.ndim == 1):
        return None

    def codegen(context, builder, sig, args):
        ptr = _item_pointer(context, builder, sig.args[0], args[0], args[1])
        return builder.load_atomic(ptr, "acquire", 8)
    return types.int64(flags, idx), codegen


@intrinsic
def _store_release_ir(typingctx, flags, idx, value):
    """flags[idx] = value with release ordering (earlier writes are visible before it)."""
    if not (isinstance(flags, types.Array) and flags.dtype == types.int64 and flags.ndim == 1):
        return None

    def codegen(context, builder, sig, args):
        ptr = _item_pointer(context, builder, sig.args[0], args[0], args[1])
        val = context.cast(builder, args[2], sig.args[2], types.int64)
        builder.store_atomic(val, ptr, "release", 8)
        return context.get_dummy_value()
    return types.void(flags, idx, value), codegen


@intrinsic
def _cpu_relax_ir(typingctx):
    """The spin-wait hint (x86 `pause`): saves power and lets the other core's write arrive sooner."""
    def codegen(context, builder, sig, args):
        if _X86:
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), []),
                                                "llvm.x86.sse2.pause")
            builder.call(fn, [])
        return context.get_dummy_value()
    return types.void(), codegen


@intrinsic
def _os_yield_ir(typingctx):
    """Give the core away (POSIX sched_yield): a waiting thread that spun for long (the other thread
    is not running, e.g. the machine is oversubscribed) stops burning the time slice it needs."""
    def codegen(context, builder, sig, args):
        if _POSIX:
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(32), []),
                                                "sched_yield")
            builder.call(fn, [])
        return context.get_dummy_value()
    return types.void(), codegen


def _load_acquire_py(flags, idx):
    return int(flags[idx])


def _store_release_py(flags, idx, value):
    flags[idx] = value


def _cpu_relax_py():
    pass


def _os_yield_py():
    time.sleep(0)


if numba.config.DISABLE_JIT:  # plain Python (NUMBA_DISABLE_JIT=1): the GIL orders everything
    load_acquire, store_release = _load_acquire_py, _store_release_py
    cpu_relax, os_yield = _cpu_relax_py, _os_yield_py
else:
    load_acquire, store_release = _load_acquire_ir, _store_release_ir
    cpu_relax, os_yield = _cpu_relax_ir, _os_yield_ir


@kernel
def arrive(flags, me, count):
    """Publish that thread `me` has arrived at barrier number `count` (counts grow by one)."""
    store_release(flags, me * STRIDE, count)


@kernel
def wait(flags, me, nthreads, count):
    """Wait until every other thread has arrived at barrier number `count`."""
    wait_or_abort(flags, me, nthreads, count, -1)


@kernel
def wait_or_abort(flags, me, nthreads, count, abort_slot):
    """wait(), returning early once flags[abort_slot] is non-zero (abort_slot -1: never): a team whose
    member failed is released instead of spinning forever (kernels/team.py). Returns False if aborted."""
    for t in range(nthreads):
        if t != me:
            spins = 0
            while load_acquire(flags, t * STRIDE) < count:
                if abort_slot >= 0 and load_acquire(flags, abort_slot) != 0:
                    return False
                if spins < SPINS_BEFORE_YIELD:
                    spins += 1
                    cpu_relax()
                else:
                    os_yield()
    return True


@kernel
def barrier(flags, me, nthreads, count):
    """arrive + wait: every thread's work before barrier `count` is visible to every thread after it."""
    arrive(flags, me, count)
    wait(flags, me, nthreads, count)


"""A training run on the K ranks of an MPI world (distributed/world.py): data-parallel, the same numbers as
one process.

Each rank owns a fixed contiguous share of the batch's B streams: rank r trains streams r*B/K .. (r+1)*B/K
(K must divide B). It reads the same data offsets as a one-process run, draws the same dropout keys from
the same Generator and fills its streams' rows of the masks, and starts from the same init (checked by a
checksum across the ranks). Per step, one Allreduce sums the flat float32 gradient (each rank's is
already normalised by the whole batch's B*T characters) and a second, of four float64 numbers, sums the
loss and carries what every rank must agree on: a Ctrl-C/SIGTERM seen by any rank, and rank 0's clock
(the time budget and a time-bound schedule read it). Clipping, the update and every stop decision then run
on identical numbers on every rank, so the weights stay identical; the checksum is compared at every
checkpoint, and a mismatch stops the run.

Rank 0 plans the run (the others receive the plan), holds the run directory's lock, encodes the corpus
into the run's cache (the others then map it), shows progress and samples, writes metrics.jsonl and the
checkpoints; the carried state of every stream is gathered into each checkpoint, so it is the file a
one-process run writes, and a resume may use any K that divides B.

A Ctrl-C on Open MPI's mpirun reaches the ranks as SIGCONT, then (odls_base_sigkill_timeout seconds later)
SIGTERM, then SIGKILL; mpirun forwards no output in between (distributed/world.py). So at a SIGCONT each
rank holds before its step's small reduction, printing nothing, until a signal comes (or the grace is over:
then it was an ordinary resume, e.g. after Ctrl-Z, and training goes on); the SIGTERM then travels in that
very reduction, and the ranks apply the step, write one checkpoint and exit as `charrnn train` does.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np

from ..checkpoints import meta as M
from ..checkpoints import rundir
from ..engine.model import State
from ..errors import CharrnnError, UsageError
from . import run as R
from .plan import RESUME, Plan
from .trainer import Interrupted, Trainer

# Beyond mpirun's SIGCONT-to-SIGTERM wait, how long a held rank still waits for the SIGTERM (a loaded host,
# a remote daemon told a little later) before it takes the SIGCONT for an ordinary resume
HOLD_MARGIN = 2.0


def train(world, make_plan, *, live=None, console=None, on_eval=None, started=None) -> Path:
    """charrnn.train on every rank of `world`; make_plan() plans the run (rank 0 only)."""
    if not world.root:  # rank 0 says everything a one-process run says on stdout (e.g. the best checkpoint)
        sys.stdout = open(os.devnull, "w")
    try:
        _share_cores(world)
        plan = _agreed(world, lambda: _checked_plan(world, make_plan()) if world.root else None, "plan")
        plan = Plan.from_json(world.broadcast_text(plan.to_json() if world.root else None))
        # Plain lines unless asked otherwise: Open MPI gives the ranks on mpirun's host a pseudo-terminal for
        # stdout, whatever mpirun's own stdout is (a file would get the live bar's redraws)
        best = _execute(world, plan, False if live is None else live, console, on_eval, started)
        world.ended_together = True
        return best
    except CharrnnError as e:
        if getattr(e, "agreed", False) or isinstance(e, Interrupted):
            world.ended_together = True  # every rank stops here with this error: MPI ends normally
            if not world.root:
                e.quiet = True
        world.exit_code = e.exit_code
        raise
    except SystemExit as e:
        world.exit_code = e.code if isinstance(e.code, int) else 1
        raise
    except KeyboardInterrupt:
        world.exit_code = 130
        raise


def _agreed(world, fn, what: str):
    """fn() on every rank, then agree: when any rank raised a CharrnnError, every rank raises the lowest
    failing rank's (rank 0 says it; the others leave quietly with its exit code)."""
    try:
        result, code, text = fn(), 0, ""
    except CharrnnError as e:
        result, code, text, mine = None, e.exit_code or 1, e.one_line(), e
    failed = world.first_failure(code, text)
    if failed is None:
        return result
    rank, code, text = failed
    if world.rank == rank and world.root:
        err = mine
    elif world.root:
        err = CharrnnError(f"rank {rank} of {world.size}, preparing the {what}: {text}", exit_code=code)
    else:
        err = CharrnnError(text, exit_code=code)
        err.quiet = True
    err.agreed = True
    raise err


def divides(world, B: int) -> None:
    """UsageError unless the world's size divides batch_size B, saying which rank counts would."""
    K = world.size
    if B % K == 0:
        return
    fits = [d for d in range(1, B + 1) if B % d == 0]
    shown = ", ".join(map(str, fits[:-1])) + f" or {fits[-1]}" if len(fits) > 1 else str(fits[0])
    raise UsageError(f"batch_size {B} cannot be shared by {K} ranks (each rank trains batch_size/K streams)",
                     f"start {shown} ranks (mpirun -n K), or set --batch-size to a multiple of {K}")


def _checked_plan(world, plan: Plan) -> Plan:
    if plan.kind == RESUME and plan.done is None:
        divides(world, M.batch_shape(plan.checkpoint_loaded().meta)[0])
    elif plan.done is None:
        divides(world, plan.config.train.batch_size)
    return plan


def _share_cores(world) -> None:
    """Without --threads, K ranks on one host divide its cores; a launcher that bound each rank to its
    cores (a smaller CPU affinity than the host's) has shared them already."""
    from ..engine import threads
    if threads.requested() is not None:
        return
    usable, host = threads.usable_cores(), os.cpu_count() or 1
    bound = len(os.sched_getaffinity(0)) < host if hasattr(os, "sched_getaffinity") else False
    threads.set_threads(usable if bound else max(1, usable // world.local_size))


def _execute(world, plan: Plan, live, console, on_eval, started) -> Path:
    if plan.done is not None:  # a finished run: rank 0 says so and repairs best.npz; nothing to train
        return R._nothing_to_train(plan, plan.checkpoint_loaded(), console) if world.root else rundir.best(plan.run_dir)
    loaded = plan.checkpoint_loaded()
    resumed = loaded if plan.kind == RESUME else None
    with contextlib.ExitStack() as held:
        remove, created, had_cache = None, [], True

        def check_and_encode():
            nonlocal remove, created, had_cache
            created = rundir.make(plan.run_dir)
            try:
                held.enter_context(rundir.lock(plan.run_dir))
            except BaseException:
                if not isinstance(sys.exc_info()[1], rundir.Busy):
                    rundir.remove_created(created)
                created = []
                raise
            had_cache = rundir.cache_dir(plan.run_dir).exists()
            remove = R._replaced_files(plan, resumed)
            rundir.check_files(plan.run_dir)
            return R._prepare(plan, loaded, on_eval, started, make=_maker(world), root=True)

        def build():
            return R._prepare(plan, loaded, on_eval, started, make=_maker(world), root=False)

        try:
            # rank 0 first: it writes the corpus cache that the others then map
            prepared = _agreed(world, check_and_encode if world.root else lambda: None, "run")
            prepared = _agreed(world, build if not world.root else lambda: prepared, "run") or prepared
        except BaseException:
            if world.root:
                rundir.remove_created(created)
                if not had_cache:
                    shutil.rmtree(rundir.cache_dir(plan.run_dir), ignore_errors=True)
            raise
        trainer, corpus, warning = prepared
        trainer.check_same("at the start")
        if world.root:
            return R._train(plan, trainer, corpus, warning, remove, resumed, live, console)
        return trainer.run(_Silent())


def _maker(world):
    return lambda *args, **kwargs: RankTrainer(world, *args, **kwargs)


class _Silent:
    """The reporter of ranks other than 0: rank 0 shows and logs everything."""
    smoothed_loss = None

    def step(self, m): pass
    def warn(self, text): pass
    def sample(self, step, text): pass
    def end(self, *args, **kwargs): pass


class RankTrainer(Trainer):
    """The Trainer of one rank: its streams' share of every step, reduced over the world."""

    def __init__(self, world, *args, **kwargs):
        self.world = world
        super().__init__(*args, **kwargs)
        divides(world, self.B)  # a short corpus can fit the batch smaller than batch_size
        n = self.B // world.size
        self.streams = (world.rank * n, (world.rank + 1) * n)
        self.state = self._mine(self.state)
        self._clock: float | None = None  # rank 0's elapsed time as of the last step's reduction
        self._continued: float | None = None  # when a SIGCONT came (Open MPI's kill sequence begins)

    def _mine(self, state: State) -> State:
        b0, b1 = self.streams
        return State(state.h[:, b0:b1].copy(), None if state.c is None else state.c[:, b0:b1].copy())

    def _fresh_state(self) -> State:
        return self.model.zero_state(self.streams[1] - self.streams[0])

    def parallel_header(self) -> dict[str, str]:
        w = self.world
        return {"ranks": f"{w.size} MPI ranks x {self.B // w.size} streams ({w.local_size} on this host)"}

    # -- the agreed clock and stop ----------------------------------------------------------------
    def elapsed(self) -> float:
        return super().elapsed() if self._clock is None else self._clock

    def _on_signal(self, signum: int) -> None:
        self.reporter.warn("stopping after this step and writing a checkpoint (again to quit at once)")

    def _install_signals(self):
        restore = super()._install_signals()
        if self.world.kill_grace is None or threading.current_thread() is not threading.main_thread():
            return restore
        previous = signal.signal(signal.SIGCONT, lambda signum, frame: setattr(self, "_continued", time.monotonic()))

        def both():
            signal.signal(signal.SIGCONT, previous)
            restore()
        return both

    def _hold(self) -> None:
        """After a SIGCONT: wait (printing nothing) for the SIGTERM of Open MPI's kill sequence, or a Ctrl-C;
        past the grace it was an ordinary resume."""
        since, self._continued = self._continued, None
        if since is None:
            return
        end = since + self.world.kill_grace + HOLD_MARGIN
        while self.signalled is None and time.monotonic() < end:
            time.sleep(0.02)

    def run(self, reporter=None) -> Path:
        if not hasattr(self, "_t0"):
            self._t0 = time.perf_counter()
        self._clock = None
        self._clock = float(self.world.sum([super().elapsed() if self.world.root else 0.0])[0])
        return super().run(reporter)

    # -- one step -----------------------------------------------------------------------------------
    def _next_batch(self):
        xy = super()._next_batch()
        if xy is None:
            return None
        b0, b1 = self.streams
        return np.ascontiguousarray(xy[0][b0:b1]), np.ascontiguousarray(xy[1][b0:b1])

    def _gradients(self, x, y):
        masks = self.model.dropout_masks(self.rng, self.cfg.model.dropout, self.B, self.T, streams=self.streams)
        loss, state = self.model.forward_backward(x, y, self.state, self.grads, masks, mean_over=self.B * self.T)
        self.world.sum_in_place(self.grads.flat)
        self._hold()  # a signal that ends the hold is agreed in the reduction below, at this very step
        sig = self.signalled
        root_clock = Trainer.elapsed(self) if self.world.root else 0.0
        total, sigint, sigterm, self._clock = self.world.sum(
            [loss, sig == signal.SIGINT, sig == signal.SIGTERM, root_clock])
        if self.stop_signal is None and (sigint or sigterm):
            self.stop_signal = signal.SIGTERM if sigterm else signal.SIGINT
        return float(total), state

    def train_step(self, x, y) -> float:
        try:
            return super().train_step(x, y)
        except CharrnnError as e:  # diverged: every rank saw the same losses
            e.agreed = True
            raise

    # -- evaluation and checkpoints ---------------------------------------------------------------
    def evaluate(self, weights: str = "saved") -> float | None:
        """The validation loss of one process, each rank taking its share of the evaluation streams."""
        vb = self.val_batches
        if vb is None:
            return None
        K, r, bv = self.world.size, self.world.rank, vb.batch_size
        b0, b1 = bv * r // K, bv * (r + 1) // K  # fewer streams than ranks: some ranks have none
        total, n = 0.0, 0
        if b1 > b0:
            state = self.model.zero_state(b1 - b0)
            with self.averaged() if weights == "saved" else contextlib.nullcontext():
                for i in range(vb.batches_per_epoch()):
                    x, y = vb.batch(i)
                    s, state = self.model.loss(np.ascontiguousarray(x[b0:b1]), np.ascontiguousarray(y[b0:b1]),
                                               state)
                    total, n = total + s, n + (b1 - b0) * x.shape[1]
        total, n = self.world.sum([total, n])
        return float(total / n)

    def check_same(self, when: str) -> None:
        """Stop every rank when the weights (or optimizer moments) differ between ranks."""
        bad = self.world.differing(self.model.params.flat, *self.opt.state_arrays().values())
        if bad:
            ranks = ", ".join(map(str, bad))
            err = CharrnnError(f"the weights of rank {ranks} differ from rank 0's {when}; training stopped "
                               "before they drift apart",
                               f"continue from the last checkpoint: charrnn train --resume {self.run_dir} "
                               "(and report this: the ranks should compute identical updates)")
            err.agreed = True
            raise err

    def save(self, val_loss: float | None) -> Path | None:
        self.check_same(f"at step {self.step}")
        return super().save(val_loss)

    def _write(self, arrays: dict, val_loss: float | None, improved: bool) -> Path | None:
        h = self.world.gather_streams(self.state.h)  # every rank: rank 0 receives every stream's state
        c = None if self.state.c is None else self.world.gather_streams(self.state.c)
        if not self.world.root:
            return None
        mine, self.state = self.state, State(h, c)
        try:
            return super()._write(arrays, val_loss, improved)
        finally:
            self.state = mine

    def sample_text(self) -> str:
        return super().sample_text() if self.world.root else ""

"""The multi-stream sampler: one model, N stream slots, each with its own state, previous character,
generator and draw settings, run on one thread or many (charrnn.engine.kernels.sampler runs the steps,
sampling/packing.py holds its copy of the weights).

What a stream's text depends on: the model's weights (as of the last reset() or pack()), its own prime,
its own seed and choice index, its own settings and how many characters it has drawn. Never on the
slot it sits in, on N, on which other streams run beside it, on how many characters one run() call
draws, nor on the thread count. That holds by construction:
* every stream's arithmetic is the same code over the same packed weights, whatever other streams are
  in the call (kernels/sampler.py: each output of a product is one chain of multiply-adds of that
  stream's inputs, whichever streams share the micro-kernel's block);
* the hidden units are cut into parts by the model's shape alone (parts_for); a part's arithmetic is the
  same code whichever thread owns it, and every thread of a team decodes and draws the same characters;
* each stream has its own xoroshiro128++ generator (seed_streams).

How the work is spread (plan()): the active streams are cut into groups that run side by side on their
own threads (no barriers between groups); within a group a team of threads splits the parts of the hidden
units, in step through spin barriers (kernels/sync.py), one barrier per layer per character.
"""
from __future__ import annotations

import time
import weakref

import numpy as np

from ..data.vocab import Vocab
from ..engine.kernels import sampler as K
from ..engine.kernels.gemm import padded
from ..engine.kernels.sync import STRIDE
from ..engine.model import Model, State
from ..engine.threads import pool
from ..engine.threads import threads as threads_to_use
from .packing import Weights, parts_for
from .seeds import seed_streams

__all__ = ["Sampler", "parts_for", "seed_streams"]

# A team never gives a thread fewer weight bytes per character than this: below it a thread's share of
# the weights takes less time to stream than the barriers cost (measured 1 vs 2 threads: crossover at
# 350-450 KB per character for the pair; benchmarks/README.md, "Sampling on N threads").
THREAD_MIN_BYTES = 192 * 1024
# Calls shorter than this many characters run on one thread (handing work to the pool costs ~50 us).
THREADS_MIN_STEPS = 8
# With at least this many active streams per thread, streams are split over threads (each thread runs
# whole streams, no barriers) rather than hidden units.
STREAMS_PER_THREAD = 2
# A team's step that takes longer than one thread reading every weight at this rate (below any DRAM's)
# means the team's threads are not all running: other processes hold the cores, and each barrier waits
# for a scheduler time slice (measured on this 2-core machine under a load of 10: 2 threads 5-50x slower
# than 1). The measured rule then runs whole streams per thread (no barriers) for TEAM_BACKOFF_S seconds
# before trying the team again. The text is the same either way.
TEAM_SLOW_BYTES_PER_S = 3e9
TEAM_BACKOFF_S = 2.0


def _pool_workers() -> int:
    """How many jobs the shared pool runs at once: a team of T threads (the caller and T - 1 jobs that meet
    at spin barriers) must never wait for a worker, or it spins forever."""
    return int(getattr(pool(), "_max_workers", 1))  # ThreadPoolExecutor's cap (CPython, since 3.2)


def _setting(name: str, value, n: int, dtype) -> np.ndarray:
    a = np.asarray(value, dtype)
    if a.ndim == 0:
        return np.full(n, a, dtype)
    if a.shape != (n,):
        raise ValueError(f"{name} must be a scalar or have shape ({n},), got {a.shape}")
    return np.ascontiguousarray(a)


def _run_jobs(jobs: list, teams: list["_Team"]) -> None:
    """jobs[0] on this thread, the others on the pool. A KeyboardInterrupt can land anywhere in the Python
    code here, e.g. between two submits or before jobs[0] starts: then a submitted member would spin at a
    barrier forever for one that never runs (and the interpreter waits for it at exit). So on any exception
    every member of every team is marked as gone: those running finish on garbage (the call raised; its
    slots are undefined until restarted), and the ones submitted are waited for."""
    futures = []
    try:
        for job in jobs[1:]:
            futures.append(pool().submit(job))
        jobs[0]()
    except BaseException:
        for tm in teams:
            tm.flags[::STRIDE] = np.iinfo(np.int64).max
        raise
    finally:
        for f in futures:
            f.result()


class _Team:
    """Work buffers for one group of streams run by a team of threads: the group's state gathered
    from the slots (C-contiguous, so the kernel's loops vectorize), its workspaces, its barrier."""

    def __init__(self, sampler: "Sampler", ns: int, nthreads: int):
        L, H, V = sampler.shape.num_layers, sampler.shape.hidden_size, sampler.shape.vocab_size
        dt, P = sampler._dtype, sampler.num_parts
        self.ns, self.nthreads = ns, nthreads
        self.hb = np.zeros((2, L, ns, H), dt)
        self.c = np.zeros((L, ns, H), dt) if sampler.shape.cell == "lstm" else np.zeros((0, 0, 0), dt)
        self.flags = np.zeros(nthreads * STRIDE, np.int64)
        self.prevs = np.zeros((nthreads, ns), np.int32)
        self.rngs = np.zeros((nthreads, ns, 2), np.uint64)
        self.logits = np.zeros((nthreads, ns, padded(V)), dt)
        self.p = np.zeros((nthreads, V), np.float64)
        self.keys = np.zeros((nthreads, V), np.float64)
        self.order = np.zeros((nthreads, V), np.int64)
        self.gx = np.zeros((P, ns, sampler.weights.gpad), dt)
        self.gh = np.zeros((P, ns, sampler.weights.gpad), dt)
        self.ranges = [(P * me // nthreads, P * (me + 1) // nthreads) for me in range(nthreads)]


class Sampler:
    """The sampling kernel bound to one model and a fixed number of stream slots N.

    Per slot: the state (h, and c for LSTM), `prev` (the id the next step feeds) and a generator.
    Invariant: a slot's state is the one after consuming everything before its `prev`. The weights are
    a copy, packed per part of the hidden units, taken by reset() or pack() (so a trainer's samples use
    its current weights and a server's streams are not disturbed by a model changing under them).

    reset(prime, seed): every slot restarts alike (stream i gets generator i of seed_streams(seed, N)).
    restart(i, prime, seed, choice): slot i alone restarts, with generator `choice` of that seed, so a
    request's choice j reads the same text as stream j of `charrnn sample -N n --seed S`.
    run(n, ..., active=mask): every active slot draws n characters; settings are scalars or (N,) arrays.
    threads: None = as many as pay off on the cores this process may use (plan()), else exactly this
    many (tests oversubscribe); split: None (measured rule), "units" or "streams" (forces the
    decomposition; for tests and benchmarks). The text never depends on either. Not re-entrant. After
    a call that raised (e.g. KeyboardInterrupt), the slots it ran are undefined until restarted."""

    def __init__(self, model: Model, num_streams: int = 1, threads: int | None = None,
                 split: str | None = None):
        if num_streams < 1:
            raise ValueError("num_streams must be >= 1")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ValueError("threads must be None or an integer >= 1")
        if split not in (None, "units", "streams"):
            raise ValueError("split must be None, 'units' or 'streams'")
        shape = model.shape
        self.shape = shape
        self._model = weakref.ref(model)  # the module cache is keyed weakly by the model
        self.num_streams = N = int(num_streams)
        self.threads, self.split = threads, split
        H, L = shape.hidden_size, shape.num_layers
        self.weights = w = Weights(shape, model.params.dtype)
        self._dtype = dt = w.dtype
        self.num_parts, self.step_bytes = w.num_parts, w.step_bytes
        self.cell_code = K.CELL_CODES[shape.cell]
        self._h = np.zeros((L, N, H), dt)
        self._c = np.zeros((L, N, H), dt) if shape.cell == "lstm" else None
        self._prev = np.zeros(N, np.int32)
        self._rng = np.zeros((N, 2), np.uint64)
        self._teams: dict[tuple[int, int, int], _Team] = {}
        self._team_backoff_until = 0.0  # time.monotonic() before which the measured rule uses no team

    @property
    def model(self) -> Model:
        model = self._model()
        if model is None:
            raise ReferenceError("the sampler's model no longer exists")
        return model

    @property
    def prev(self) -> np.ndarray:
        """(N) int32: the id each slot feeds next (a view: writable)."""
        return self._prev

    @property
    def rng(self) -> np.ndarray:
        """(N, 2) uint64: the xoroshiro128++ state of each slot (a view: writable)."""
        return self._rng

    @property
    def state(self) -> State:
        """A copy of the current state as a Model State (h (L, N, H), c for LSTM)."""
        return State(self._h.copy(), None if self._c is None else self._c.copy())

    def start_id(self, vocab: Vocab | None) -> int:
        """The character fed first when there is no prime: '\\n' if in the vocabulary, else id 0."""
        return vocab.chars.index("\n") if vocab is not None and "\n" in vocab.chars else 0

    def _prime(self, prime_ids, start: int) -> np.ndarray:
        ids = np.asarray(prime_ids if prime_ids is not None else [], dtype=np.int64).reshape(-1)
        V = self.shape.vocab_size
        if ids.size and (ids.min() < 0 or ids.max() >= V):
            raise ValueError("prime ids outside the vocabulary")
        if not ids.size and not 0 <= start < V:
            raise ValueError("start id outside the vocabulary")
        return ids.astype(np.int32)

    def reset(self, prime_ids: np.ndarray | None = None, seed: int | None = 0, *, start: int = 0) -> None:
        """Re-read the model's weights (pack()), then restart every slot alike: zero state; with a
        non-empty prime, feed all but its last id and make that last id `prev`; without one, `prev` =
        start (generate.py's module docstring). Slot i gets generator i of seed_streams(seed, N); seed
        None leaves the generators alone."""
        ids = self._prime(prime_ids, start)
        self.pack()
        self._zero(slice(None))
        if ids.size > 1:
            forced = np.repeat(ids[:-1, None], self.num_streams, axis=1)
            self._launch(np.arange(self.num_streams), forced, 0, None)
        self._prev[:] = ids[-1] if ids.size else start
        if seed is not None:
            self._rng[:] = seed_streams(int(seed), self.num_streams)

    def restart(self, slot: int, prime_ids: np.ndarray | None = None, seed: int = 0, *, choice: int = 0,
                start: int = 0) -> None:
        """Restart slot `slot` alone (the others untouched), as reset() would with this prime, with
        generator `choice` of seed_streams(seed, .): choice j of a request with n choices reads the text
        of stream j of an n-stream reset with that seed. Packs the weights if nothing did yet."""
        self.restart_many([slot], [prime_ids], [seed], [choice], start=start)

    def restart_many(self, slots, primes, seeds, choices, *, start: int = 0) -> None:
        """restart(slots[i], primes[i], seeds[i], choice=choices[i]) for every i, the primes (of any
        lengths) fed in one call: they are right-aligned, and a slot holds its zero state until its own
        prime begins, so each slot ends exactly as its own restart() would leave it."""
        slots = np.asarray(slots, np.int64).reshape(-1)
        if not (len(primes) == len(seeds) == len(choices) == slots.size):
            raise ValueError("slots, primes, seeds and choices must have the same length")
        if slots.size and (slots.min() < 0 or slots.max() >= self.num_streams):
            raise ValueError(f"slots must be in [0, {self.num_streams}), got {slots.tolist()}")
        if np.unique(slots).size != slots.size:
            raise ValueError("each slot may restart once per call")
        if any(c < 0 for c in choices):
            raise ValueError("choice must be >= 0")
        ids = [self._prime(p, start) for p in primes]
        if not self.weights.packed:
            self.pack()
        order = np.argsort(slots)  # _launch wants ascending slots
        slots, ids = slots[order], [ids[i] for i in order]
        seeds, choices = [seeds[i] for i in order], [choices[i] for i in order]
        self._zero(slots)
        nf = max((x.size - 1 for x in ids), default=0)
        if nf > 0:
            forced = np.zeros((nf, slots.size), np.int32)
            first = np.full(slots.size, nf, np.int64)
            for i, x in enumerate(ids):
                if x.size > 1:
                    first[i] = nf - (x.size - 1)
                    forced[first[i]:, i] = x[:-1]
            self._launch(slots, forced, 0, None, first)
        for slot, x, seed, choice in zip(slots, ids, seeds, choices):
            self._prev[slot] = x[-1] if x.size else start
            self._rng[slot] = seed_streams(int(seed), int(choice) + 1)[choice]

    def slot_state(self, slot: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Copies of one slot's h and c (L, H) (c None but for LSTM), for set_slot_state."""
        return self._h[:, slot].copy(), None if self._c is None else self._c[:, slot].copy()

    def set_slot_state(self, slot: int, h: np.ndarray, c: np.ndarray | None) -> None:
        """Give one slot this state (e.g. slot_state() of a slot that was fed the same prime)."""
        self._h[:, slot] = h
        if self._c is not None:
            self._c[:, slot] = c

    def _zero(self, slots) -> None:
        self._h[:, slots] = 0
        if self._c is not None:
            self._c[:, slots] = 0

    def pack(self) -> None:
        """Copy the model's weights into the sampler's layout (packing.Weights): calls sample from the
        weights of the last pack(), whatever happened since."""
        self.weights.pack(self.model)

    # -- how the work is spread ------------------------------------------------------------------------

    def plan(self, steps: int, streams: int | None = None) -> tuple[int, int]:
        """(groups, threads per group) for a call of `steps` characters over `streams` active slots
        (default N): groups of streams run side by side, each by a team splitting the hidden units.
        Measured rule (threads=None): a team only while each thread gets >= THREAD_MIN_BYTES of weights
        per character; streams over threads once there are STREAMS_PER_THREAD per thread."""
        ns = self.num_streams if streams is None else int(streams)
        T = self.threads
        if T is None:
            T = threads_to_use() if steps >= THREADS_MIN_STEPS else 1
        T = max(1, min(T, _pool_workers() + 1))  # a team's threads must all run at once
        if self.split == "streams":
            return (min(T, ns), 1)
        if self.split == "units":
            return (1, T)
        team = T if self.threads is not None else min(T, self.num_parts, self.step_bytes // THREAD_MIN_BYTES)
        if self.threads is None and time.monotonic() < self._team_backoff_until:
            team = 1
        if team <= 1 or ns >= STREAMS_PER_THREAD * T:
            return (min(T, ns), 1)
        return (max(1, min(ns, T // team)), team)

    def threads_for(self, steps: int, streams: int | None = None) -> int:
        """How many threads a call of `steps` characters over `streams` active slots runs on."""
        groups, team = self.plan(steps, streams)
        return groups * team

    def _launch(self, slots: np.ndarray, forced: np.ndarray, n: int, draw, first=None) -> np.ndarray | None:
        """Run kernels.sampler.run_steps for the slots (ascending int64 indices): feed forced[:, i] to
        slots[i] from step first[i] on (default 0: all of it), then draw n characters with settings
        draw = (temperature, top_k, top_p, greedy), each (N,). Returns (len(slots), n) int32."""
        first = np.zeros(slots.size, np.int64) if first is None else first
        steps, ns = forced.shape[0] + n, slots.size
        groups, team = self.plan(steps, ns)
        cuts = [ns * i // groups for i in range(groups + 1)]
        out = np.empty((ns, n), np.int32)
        jobs, teams = [], []
        for gi in range(groups):
            sl = slots[cuts[gi]:cuts[gi + 1]]
            cut = slice(cuts[gi], cuts[gi + 1])
            teams.append(self._team(gi, sl.size, team))
            jobs.extend(self._team_jobs(teams[-1], sl, np.ascontiguousarray(forced[:, cut]), first[cut], out[cut],
                                        draw))
        t0 = time.monotonic()
        jobs[0]() if len(jobs) == 1 else _run_jobs(jobs, teams)
        if team > 1:
            self._check_team(time.monotonic() - t0, steps)
        return out

    def _check_team(self, seconds: float, steps: int) -> None:
        """Back off from teams (measured rule only) after a team call slower than TEAM_SLOW_BYTES_PER_S."""
        if steps >= THREADS_MIN_STEPS and seconds > steps * self.step_bytes / TEAM_SLOW_BYTES_PER_S:
            self._team_backoff_until = time.monotonic() + TEAM_BACKOFF_S

    def _team(self, gi: int, ns: int, nthreads: int) -> _Team:
        key = (gi, ns, nthreads)
        team = self._teams.get(key)
        if team is None:
            if len(self._teams) >= 16:  # a server sees many active counts: keep the memory bounded
                self._teams.clear()
            team = self._teams[key] = _Team(self, ns, nthreads)
        return team

    def _team_jobs(self, tm: _Team, sl, forced, first, out, draw):
        """One callable per thread of team tm running slots sl; thread 0's scatters the results."""
        nthreads, steps = tm.nthreads, forced.shape[0] + out.shape[1]
        tm.hb[0] = self._h[:, sl]
        if self._c is not None:
            tm.c[:] = self._c[:, sl]
        tm.prevs[:] = self._prev[sl]
        tm.rngs[:] = self._rng[sl]
        tm.flags[:] = 0
        if draw is None:
            z = np.zeros(sl.size)
            settings = (z + 1.0, np.zeros(sl.size, np.int64), z + 1.0, np.ones(sl.size, np.bool_))
        else:
            settings = tuple(np.ascontiguousarray(a[sl]) for a in draw)
        wout = np.empty((sl.size, out.shape[1]), np.int32)
        w = self.weights

        def run(me: int) -> None:
            try:
                plo, phi = tm.ranges[me]
                K.run_steps(me, nthreads, plo, phi, tm.flags, wout, forced, first, tm.hb, 0, tm.c, tm.prevs[me],
                            tm.rngs[me], w.pk, w.poff, w.tab, w.lo, w.hi, w.gates, w.decp, w.decb,
                            self.cell_code, *settings,
                            tm.gx, tm.gh, tm.logits[me], tm.p[me], tm.order[me], tm.keys[me])
            except BaseException:
                # never leave the other threads spinning at a barrier this one will not reach (e.g. a
                # KeyboardInterrupt before the kernel started): they run to the end on stale data
                tm.flags[me * STRIDE] = np.iinfo(np.int64).max
                raise
            if me == 0:
                self._h[:, sl] = tm.hb[steps & 1]
                if self._c is not None:
                    self._c[:, sl] = tm.c
                self._prev[sl] = tm.prevs[0]
                self._rng[sl] = tm.rngs[0]
                out[:] = wout

        return [lambda me=me: run(me) for me in range(nthreads)]

    def run(self, n: int, *, temperature=1.0, top_k=0, top_p=1.0, greedy=False, active=None,
            out: np.ndarray | None = None) -> np.ndarray:
        """Draw n ids in every active slot, (N, n) int32 (inactive rows -1), carrying state and
        generators. temperature (>= 0; 0 = greedy), top_k (0 = off), top_p (0 < p <= 1), greedy: scalars
        or (N,) arrays (ValueError when out of range). active: None (all) or (N,) bool; an inactive slot
        does not change at all."""
        N = self.num_streams
        if out is None or out.shape != (N, n):
            out = np.empty((N, n), np.int32)
        if not self.weights.packed:
            self.pack()
        V = self.shape.vocab_size
        temp = _setting("temperature", temperature, N, np.float64)
        if np.ndim(top_k) == 0 and not isinstance(top_k, bool) and top_k >= V:
            top_k = 0  # all characters (any size: a huge int would not fit int64)
        k = _setting("top_k", top_k, N, np.int64)
        tp = _setting("top_p", top_p, N, np.float64)
        if not (np.isfinite(temp).all() and (temp >= 0).all() and (k >= 0).all()
                and ((tp > 0) & (tp <= 1)).all()):
            raise ValueError("need temperature finite and >= 0, top_k >= 0 and 0 < top_p <= 1")
        k = np.where(k >= V, 0, k)  # all characters: off
        gr = _setting("greedy", greedy, N, np.bool_) | (temp == 0)
        temp = np.where(gr, 1.0, temp)
        if active is None:
            slots = np.arange(N)
        else:
            mask = _setting("active", active, N, np.bool_)
            slots = np.flatnonzero(mask)
            out[~mask] = -1
        if slots.size and n > 0:
            out[slots] = self._launch(slots, np.zeros((0, slots.size), np.int32), n, (temp, k, tp, gr))
        return out

"""The serving engine: one worker thread owns the models' samplers and advances every running stream
together, a few characters per call (continuous batching: a request's streams join and leave between
calls, at character boundaries).

A stream's text depends only on (model weights, prime, seed and choice index, settings): choice j of a
request with n choices and seed S draws from generate.seed_streams(S, n)[j], so its text equals
stream j of `charrnn sample --prime P --seed S -N n`, alone or beside any number of other requests.

Every import serve/ takes from the rest of charrnn is in this module and in batch.py (the sampler side),
so moving those modules means editing only their import lines.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..checkpoints import rundir, store
from ..data.vocab import Vocab
from ..engine.model import Model
from ..errors import CharrnnError, UsageError
from ..insight.activations import surprisal
from ..insight.evaluation import metrics
from ..sampling.generate import evaluate
from ..sampling.stops import check_stops
from .batch import Job, Slots, Stream

__all__ = ["CharrnnError", "Busy", "Engine", "UsageError", "Version", "check_stops",
           "load_version", "resolve_checkpoint", "score"]

resolve_checkpoint = rundir.resolve_checkpoint
log = logging.getLogger("charrnn.serve")


@dataclass(eq=False)
class Version:
    """One loaded checkpoint served under a model name. `retired` once --watch replaced it: its
    streams in flight finish on it, new requests get the newer one."""

    name: str
    model: Model
    vocab: Vocab
    meta: dict
    path: Path
    retired: bool = False

    @property
    def step(self) -> int | None:
        return (self.meta.get("progress") or {}).get("step")

    @property
    def val_loss(self) -> float | None:
        return (self.meta.get("losses") or {}).get("val_loss")

    def describe(self) -> str:
        s = self.model.shape
        val = f", val {self.val_loss:.4f}" if isinstance(self.val_loss, (int, float)) else ""
        return (f"{s.cell.upper()} {s.num_layers}x{s.hidden_size}, vocab {s.vocab_size}, "
                f"step {self.step if self.step is not None else '-'}{val}")


def load_version(name: str, path) -> Version:
    """Read and verify a checkpoint (file or run directory); CharrnnError (one line) on any problem."""
    loaded = store.load(path)
    return Version(name, loaded.model, loaded.vocab, loaded.meta, loaded.path)


def score(version: Version, text: str, per_char: bool) -> dict:
    """The model's loss on `text` read as one stream from a zero state (what `charrnn eval` reports),
    and optionally each predicted character's loss (what `charrnn eval --per-char` writes)."""
    ids = version.vocab.encode(text)
    total, n = evaluate(version.model, ids)
    out = metrics(total, n, len(text))
    if per_char:
        out["per_char"] = [{"pos": t + 1, "char": text[t + 1], "loss": float(v)}
                           for t, v in enumerate(surprisal(version.model, ids))]
    return out


class Busy(Exception):
    """The queue is full (status 429) or the server is draining (503); retry after `retry_after` s."""

    def __init__(self, message: str, status: int, retry_after: int):
        super().__init__(message)
        self.status, self.retry_after = status, retry_after


# deliver(job, index, text, finish_reason): runs on the event loop; finish_reason None while going on
Deliver = Callable[["Job", int, str, "str | None"], None]


class Engine:
    """The worker thread. submit() queues a Job (Busy when full or draining). The thread loops: admit the
    queued jobs that fit beside the running streams (fewer than `capacity`), restart their slots, then
    one call that advances every running stream, newcomers included, by k characters (k sized so a call
    takes about `call_s`, between min_chunk and max_chunk characters). A new request therefore waits at
    most about one call for its place and one call for its first characters, which go out at once; after
    that a stream's text is held until it has about `round_s` worth of characters (or ends), so the
    event loop writes few, larger events. Text goes to `post(fn, *args)` (loop.call_soon_threadsafe) in
    one call per engine call."""

    # min_chunk 16: shorter calls run the sampler on one thread and pay its per-call cost more often
    # (measured on 2 busy cores, LSTM 2x256, 32 streams: k ~ 4 served 1.8k chars/s, the sampler alone
    # does 6.7k at k = 16). call_s 0.015: a request arriving mid-call waits for it; at 32 clients
    # (LSTM 2x256, 2 cores) 15 ms calls of ~21 characters gave the same chars/s as 30 ms calls within
    # the run-to-run spread (30-40k) and the first character sooner (p50 45 vs 65-72 ms). round_s 0.05
    # per hand-over keeps the event loop's share (~0.23 cores at 32 clients) as with 50 ms rounds.
    def __init__(self, capacity: int, max_queue: int, deliver: Deliver, round_s: float = 0.05,
                 min_chunk: int = 16, max_chunk: int = 64, call_s: float = 0.015):
        self.capacity, self.max_queue = capacity, max_queue
        self.deliver = deliver
        self.round_s, self.call_s = round_s, call_s
        self.min_chunk, self.max_chunk = min_chunk, max_chunk
        self.draining = False
        self._post: Callable | None = None
        self._cond = threading.Condition()
        self._pending: deque[Job] = deque()
        self._queued = 0  # streams in _pending
        self._calls: deque[tuple[Callable, Future]] = deque()
        self._slots: dict[Version, Slots] = {}
        self._running = 0
        self._stop = False
        self._per_char = 1e-4  # seconds per character per stream of a call, measured as calls run
        self._thread = threading.Thread(target=self._main, name="charrnn-serve-engine", daemon=True)

    # -- the event loop's side ------------------------------------------------------------------
    def start(self, post: Callable) -> None:
        self._post = post
        self._thread.start()

    def submit(self, job: Job) -> None:
        with self._cond:
            if self.draining:
                raise Busy("the server is shutting down and takes no new requests", 503, 5)
            if self._running + self._queued + len(job.streams) > self.capacity + self.max_queue:
                raise Busy(f"the server is busy: {self._running} streams running and {self._queued} waiting "
                           f"(at most {self.max_queue} wait)", 429, 1)
            self._pending.append(job)
            self._queued += len(job.streams)
            self._cond.notify()

    def cancel(self, job: Job) -> None:
        with self._cond:
            job.cancelled = True
            self._cond.notify()

    def call(self, fn: Callable, *args) -> Future:
        """Run fn(*args) on the engine thread between calls (the models are used by one thread)."""
        fut: Future = Future()
        with self._cond:
            if self._stop:
                raise Busy("the server is shutting down", 503, 5)
            self._calls.append((lambda: fn(*args), fut))
            self._cond.notify()
        return fut

    def stats(self) -> dict:
        with self._cond:
            return {"running_streams": self._running, "queued_streams": self._queued, "capacity": self.capacity,
                    "draining": self.draining}

    def stop(self, timeout: float | None = None) -> None:
        """End the thread once running streams are done (they are, after a drain); cancel queued calls."""
        with self._cond:
            self._stop = True
            for job in self._pending:
                job.cancelled = True
            self._cond.notify()
        self._thread.join(timeout)

    # -- the engine thread ------------------------------------------------------------------------
    def _main(self) -> None:
        while True:
            with self._cond:
                while not (self._pending or self._calls or self._running or self._stop):
                    self._cond.wait()
                calls = list(self._calls)
                self._calls.clear()
                joining = self._admit()
                if self._stop and not (joining or self._running or calls):
                    return
                if self._stop:  # after the drain: whatever still runs is cut
                    for job in joining:
                        job.cancelled = True
                    for slots in self._slots.values():
                        for s in slots.streams:
                            s.job.cancelled = True
            for fn, fut in calls:
                if fut.set_running_or_notify_cancel():
                    try:
                        fut.set_result(fn())
                    except BaseException as e:  # noqa: BLE001  handed to the awaiting request
                        fut.set_exception(e)
            events: list[tuple] = []
            try:
                self._step(joining, events)
            except Exception:  # a bug, not a user's error: fail the running requests, keep serving
                log.exception("the sampling engine failed; ending the requests in flight")
                events += self._fail_all()
            if events:
                self._post(self._deliver_all, events)

    def _step(self, joining: list[Job], events: list) -> None:
        """Newcomers join (every prime of one model version fed in one call), then one call of every
        running stream: the newcomers draw their first characters beside the others (no call of their
        own, which would be a small batch that everyone else waits for)."""
        by_slots: dict[Slots, list[Stream]] = {}
        for job in joining:
            by_slots.setdefault(self._slots_for(job.version), []).extend(job.streams)
        for slots, streams in by_slots.items():
            slots.join(streams)
            self._running += len(streams)
        self._drop_cancelled()
        self._call(events)

    def _admit(self) -> list[Job]:
        """Queued jobs that fit beside the running streams, oldest first (called holding the lock)."""
        out = []
        while self._pending and (self._running + sum(len(j.streams) for j in out)
                                 + len(self._pending[0].streams) <= self.capacity):
            job = self._pending.popleft()
            self._queued -= len(job.streams)
            if not job.cancelled:
                out.append(job)
        return out

    def _slots_for(self, version: Version) -> Slots:
        slots = self._slots.get(version)
        if slots is None:
            slots = self._slots[version] = Slots(version, self.capacity)
        return slots

    def _leave(self, s: Stream) -> None:
        slots = self._slots[s.job.version]
        slots.leave(s)
        self._running -= 1
        if not slots.streams and s.job.version.retired:
            del self._slots[s.job.version]  # --watch replaced it and its last stream is done

    def _fail_all(self) -> list[tuple]:
        events = []
        for slots in list(self._slots.values()):
            for s in list(slots.streams):
                events.append((s.job, s.index, "", "error"))
                self._leave(s)
        self._slots.clear()
        self._running = 0
        return events

    def _drop_cancelled(self) -> None:
        for slots in list(self._slots.values()):
            for s in [s for s in slots.streams if s.job.cancelled]:
                self._leave(s)

    def _chunk(self, seconds: float) -> int:
        """Characters per stream that take about `seconds` for every running stream (min/max_chunk)."""
        if not self._running:
            return 0
        return int(min(self.max_chunk, max(self.min_chunk, seconds / (self._per_char * self._running))))

    def _call(self, events: list) -> None:
        k = self._chunk(self.call_s)
        if not k:
            return
        t0 = time.perf_counter()
        drawn = [(slots, slots.run(k)) for slots in list(self._slots.values()) if slots.streams]
        n = sum(len(ids) for _, ids in drawn)
        if n:  # a smoothed cost per character per stream: sizes the next calls
            self._per_char = 0.7 * self._per_char + 0.3 * (time.perf_counter() - t0) / (k * n)
        hold = self._chunk(self.round_s)
        for slots, ids in drawn:
            for s, row in ids.items():
                self._take(slots.version.vocab, s, row, k, hold, events)

    def _take(self, vocab: Vocab, s: Stream, row: np.ndarray, k: int, hold: int, events: list) -> None:
        """Stream s drew `row` (k ids): its text goes on through its stop strings, and is handed over
        when it is the stream's first, when it ends, or once `hold` characters were drawn since the last
        hand-over; the stream leaves when done."""
        take = min(k, s.job.length - s.done)
        s.done += take
        text = vocab.decode(row[:take])
        s.held += s.cutter.feed(text) if s.cutter else text
        stopped = bool(s.cutter and s.cutter.done)
        if stopped or s.done >= s.job.length:
            if s.cutter and not stopped:
                s.held += s.cutter.finish()
            events.append((s.job, s.index, s.held, "stop" if stopped else "length"))
            self._leave(s)
        elif s.held and (s.handed is None or s.done - s.handed >= hold):
            events.append((s.job, s.index, s.held, None))
            s.held, s.handed = "", s.done

    def _deliver_all(self, events: list) -> None:
        for job, index, text, finish in events:
            if not job.cancelled:
                self.deliver(job, index, text, finish)

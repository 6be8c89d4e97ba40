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
    """The worker thread. submit() queues a Job (Busy when full or draining); the thread admits queued
    jobs while fewer than `capacity` streams run, advances all running streams by k characters per
    round (k sized so a round takes about `round_s`, between min_chunk and max_chunk characters: a new
    request waits about one round for its place, then one round for its first characters),
    and hands text to `post(fn, *args)` (loop.call_soon_threadsafe) in one call per round."""

    # min_chunk 16: shorter calls run the sampler on one thread and pay its per-call cost more often
    # (measured on 2 busy cores, LSTM 2x256, 32 streams: k ~ 4 served 1.8k chars/s, the sampler alone
    # does 6.7k at k = 16); round_s 0.05 keeps the time to a first character near 0.1 s
    def __init__(self, capacity: int, max_queue: int, deliver: Deliver, round_s: float = 0.05,
                 min_chunk: int = 16, max_chunk: int = 64):
        self.capacity, self.max_queue = capacity, max_queue
        self.deliver = deliver
        self.round_s, self.min_chunk, self.max_chunk = round_s, min_chunk, max_chunk
        self.draining = False
        self._post: Callable | None = None
        self._cond = threading.Condition()
        self._pending: deque[Job] = deque()
        self._queued = 0  # streams in _pending
        self._calls: deque[tuple[Callable, Future]] = deque()
        self._slots: dict[Version, Slots] = {}
        self._running = 0
        self._stop = False
        self._per_char = 1e-4  # seconds per character-round, measured as rounds run
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
        """Run fn(*args) on the engine thread between rounds (the models are used by one thread)."""
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
        """Newcomers join (every prime of one model version fed in one call) and, when other streams
        run, draw their first characters in a call of their own; then one round of every stream."""
        by_slots: dict[Slots, list[Stream]] = {}
        for job in joining:
            by_slots.setdefault(self._slots_for(job.version), []).extend(job.streams)
        for slots, streams in by_slots.items():
            slots.join(streams)
            self._running += len(streams)
        self._drop_cancelled()
        if joining and self._running > sum(len(j.streams) for j in joining):
            self._first(by_slots, events)  # newcomers' first characters without a full round's wait
            if events:
                self._post(self._deliver_all, list(events))
                events.clear()
        self._round(events)

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

    def _chunk(self) -> int:
        if not self._running:
            return 0
        return int(min(self.max_chunk, max(self.min_chunk, self.round_s / (self._per_char * self._running))))

    def _round(self, events: list) -> None:
        k = self._chunk()
        if not k:
            return
        t0 = time.perf_counter()
        drawn = [(slots, slots.run(k)) for slots in list(self._slots.values()) if slots.streams]
        n = sum(len(ids) for _, ids in drawn)
        if n:  # a smoothed cost per character per stream: sizes the next round
            self._per_char = 0.7 * self._per_char + 0.3 * (time.perf_counter() - t0) / (k * n)
        for slots, ids in drawn:
            for s, row in ids.items():
                self._take(slots.version.vocab, s, row, k, events)

    def _first(self, by_slots: dict[Slots, list[Stream]], events: list) -> None:
        """A short call for the streams that just joined alone (the others wait that long once): their
        first characters go out now instead of after a round of every stream. The text is the same (it
        does not depend on the characters per call)."""
        for slots, streams in by_slots.items():
            streams = [s for s in streams if not s.job.cancelled and s in slots.streams]
            if streams:
                for s, row in slots.run(self.min_chunk, only=streams).items():
                    self._take(slots.version.vocab, s, row, self.min_chunk, events)

    def _take(self, vocab: Vocab, s: Stream, row: np.ndarray, k: int, events: list) -> None:
        """Stream s drew `row` (k ids): pass its text on, through its stop strings; leave when done."""
        take = min(k, s.job.length - s.done)
        s.done += take
        text = vocab.decode(row[:take])
        piece = s.cutter.feed(text) if s.cutter else text
        stopped = bool(s.cutter and s.cutter.done)
        if stopped or s.done >= s.job.length:
            if s.cutter and not stopped:
                piece += s.cutter.finish()
            events.append((s.job, s.index, piece, "stop" if stopped else "length"))
            self._leave(s)
        elif piece:
            events.append((s.job, s.index, piece, None))

    def _deliver_all(self, events: list) -> None:
        for job, index, text, finish in events:
            if not job.cancelled:
                self.deliver(job, index, text, finish)

"""The serving engine in-process (no HTTP): when a stream's text is handed to the event loop, that a
newcomer draws its first characters in the next call beside the running streams, and that a prime fed
before restarts from its kept state with the same text. No timing: the call
and hand-over sizes are pinned through the engine's bounds (call_s tiny -> min_chunk characters per call,
round_s huge -> max_chunk characters per hand-over)."""
import threading

import numpy as np
import pytest
from support.serve import VOCAB, write_checkpoint

from charrnn.serve import batch
from charrnn.serve.batch import Job, Settings
from charrnn.serve.engine import Engine, load_version

CALL, HOLD = 4, 32


@pytest.fixture(scope="module")
def version(tmp_path_factory):
    return load_version("tiny", write_checkpoint(tmp_path_factory.mktemp("engine") / "best.npz"))


class Recorder:
    """An engine whose events are recorded in order (posted straight from the engine's thread)."""

    def __init__(self, **bounds):
        self.events, self.done = [], threading.Condition()
        self.on_event = None
        self.engine = Engine(8, 8, self.deliver, **bounds)
        self.engine.start(lambda fn, *args: fn(*args))

    def deliver(self, job, index, text, finish):
        with self.done:
            self.events.append((job, index, text, finish))
            self.done.notify_all()
        if self.on_event:
            self.on_event(job, index, text, finish)

    def wait(self, jobs):
        with self.done:
            assert self.done.wait_for(lambda: all(self.finished(j) for j in jobs), timeout=120)

    def finished(self, job):
        return sum(1 for e in self.events if e[0] is job and e[3]) == len(job.streams)

    def pieces(self, job, index=0):
        return [(t, f) for j, i, t, f in self.events if j is job and i == index]

    def close(self):
        self.engine.stop(30)


def job(version, prime="the ", seed=5, length=200, n=1):
    return Job(version, [VOCAB.encode(prime)], n, seed, Settings(temperature=0.9), length)


def text_alone(version, **kw):
    r = Recorder()  # the default bounds: other call sizes, same text
    try:
        j = job(version, **kw)
        r.engine.submit(j)
        r.wait([j])
        return ["".join(t for t, _ in r.pieces(j, i)) for i in range(len(j.streams))]
    finally:
        r.close()


def test_first_text_goes_out_after_one_call_then_in_larger_pieces(version):
    r = Recorder(min_chunk=CALL, max_chunk=HOLD, call_s=1e-9, round_s=1e9)
    try:
        j = job(version, length=203)
        r.engine.submit(j)
        r.wait([j])
        sizes = [len(t) for t, _ in r.pieces(j)]
        # first hand-over after the first call; then every HOLD characters; the rest with the finish
        assert sizes == [CALL] + [HOLD] * 6 + [203 - CALL - 6 * HOLD]
        assert [f for _, f in r.pieces(j)][-1] == "length"
        assert ["".join(t for t, _ in r.pieces(j))] == text_alone(version, length=203)
    finally:
        r.close()


def test_a_newcomer_draws_its_first_characters_in_the_next_call_beside_the_others(version):
    r = Recorder(min_chunk=CALL, max_chunk=HOLD, call_s=1e-9, round_s=1e9)
    long, late = job(version, seed=1, length=400), job(version, prime="q", seed=2, length=50, n=2)

    def submit_late(j, index, text, finish):
        if j is long and len(r.pieces(long)) == 1:  # the running stream's first hand-over
            r.engine.submit(late)

    r.on_event = submit_late
    try:
        r.engine.submit(long)
        r.wait([long, late])
        for i in range(2):
            assert len(r.pieces(late, i)[0][0]) == CALL  # one call, not a call of its own nor a round
        order = [(e[0] is late, e[3]) for e in r.events]
        assert order.index((True, None)) < order.index((False, "length"))  # while the other still runs
        # the text does not depend on who else ran, nor on the call sizes
        assert ["".join(t for t, _ in r.pieces(late, i)) for i in range(2)] == text_alone(
            version, prime="q", seed=2, length=50, n=2)
        assert ["".join(t for t, _ in r.pieces(long))] == text_alone(version, seed=1, length=400)
    finally:
        r.close()


def slots_of(r, version):
    return r.engine._slots[version]


def key(prime):
    return np.asarray(VOCAB.encode(prime), np.int32)[:-1].tobytes()


def test_a_prime_fed_before_restarts_from_its_kept_state_with_the_same_text(version, monkeypatch):
    monkeypatch.setattr(batch, "PRIMED_KEPT", 2)
    r = Recorder()
    try:
        first = job(version, prime="the quick ", seed=3, length=60)
        r.engine.submit(first)
        r.wait([first])
        assert list(slots_of(r, version)._primed) == [key("the quick ")]
        again = job(version, prime="the quick ", seed=3, length=60, n=2)  # choice 0 = the first's stream
        r.engine.submit(again)
        r.wait([again])
        texts = ["".join(t for t, _ in r.pieces(again, i)) for i in range(2)]
        assert texts[0] == "".join(t for t, _ in r.pieces(first))
        assert texts == text_alone(version, prime="the quick ", seed=3, length=60, n=2)
        for prime in ("a b", "c d", "e f"):  # the least recently used go first
            j = job(version, prime=prime, length=5)
            r.engine.submit(j)
            r.wait([j])
        assert list(slots_of(r, version)._primed) == [key("c d"), key("e f")]
    finally:
        r.close()

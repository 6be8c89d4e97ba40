"""The multi-stream sampler (charrnn.sampling.multistream): the text never depends on the thread count, on the
decomposition (hidden units or streams over threads), on N, on the slot, on the other streams beside it,
nor on how many characters a call draws. Thread counts above this machine's cores oversubscribe it on
purpose (the barriers yield after ~1 ms of spinning), so the models and runs here stay small.
"""
import threading

import numpy as np
import pytest
from support.exe import assert_child_exits

from charrnn.data.vocab import Vocab
from charrnn.engine.model import Model
from charrnn.engine.params import Params, Shape, init_params
from charrnn.sampling import generate as gen
from charrnn.sampling import multistream as ms
from charrnn.sampling import packing

CHARS = "\n abcdefghij"
VOCAB = Vocab(CHARS)
V = len(CHARS)
PRIME = [int(i) for i in VOCAB.encode("abc ja\nbe")]
OPTS = dict(temperature=0.9, top_k=6, top_p=0.95)


def make_model(cell="lstm", hidden=64, layers=2, E=0, seed=3) -> Model:
    shape = Shape(cell, V, hidden, layers, E)
    p = Params(shape)
    init_params(p, np.random.default_rng(seed), scale=0.8)
    return Model(shape, p)


def run(model, threads, split, n=40, streams=3, **opts):
    sm = ms.Sampler(model, streams, threads=threads, split=split)
    sm.reset(np.array(PRIME), seed=11)
    outs = [sm.run(k, **(opts or OPTS)).copy() for k in (n // 3, n - n // 3)]
    return np.concatenate(outs, axis=1), sm.state, sm.rng.copy()


def assert_same(a, b):
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1].h, b[1].h)
    if a[1].c is not None:
        np.testing.assert_array_equal(a[1].c, b[1].c)
    np.testing.assert_array_equal(a[2], b[2])


def test_parts_depend_on_the_shape_only():
    assert list(ms.parts_for(16)) == [0, 8, 16]  # two halves up to H = 16, as before
    assert list(ms.parts_for(7)) == [0, 4, 7]
    cuts = ms.parts_for(256)
    assert cuts.size == 33 and set(np.diff(cuts)) == {8}
    assert set(np.diff(ms.parts_for(33))) <= {6, 7}


@pytest.mark.parametrize("cell,hidden,layers,E", [
    ("lstm", 64, 2, 0), ("gru", 61, 3, 5), ("rnn", 64, 1, 0), ("lstm", 16, 1, 4)])
def test_one_stream_split_over_units_is_the_same_on_1_to_8_threads(cell, hidden, layers, E):
    """One stream (and three) split over 1, 2, 3, 4 and 8 threads: text, state and generators bit for
    bit. hidden=16 has two parts, so 3-8 threads leave some threads without a part."""
    model = make_model(cell, hidden, layers, E)
    want = run(model, 1, "units", streams=1)
    for t in (2, 3, 4, 8):
        assert_same(run(model, t, "units", streams=1), want)
    three = run(model, 3, "units", streams=3)
    np.testing.assert_array_equal(three[0][0], want[0][0])  # stream 0 of three is the one-stream run
    assert len({tuple(r) for r in three[0]}) == 3


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_streams_split_over_threads_is_the_same_on_1_to_8_threads(cell):
    model = make_model(cell, 24, 2)
    want = run(model, 1, "streams", streams=5)
    for t in (2, 3, 4, 8):
        assert_same(run(model, t, "streams", streams=5), want)
    assert_same(run(model, 4, "units", streams=5), want)
    assert_same(run(model, 4, None, streams=5), want)  # the measured rule, whatever it picks


def test_greedy_and_plain_draws_are_thread_independent():
    model = make_model("lstm", 40, 2)
    for opts in (dict(greedy=True), dict(temperature=1.3)):
        want = run(model, 1, "units", **opts)
        assert_same(run(model, 3, "units", **opts), want)
        assert_same(run(model, 3, "streams", **opts), want)


def test_stream_text_does_not_depend_on_n_threads_or_chunks():
    """Stream j of -N 4 equals stream j of -N 8, on any thread count (sample's public path)."""
    model = make_model("gru", 48, 2)
    four = gen.sample(model, VOCAB, 120, seed=5, prime="ab", num_samples=4, top_k=5)
    eight = gen.sample(model, VOCAB, 120, seed=5, prime="ab", num_samples=8, top_k=5)
    assert eight[:4] == four
    sm = ms.Sampler(model, 8, threads=3)
    sm.reset(np.array(VOCAB.encode("ab")), seed=5)
    got = np.concatenate([sm.run(k, top_k=5) for k in (1, 50, 69)], axis=1)
    assert [VOCAB.decode(r) for r in got] == eight


# -- the server engine: restart, settings, active mask ---------------------------------------------

def _alone(model, prime, seed, choice, n, **opts):
    """What `charrnn sample -N choice+1 --seed seed --prime P` gives for stream `choice`."""
    return gen.sample(model, VOCAB, n, seed=seed, prime=prime, num_samples=choice + 1, **opts)[choice]


def test_restart_gives_the_requests_text_in_any_slot_beside_anything():
    model = make_model("lstm", 32, 2)
    want_a = _alone(model, "abc", 9, 2, 60, temperature=0.7)
    want_b = _alone(model, "", 4, 0, 45, top_p=0.8)
    want_c = _alone(model, "j", 1, 1, 30, argmax=True)
    sm = ms.Sampler(model, 6, threads=2)
    sm.reset(None, seed=0, start=0)
    texts = {0: [], 4: [], 5: []}
    temp = np.array([0.7, 1, 1, 1, 1.0, 1.0])
    top_p = np.array([1, 1, 1, 1, 0.8, 1.0])
    greedy = np.array([0, 0, 0, 0, 0, 1], bool)
    sm.restart(4, None, seed=4, choice=0, start=sm.start_id(VOCAB))
    sm.run(3, active=np.array([0, 1, 1, 0, 0, 0], bool))  # others move; slot 4 waits
    texts[4] += list(sm.run(20, temperature=temp, top_p=top_p, active=np.eye(6, dtype=bool)[4])[4])
    sm.restart(0, np.array(VOCAB.encode("abc")), seed=9, choice=2)
    sm.restart(5, np.array(VOCAB.encode("j")), seed=1, choice=1)
    active = np.array([1, 1, 0, 1, 1, 1], bool)
    for k in (1, 9, 25):
        out = sm.run(k, temperature=temp, top_p=top_p, greedy=greedy, active=active)
        assert (out[2] == -1).all()
        for s in texts:
            texts[s] += list(out[s])
    assert VOCAB.decode(np.array(texts[0])) == want_a[:35]
    assert VOCAB.decode(np.array(texts[4][:45])) == want_b
    assert VOCAB.decode(np.array(texts[5][:30])) == want_c


@pytest.mark.parametrize("cell,threads,split", [("lstm", 1, None), ("lstm", 2, "units"), ("gru", 2, "streams"),
                                                ("rnn", 3, None)])
def test_restart_many_feeds_ragged_primes_in_one_call_as_restart_does(cell, threads, split):
    model = make_model(cell, 24, 2)
    primes = {1: "abc ja\nbe", 3: "", 4: "j", 6: "hij a", 0: "bb"}
    seeds = {1: 9, 3: 4, 4: 1, 6: 7, 0: 2}
    one = ms.Sampler(model, 7, threads=1)
    many = ms.Sampler(model, 7, threads=threads, split=split)
    for sm in (one, many):
        sm.reset(np.array(PRIME), seed=5)
        sm.run(4, **OPTS)  # every slot has a state: the untouched ones must keep theirs
    for s, p in primes.items():
        one.restart(s, np.array(VOCAB.encode(p)), seed=seeds[s], choice=s % 3, start=one.start_id(VOCAB))
    slots = list(primes)
    many.restart_many(slots, [np.array(VOCAB.encode(primes[s])) for s in slots], [seeds[s] for s in slots],
                      [s % 3 for s in slots], start=many.start_id(VOCAB))
    assert_same((one.prev, one.state, one.rng), (many.prev, many.state, many.rng))
    np.testing.assert_array_equal(one.run(30, **OPTS), many.run(30, **OPTS))
    assert VOCAB.decode(many.run(12, active=np.eye(7, dtype=bool)[1])[1]) == VOCAB.decode(
        one.run(12, active=np.eye(7, dtype=bool)[1])[1])
    with pytest.raises(ValueError):
        many.restart_many([0, 0], [None, None], [1, 1], [0, 0])
    with pytest.raises(ValueError):
        many.restart_many([0], [None, None], [1], [0])


def test_an_inactive_slot_does_not_change():
    model = make_model("gru", 16, 1)
    sm = ms.Sampler(model, 3)
    sm.reset(np.array(PRIME), seed=2)
    before = (sm.state, sm.prev.copy(), sm.rng.copy())
    sm.run(30, active=np.array([True, False, True]))
    after = sm.state
    np.testing.assert_array_equal(after.h[:, 1], before[0].h[:, 1])
    assert sm.prev[1] == before[1][1] and (sm.rng[1] == before[2][1]).all()
    assert (sm.rng[0] != before[2][0]).any()


def test_restart_and_settings_are_checked():
    model = make_model("rnn", 8, 1)
    sm = ms.Sampler(model, 2)
    with pytest.raises(ValueError):
        sm.restart(2, None)
    with pytest.raises(ValueError):
        sm.restart(0, np.array([V]))
    with pytest.raises(ValueError):
        sm.run(3, temperature=np.ones(3))
    for bad in (dict(temperature=-1.0), dict(temperature=np.nan), dict(top_p=0.0), dict(top_k=-2),
                dict(top_p=np.array([0.5, 1.5]))):
        with pytest.raises(ValueError):
            sm.run(2, **bad)
    sm.reset(None, seed=4)
    everything = sm.run(20, top_k=2**70).copy()  # more than the vocabulary, beyond int64: all characters
    sm.reset(None, seed=4)
    np.testing.assert_array_equal(sm.run(20, top_k=0), everything)
    with pytest.raises(ValueError):
        ms.Sampler(model, 1, threads=0)
    with pytest.raises(ValueError):
        ms.Sampler(model, 1, split="rows")


def test_the_engine_runs_from_another_thread():
    model = make_model("lstm", 24, 2)
    want = _alone(model, "ab", 3, 0, 50)
    got = []

    def engine():
        sm = ms.Sampler(model, 2, threads=2)
        sm.restart(1, np.array(VOCAB.encode("ab")), seed=3)
        got.append(VOCAB.decode(sm.run(50, active=np.array([False, True]))[1]))

    t = threading.Thread(target=engine)
    t.start()
    t.join(120)
    assert got == [want]


@pytest.mark.parametrize("cell,hidden", [("rnn", 30), ("gru", 21)])
def test_the_part_size_does_not_change_the_text(monkeypatch, cell, hidden):
    """Every output of a product is one chain of multiply-adds (the micro-kernel's) wherever a part or
    panel boundary falls, so even the part size (a constant today) could change without changing any text."""
    model = make_model(cell, hidden, 2)
    want = run(model, 1, "units")
    for units in (3, 5, 30):
        monkeypatch.setattr(packing, "UNITS_PER_PART", units)
        assert_same(run(model, 2, "units"), want)


def test_a_team_slower_than_one_thread_backs_off_for_a_while(monkeypatch):
    """When other processes hold the cores a team's barriers wait for time slices; the measured rule then
    runs whole streams per thread for TEAM_BACKOFF_S seconds. The text is the same either way."""
    model = make_model("lstm", 256, 2)
    monkeypatch.setattr(ms, "threads_to_use", lambda: 2)
    sm = ms.Sampler(model, 1)
    assert sm.plan(100) == (1, 2)
    sm._check_team(1e-6, 100)  # fast: nothing changes
    assert sm.plan(100) == (1, 2)
    sm._check_team(100 * sm.step_bytes / ms.TEAM_SLOW_BYTES_PER_S * 2, 100)
    assert sm.plan(100) == (1, 1) and sm.plan(100, 3) == (2, 1)
    sm._team_backoff_until = 0.0  # the while is over: the team again
    assert sm.plan(100) == (1, 2)
    forced = ms.Sampler(model, 1, threads=2)
    forced._team_backoff_until = float("inf")
    assert forced.plan(100) == (1, 2)  # a forced count is never changed


INTERRUPTED_BETWEEN_SUBMITS = """
import numpy as np
from charrnn.engine import threads
from charrnn.engine.model import Model
from charrnn.engine.params import Params, Shape, init_params
from charrnn.sampling import multistream as ms

class Interrupting:
    def submit(self, *args):
        threads.pool().submit(*args)  # the member is queued and a worker runs it ...
        raise KeyboardInterrupt  # ... and a Ctrl-C lands before the caller goes on

shape = Shape("lstm", 12, 64, 2, 0)
p = Params(shape)
init_params(p, np.random.default_rng(3), scale=0.8)
model = Model(shape, p)  # the sampler keeps only a weak reference
sm = ms.Sampler(model, 1, threads=2, split="units")
sm.reset(np.array([1, 2, 3]), seed=1)
ms.pool = lambda: Interrupting()
try:
    sm.run(500)
except KeyboardInterrupt:
    print("interrupted", flush=True)
"""


def test_a_ctrl_c_between_a_teams_submits_leaves_no_thread_spinning():
    """A Ctrl-C landing after a team member was submitted but before the calling thread joined the team
    once left that member spinning at a barrier for ever: `charrnn sample` printed "interrupted" and never
    exited (the interpreter waits for pool threads at exit). The child must exit on its own."""
    assert_child_exits(INTERRUPTED_BETWEEN_SUBMITS, "interrupted\n")

"""The Numba sampling kernel (charrnn.engine.kernels.sampler) and its Python driver (charrnn.sampling.generate).

The independent reference throughout is Model.logits / Model.loss (the training forward path: BLAS
GEMMs and the chunk kernels), never the sampling kernel itself.
"""
import math
import os
import time

import numpy as np
import pytest
from scipy import stats

from charrnn.sampling import generate as gen
from charrnn.sampling import multistream as ms
from charrnn.data.corpus import Vocab
from charrnn.errors import UsageError
from charrnn.engine.model import Model
from charrnn.engine.params import Params, Shape, init_params

V, H, L = 12, 16, 2
CHARS = "\n abcdefghij"  # 12 characters, '\n' is id 0 and ' ' id 1
VOCAB = Vocab(CHARS)
CONFIGS = [(cell, E) for cell in ("lstm", "gru", "rnn") for E in (0, 6)]
IDS = [f"{c}-E{e}" for c, e in CONFIGS]
P_MIN = 1e-4  # chi-square p-value threshold (fixed seeds: deterministic)


def make_model(cell="lstm", E=0, seed=0, scale=0.5, hidden=H, layers=L) -> Model:
    shape = Shape(cell, V, hidden, layers, E)
    p = Params(shape)
    init_params(p, np.random.default_rng(seed), scale=scale)
    return Model(shape, p)


def model_logits(model: Model, ids) -> np.ndarray:
    """(T, V) float64 logits after each of ids, from a zero state, via Model.logits."""
    ids = np.asarray(ids, dtype=np.int64).reshape(1, -1)
    lg, _ = model.logits(ids, model.zero_state(1))
    return lg[0].astype(np.float64)


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def enc(text: str) -> list[int]:
    return [int(i) for i in VOCAB.encode(text)]


# -- distribution parity via greedy decoding ----------------------------------------------------------

@pytest.mark.parametrize("prime", ["", "ab c"])
@pytest.mark.parametrize("cell,E", CONFIGS, ids=IDS)
def test_greedy_equals_model_argmax_step_by_step(cell, E, prime):
    model = make_model(cell, E)
    n = 40
    out = gen.sample(model, VOCAB, n, argmax=True, prime=prime)[0]
    assert len(out) == n
    # independent path: Model.logits over the growing text, from a zero state, argmax of the last row
    text = enc(prime) if prime else [VOCAB.chars.index("\n")]  # documented start rule
    for t, ch in enumerate(out):
        row = model_logits(model, text)[-1]
        best = int(np.argmax(row))
        got = CHARS.index(ch)
        # identical unless the top two logits are within float32 rounding of each other
        assert got == best or row[got] >= row[best] - 1e-4, f"step {t}: kernel {got}, model {best}"
        text.append(got)


@pytest.mark.parametrize("cell,E", CONFIGS, ids=IDS)
def test_prime_state_equals_model_forward(cell, E):
    model = make_model(cell, E)
    prime = enc("hid a bed\nabc")
    sm = gen.Sampler(model, num_streams=3)
    sm.reset(np.array(prime), seed=1)
    _, want = model.logits(np.array(prime[:-1]).reshape(1, -1), model.zero_state(1))
    got = sm.state
    for s in range(3):  # every stream holds the state after the prime minus its last char
        np.testing.assert_allclose(got.h[:, s], want.h[:, 0], atol=2e-5)
        if cell == "lstm":
            np.testing.assert_allclose(got.c[:, s], want.c[:, 0], atol=2e-5)
    assert (sm.prev == prime[-1]).all()
    # and one more greedy step equals the model's argmax after the whole prime
    first = sm.run(1, greedy=True)
    row = model_logits(model, prime)[-1]
    assert (first[:, 0] == np.argmax(row)).all()


def test_no_prime_without_newline_starts_from_id_0():
    vocab = Vocab("abcdefghijkl")  # no '\n': the start character is id 0 ('a'), not emitted
    model = make_model("gru")
    out = gen.sample(model, vocab, 5, argmax=True)[0]
    text = [0]
    for ch in out:
        best = int(np.argmax(model_logits(model, text)[-1]))
        assert vocab.chars[best] == ch
        text.append(best)


# -- seeds, streams, greedy equivalences ------------------------------------------------------------

def test_same_seed_same_text_different_seed_different_text():
    model = make_model("lstm")
    a = gen.sample(model, VOCAB, 300, seed=123, prime="ab")
    b = gen.sample(model, VOCAB, 300, seed=123, prime="ab")
    c = gen.sample(model, VOCAB, 300, seed=124, prime="ab")
    assert a == b
    assert a != c


def test_seed_none_is_not_deterministic():
    model = make_model("lstm")
    assert gen.sample(model, VOCAB, 200) != gen.sample(model, VOCAB, 200)


def test_big_and_negative_seeds_are_accepted():
    model = make_model("rnn")
    for seed in (0, -1, 2**70 + 3):
        assert gen.sample(model, VOCAB, 20, seed=seed) == gen.sample(model, VOCAB, 20, seed=seed)


@pytest.mark.parametrize("cell,E", CONFIGS, ids=IDS)
def test_top_k_1_and_temperature_0_equal_argmax(cell, E):
    model = make_model(cell, E)
    greedy = gen.sample(model, VOCAB, 60, argmax=True, prime="a")
    assert gen.sample(model, VOCAB, 60, top_k=1, seed=9, prime="a") == greedy
    assert gen.sample(model, VOCAB, 60, top_k=1, temperature=3.0, seed=9, prime="a") == greedy
    assert gen.sample(model, VOCAB, 60, temperature=0, prime="a") == greedy  # no seed needed
    assert gen.sample(model, VOCAB, 60, temperature=0, seed=1, prime="a") == greedy


def test_tiny_temperature_is_greedy():
    model = make_model("lstm")
    greedy = gen.sample(model, VOCAB, 50, argmax=True)
    assert gen.sample(model, VOCAB, 50, temperature=1e-300, seed=3) == greedy


def test_num_samples_streams_differ_and_stream_0_is_the_single_stream_run():
    model = make_model("gru", 6)
    three = gen.sample(model, VOCAB, 200, seed=77, num_samples=3, prime="abc")
    one = gen.sample(model, VOCAB, 200, seed=77, num_samples=1, prime="abc")
    assert len(three) == 3 and all(len(t) == 200 for t in three)
    assert len(set(three)) == 3
    # documented seed policy: stream i's generator depends on (seed, i) only, so stream 0 of an
    # N-stream run is byte for byte the 1-stream run and streams 1.. are new independent draws
    assert three[0] == one[0]
    # and greedy streams are all identical
    g = gen.sample(model, VOCAB, 50, argmax=True, num_samples=3, prime="abc")
    assert g[0] == g[1] == g[2] == gen.sample(model, VOCAB, 50, argmax=True, prime="abc")[0]


def test_seed_streams_policy():
    a = gen.seed_streams(5, 4)
    assert a.dtype == np.uint64 and a.shape == (4, 2)
    assert len({tuple(r) for r in a}) == 4
    np.testing.assert_array_equal(gen.seed_streams(5, 1), a[:1])
    assert not np.array_equal(gen.seed_streams(6, 1), a[:1])


def test_chunking_and_streaming_do_not_change_the_text():
    model = make_model("lstm", 6)
    whole = gen.sample(model, VOCAB, 100, seed=4, prime="ba", num_samples=2, chunk=256)
    got: dict[int, list[str]] = {0: [], 1: []}
    parts = gen.sample(model, VOCAB, 100, seed=4, prime="ba", num_samples=2, chunk=7,
                       on_text=lambda i, piece: got[i].append(piece))
    assert parts == whole
    for i in (0, 1):
        assert "".join(got[i]) == whole[i]
        assert [len(p) for p in got[i]] == [7] * 14 + [2]


def test_sampler_is_reused_and_sees_current_weights():
    model = make_model("lstm")
    gen.sample(model, VOCAB, 10, seed=1)
    sm = gen.sampler_for(model, 1)
    assert gen.sampler_for(model, 1) is sm  # no new buffers, no recompilation
    before = gen.sample(model, VOCAB, 30, argmax=True)[0]
    model.params.flat[:] = np.random.default_rng(99).uniform(-0.5, 0.5, model.params.flat.size)
    after = gen.sample(model, VOCAB, 30, argmax=True)[0]
    assert gen.sampler_for(model, 1) is sm
    assert after != before
    text = [0]
    for ch in after:
        best = int(np.argmax(model_logits(model, text)[-1]))
        assert CHARS[best] == ch
        text.append(best)


def test_a_sampler_uses_the_weights_of_its_last_reset():
    """All weights (recurrent parts, input table and decoder) are copied at reset(): changing the
    model afterwards changes nothing until the next reset."""
    model = make_model("lstm", 6)
    sm = gen.Sampler(model, 2)
    sm.reset(np.array(enc("ab")), seed=3)
    want = sm.run(40).copy()
    sm.reset(np.array(enc("ab")), seed=3)
    model.params.flat[:] = 0.0
    np.testing.assert_array_equal(sm.run(40), want)


def test_sampler_cache_does_not_keep_the_model_alive():
    import gc
    import weakref

    model = make_model("rnn")
    gen.sample(model, VOCAB, 5, seed=1)
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None


# -- one thread or two: the same numbers --------------------------------------------------------------

def _run_sampler(model, threads, prime, n, **opts):
    sm = gen.Sampler(model, num_streams=3, threads=threads)
    sm.reset(np.array(prime, np.int32), seed=11)
    outs = [sm.run(k, **opts).copy() for k in (n // 3, n - n // 3)]  # two calls: state carried across
    st = sm.state
    return np.concatenate(outs, axis=1), st, sm.prev.copy(), sm.rng.copy()


@pytest.mark.parametrize("hidden,layers", [(16, 2), (7, 3), (1, 1), (5, 1)])
@pytest.mark.parametrize("cell,E", CONFIGS, ids=IDS)
def test_two_threads_equal_one_thread_bit_for_bit(cell, E, hidden, layers):
    """The hidden units are split in two parts whatever the thread count; two threads run one part
    each (with spin barriers), one thread runs both: text, state and generators must be identical.
    Odd sizes give unequal parts, hidden=1 an empty second part."""
    model = make_model(cell, E, seed=3, scale=0.8, hidden=hidden, layers=layers)
    prime = enc("abc ja\nbe")
    opts = dict(temperature=0.9, top_k=6, top_p=0.95)
    out1, st1, prev1, rng1 = _run_sampler(model, 1, prime, 61, **opts)
    out2, st2, prev2, rng2 = _run_sampler(model, 2, prime, 61, **opts)
    np.testing.assert_array_equal(out1, out2)
    np.testing.assert_array_equal(st1.h, st2.h)
    if cell == "lstm":
        np.testing.assert_array_equal(st1.c, st2.c)
    np.testing.assert_array_equal(prev1, prev2)
    np.testing.assert_array_equal(rng1, rng2)
    assert len({tuple(r) for r in out1}) == 3  # the streams really differ
    # and the state after the prime is the model's own (training forward path)
    sm = gen.Sampler(model, num_streams=1, threads=2)
    sm.reset(np.array(prime, np.int32), seed=1)
    _, want = model.logits(np.array(prime[:-1]).reshape(1, -1), model.zero_state(1))
    np.testing.assert_allclose(sm.state.h, want.h, atol=2e-5)


@pytest.mark.parametrize("cell,hidden,layers", [("lstm", 40, 1), ("gru", 33, 2)])
def test_two_threads_equal_one_thread_over_a_long_run(cell, hidden, layers):
    """Thousands of steps through the barriers: a race on any shared buffer shows up as a changed
    character or state bit somewhere."""
    model = make_model(cell, seed=8, scale=0.9, hidden=hidden, layers=layers)
    out1, st1, _, rng1 = _run_sampler(model, 1, enc("ab"), 3000)
    out2, st2, _, rng2 = _run_sampler(model, 2, enc("ab"), 3000)
    np.testing.assert_array_equal(out1, out2)
    np.testing.assert_array_equal(st1.h, st2.h)
    np.testing.assert_array_equal(rng1, rng2)


@pytest.mark.parametrize("failing", [0, 1])
def test_a_thread_that_fails_does_not_leave_the_other_spinning(monkeypatch, failing):
    """If one of the two threads raises before reaching its kernel (a KeyboardInterrupt in the calling
    thread, say), the other must not wait forever at the first barrier: the call raises, promptly."""
    import threading

    model = make_model(seed=5)
    sm = gen.Sampler(model, num_streams=1, threads=2)
    sm.reset(None, seed=1)
    real = ms.K.run_steps

    def flaky(me, *args):
        if me == failing:
            raise KeyboardInterrupt
        return real(me, *args)

    monkeypatch.setattr(ms.K, "run_steps", flaky)
    caught = []

    def call():
        try:
            sm.run(500)
        except BaseException as e:  # noqa: BLE001 - the test wants to see exactly what escaped
            caught.append(e)

    t = threading.Thread(target=call, daemon=True)
    t.start()
    t.join(60)
    assert not t.is_alive(), "the sampler hung after a thread failed"
    assert len(caught) == 1 and isinstance(caught[0], KeyboardInterrupt)
    monkeypatch.setattr(ms.K, "run_steps", real)
    sm.reset(None, seed=1)  # usable again after a reset
    assert sm.run(20).shape == (1, 20)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_two_thread_sampling_works_in_a_forked_child():
    """The helper thread lives in a pool; a forked child must get its own pool (the parent's worker
    does not exist there), or its first two-thread call would spin forever."""
    model = make_model(seed=5)
    want = gen.sample(model, VOCAB, 100, seed=2)[0]
    gen._SAMPLERS.pop(model, None)
    gen._SAMPLERS[model] = {1: gen.Sampler(model, 1, threads=2)}
    assert gen.sample(model, VOCAB, 100, seed=2)[0] == want  # the pool now exists in the parent
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: sample with two threads, report, leave without running pytest's atexit
        try:
            os.write(w, gen.sample(model, VOCAB, 100, seed=2)[0].encode())
        finally:
            os._exit(0)
    os.close(w)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung in two-thread sampling")
    got = os.read(r, 1 << 16).decode()
    os.close(r)
    assert got == want


def test_sampler_threads_argument():
    model = make_model("lstm")
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError):
            gen.Sampler(model, threads=bad)
    assert gen.Sampler(model).threads_for(1000) == 1  # a 16-unit model is below THREAD_MIN_BYTES


# -- validation -------------------------------------------------------------------------------------

def test_unknown_prime_chars_are_listed_or_skipped():
    model = make_model("rnn")
    with pytest.raises(UsageError) as e:
        gen.sample(model, VOCAB, 5, prime="aXbZX", seed=1)
    assert "'X'" in e.value.message and "'Z'" in e.value.message and "2 character" in e.value.message
    assert "--prime-unknown skip" in e.value.hint
    assert e.value.exit_code == 2
    skipped = gen.sample(model, VOCAB, 40, prime="aXbZX", prime_unknown="skip", seed=1)
    assert skipped == gen.sample(model, VOCAB, 40, prime="ab", seed=1)
    # a prime made only of unknown characters behaves like no prime
    assert gen.sample(model, VOCAB, 40, prime="XYZ", prime_unknown="skip", seed=1) == \
        gen.sample(model, VOCAB, 40, seed=1)


@pytest.mark.parametrize("kwargs", [
    dict(length=0), dict(length=-3), dict(length=2.5),
    dict(temperature=-0.1), dict(temperature=float("nan")), dict(temperature=float("inf")),
    dict(temperature="hot"),
    dict(top_k=-1), dict(top_k=1.5),
    dict(top_p=0.0), dict(top_p=-0.2), dict(top_p=1.01), dict(top_p=float("nan")),
    dict(num_samples=0), dict(prime_unknown="ignore"),
])
def test_bad_options_are_usage_errors(kwargs):
    model = make_model("lstm")
    args = dict(length=10, seed=1)
    args.update(kwargs)
    length = args.pop("length")
    with pytest.raises(UsageError):
        gen.sample(model, VOCAB, length, **args)


def test_vocab_size_mismatch_is_usage_error():
    with pytest.raises(UsageError):
        gen.sample(make_model("lstm"), Vocab("abc"), 5, seed=1)


# -- chi-square: the drawn characters follow the model's (filtered) distribution -----------------------

N_DRAWS = 200_000
PRIME = "ab c"


def _counts(texts: list[str]) -> np.ndarray:
    return np.bincount(VOCAB.encode("".join(texts)).astype(np.int64), minlength=V)


@pytest.mark.parametrize("cell,E", [("lstm", 0), ("gru", 6), ("rnn", 0)])
def test_chi_square_full_distribution_many_streams(cell, E):
    model = make_model(cell, E)
    probs = softmax(model_logits(model, enc(PRIME))[-1])
    assert probs.min() * N_DRAWS > 5  # every bin has a usable expected count
    texts = gen.sample(model, VOCAB, 1, prime=PRIME, seed=2024, num_samples=N_DRAWS)
    obs = _counts(texts)
    assert obs.sum() == N_DRAWS
    p = stats.chisquare(obs, probs * N_DRAWS).pvalue
    assert p > P_MIN, (p, obs, probs * N_DRAWS)


def test_chi_square_one_long_stream():
    """One stream of 200,000 characters: observed counts against the sum of the model's own predicted
    probabilities at every step (Model.logits over the generated text, chunked, state carried)."""
    model = make_model("lstm", 6)
    text = gen.sample(model, VOCAB, N_DRAWS, seed=31337, prime=PRIME)[0]
    ids = np.array(enc(PRIME) + enc(text))
    state = model.zero_state(1)
    expected = np.zeros(V)
    step = 20_000
    start = len(PRIME) - 1  # logits after the last prime char predict the first generated one
    _, state = model.logits(ids[:start].reshape(1, -1), state)
    for i in range(start, ids.size - 1, step):
        x = ids[i:min(i + step, ids.size - 1)]
        lg, state = model.logits(x.reshape(1, -1), state)
        expected += softmax(lg[0].astype(np.float64)).sum(axis=0)
    obs = _counts([text])
    assert abs(expected.sum() - N_DRAWS) < 1e-3 * N_DRAWS
    p = stats.chisquare(obs, expected * (N_DRAWS / expected.sum())).pvalue
    assert p > P_MIN, (p, obs, expected)


def _filtered(logits: np.ndarray, temperature: float, top_k: int, top_p: float) -> np.ndarray:
    """Independent top-k then top-p filter of softmax(logits / T), renormalised."""
    probs = softmax(logits / temperature)
    order = np.argsort(-logits, kind="stable")  # descending, ties by lower id
    keep = order[:top_k] if top_k > 0 else order
    q = probs[keep] / probs[keep].sum()
    cum = np.cumsum(q)
    assert np.min(np.abs(cum - top_p)) > 1e-3 or top_p == 1.0  # test must not sit on a boundary
    m = int(np.searchsorted(cum, top_p)) + 1 if top_p < 1 else keep.size
    out = np.zeros_like(probs)
    out[keep[:m]] = probs[keep[:m]]
    return out / out.sum()


@pytest.mark.parametrize("temperature,top_k,top_p", [
    (1.0, 4, 1.0), (1.0, 0, 0.6), (0.8, 7, 0.75), (1.5, 0, 0.9), (1.0, 20, 1.0),
])
def test_chi_square_filtered_distribution(temperature, top_k, top_p):
    model = make_model("lstm")
    want = _filtered(model_logits(model, enc(PRIME))[-1], temperature, top_k, top_p)
    kept = want > 0
    assert 1 < kept.sum() < V or top_k >= V  # the filter actually truncates (or is a no-op for k > V)
    texts = gen.sample(model, VOCAB, 1, prime=PRIME, seed=7, num_samples=N_DRAWS,
                       temperature=temperature, top_k=top_k, top_p=top_p)
    obs = _counts(texts)
    assert obs[~kept].sum() == 0  # nothing outside the kept set, ever
    p = stats.chisquare(obs[kept], want[kept] * N_DRAWS).pvalue
    assert p > P_MIN, (p, obs, want * N_DRAWS)


def test_top_p_always_keeps_at_least_one():
    model = make_model("lstm")
    greedy = gen.sample(model, VOCAB, 30, argmax=True, prime="a")
    assert gen.sample(model, VOCAB, 30, top_p=1e-9, seed=5, prime="a") == greedy


# -- evaluate ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("cell,E", CONFIGS, ids=IDS)
def test_evaluate_equals_independent_nll(cell, E):
    model = make_model(cell, E)
    ids = np.random.default_rng(3).integers(0, V, size=700).astype(np.uint8)
    total, count = gen.evaluate(model, ids)
    assert count == ids.size - 1
    lg = model_logits(model, ids[:-1])  # (N-1, V): prediction of ids[1:]
    logp = lg - lg.max(axis=1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))
    want = -logp[np.arange(ids.size - 1), ids[1:]].sum()
    assert math.isclose(total, want, rel_tol=1e-5)
    for chunk in (1, 7, 256, 699, 10_000):
        t2, c2 = gen.evaluate(model, ids, chunk=chunk)
        assert c2 == count
        assert math.isclose(t2, total, rel_tol=1e-5)


def test_evaluate_two_chars_and_too_short():
    model = make_model("gru")
    ids = np.array([3, 5])
    total, count = gen.evaluate(model, ids)
    assert count == 1
    want = -np.log(softmax(model_logits(model, [3])[-1])[5])
    assert math.isclose(total, want, rel_tol=1e-5)
    for bad in ([], [4]):
        with pytest.raises(UsageError):
            gen.evaluate(model, np.array(bad, dtype=np.int64))

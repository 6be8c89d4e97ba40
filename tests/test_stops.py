"""Stop strings: `charrnn sample --stop STR` (repeatable) and `stop=` in the API end each sample just
before the first stop string it generates; streaming never shows text past one."""
import random

import numpy as np
import pytest
from conftest import one_line_error
from pty_run import run_in_pty

import charrnn
from charrnn.sampling import generate as gen
from charrnn.data.corpus import Vocab
from charrnn.errors import UsageError
from charrnn.engine.model import Model
from charrnn.engine.params import Params, Shape, init_params
from charrnn.sampling.stops import StopCutter, check_stops

CHARS = "\n abcdefghij"
VOCAB = Vocab(CHARS)


def make_model(cell="lstm", seed=0) -> Model:
    shape = Shape(cell, VOCAB.size, 16, 1)
    p = Params(shape)
    init_params(p, np.random.default_rng(seed), scale=0.5)
    return Model(shape, p)


def cut(text: str, stops) -> str:
    """The reference: text up to the first occurrence of any stop string."""
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return text[:min(hits)] if hits else text


# -- the cutter ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("trial", range(200))
def test_any_chunking_gives_the_text_up_to_the_first_stop(trial):
    rng = random.Random(trial)
    text = "".join(rng.choice("abc\n") for _ in range(rng.randint(0, 60)))
    stops = tuple({"".join(rng.choice("abc\n") for _ in range(rng.randint(1, 4))) for _ in range(rng.randint(1, 3))})
    c, shown, pos = StopCutter(stops), [], 0
    while pos < len(text):
        n = rng.randint(1, 7)
        piece = c.feed(text[pos:pos + n])
        shown.append(piece)
        # what has been shown so far is always a prefix of the final text: nothing past a stop, ever
        assert cut(text, stops).startswith("".join(shown))
        pos += n
    shown.append(c.finish())
    assert "".join(shown) == cut(text, stops)
    assert c.done == any(s in text for s in stops)


def test_held_back_text_is_released_when_it_turns_out_not_to_be_a_stop():
    c = StopCutter(("END",))
    assert c.feed("the EN") == "the "  # "EN" may begin END: held
    assert c.feed("Dless") == ""  # it did: the text ends before it
    assert c.done and c.feed("more") == "" and c.finish() == ""
    c = StopCutter(("END",))
    assert c.feed("the EN") == "the " and c.feed("d") == "ENd" and c.finish() == ""
    c = StopCutter(("END",))
    assert c.feed("an E") == "an " and c.finish() == "E"  # the text ran out on a possible start


@pytest.mark.parametrize(("stop", "message"), [("", "empty"), ([""], "empty"), (3, "must be a str"),
                                               (["a", None], "must be a str")])
def test_bad_stop_strings(stop, message):
    with pytest.raises(UsageError, match=message):
        check_stops(stop)


def test_check_stops_normalises():
    assert check_stops(None) == () and check_stops("ab") == ("ab",) and check_stops(["a", "b", "a"]) == ("a", "b")


# -- sampling ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_sample_with_stop_is_the_same_text_cut_at_the_first_stop(cell):
    model = make_model(cell)
    full = gen.sample(model, VOCAB, 400, seed=5, num_samples=3)
    for stops in (["a"], ["\n"], ["ab", "ji"], ["zzz" + "a"]):
        got = gen.sample(model, VOCAB, 400, seed=5, num_samples=3, stop=stops)
        assert got == [cut(t, stops) for t in full]
    assert any(len(t) < 400 for t in gen.sample(model, VOCAB, 400, seed=5, num_samples=3, stop=["a"]))


def test_stop_matches_only_generated_text_not_the_prime():
    model = make_model()
    full = gen.sample(model, VOCAB, 200, seed=2, prime="abc")[0]
    assert gen.sample(model, VOCAB, 200, seed=2, prime="abc", stop="abc")[0] == cut(full, ["abc"])


def test_streaming_never_passes_a_stop_and_generation_ends_early(monkeypatch):
    model = make_model()
    full = gen.sample(model, VOCAB, 5000, seed=9, chunk=16)[0]
    stop = full[300:303]  # a 3-character string that certainly occurs, first at or before 300
    first = full.find(stop)
    calls, streamed = [], []
    run = gen.Sampler.run
    monkeypatch.setattr(gen.Sampler, "run", lambda self, n, **kw: calls.append(n) or run(self, n, **kw))
    got = gen.sample(model, VOCAB, 5000, seed=9, chunk=16, stop=stop,
                     on_text=lambda i, piece: streamed.append(piece))[0]
    assert got == full[:first] == "".join(streamed)
    assert sum(calls) < first + 2 * 16  # it stopped within a chunk of the match, not at 5000


def test_api_sample_stop(trained):
    model = charrnn.load(trained)
    full = model.sample(300, seed=4, temperature=1.0)
    assert model.sample(300, seed=4, temperature=1.0, stop=[" ", "e"]) == cut(full, [" ", "e"])
    assert model.sample(300, seed=4, temperature=1.0, stop="\n") == cut(full, ["\n"])


# -- the CLI -----------------------------------------------------------------------------------------
def test_cli_sample_stop(cli, trained):
    model = charrnn.load(trained)
    full = model.sample(300, prime="the ", seed=11, echo=False)
    r = cli("sample", trained, "-n", 300, "-p", "the ", "--seed", 11, "--stop", "o", "--stop", r"\n")
    assert r.exit_code == 0, r.output
    assert r.stdout == "the " + cut(full, ["o", "\n"]) + "\n"
    r = cli("sample", trained, "-n", 300, "--seed", 11, "-N", 3, "--stop", "e")
    texts = model.sample(300, seed=11)  # stream 0 of -N 3 is the single-stream text
    assert r.stdout.startswith("--- sample 1 ---\n" + cut(texts, ["e"]) + "\n--- sample 2 ---\n")


def test_cli_sample_stop_errors_and_warnings(cli, trained):
    assert "stop string is empty" in one_line_error(cli("sample", trained, "--stop", ""))
    r = cli("sample", trained, "-n", 20, "--seed", 1, "--stop", "\u00e9")
    assert r.exit_code == 0 and "can never match" in r.stderr


def test_sample_stop_in_a_terminal(trained, tmp_path):
    """Streamed to a terminal, the text still ends just before the stop string (nothing past it shown)."""
    model = charrnn.load(trained)
    full = model.sample(2000, prime="a", seed=3, echo=False)
    stop = full[200:202]
    code, out = run_in_pty(["sample", str(trained), "-n", "2000", "-p", "a", "--seed", "3", "--stop", stop], tmp_path)
    assert code == 0, out
    assert out == "a" + cut(full, [stop]) + "\n"

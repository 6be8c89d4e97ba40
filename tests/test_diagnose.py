"""`charrnn diagnose`: its gradient norms against the NumPy reference, the float64 look-inside forward
against the model and the reference, the seeds' lesson (a vanilla RNN's gradient vanishes
geometrically, an LSTM with forget gates near 1 keeps it), the init it compares with, and the command."""
import json

import numpy as np
import pytest
import reference as ref
from conftest import one_line_error

from charrnn.insight import diagnose as dg
from charrnn.insight import forward64 as inside
from charrnn.api import BUNDLED_CORPUS
from charrnn.data.corpus import Vocab
from charrnn.engine.model import Model
from charrnn.engine.params import Shape, init_params

CELLS = ["lstm", "gru", "rnn"]


def small_model(cell: str, V=7, H=4, L=2, seed=0, scale=0.6) -> Model:
    m = Model(Shape(cell, V, H, L))
    init_params(m.params, np.random.default_rng(seed), scale)
    return m


def ref_weighted_loss(params, cell, x, y, h0, c0, w, probe=None) -> float:
    """sum(w * per-position loss) / (B*T) through the reference cells; probe = (layer k, step t, delta):
    delta added to layer k's output h_t, which both its next step and the layer above then read."""
    L, (B, T) = ref.num_layers(params), x.shape
    inp = np.eye(params["decoder.weight"].shape[0])[x.T]
    for k in range(L):
        W = [params[f"rnn.{n}_l{k}"] for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        ck = c0[k] if cell == "lstm" else None
        if probe is not None and probe[0] == k:
            _, t, delta = probe
            hs1, c1, _ = ref.cell_forward(cell, inp[:t + 1], h0[k], ck, *W)
            h_t = hs1[-1] + delta
            rest = ref.cell_forward(cell, inp[t + 1:], h_t, c1, *W)[0] if t + 1 < T else np.zeros((0, B, h_t.shape[1]))
            hs = np.concatenate([hs1[:-1], h_t[None], rest])
        else:
            hs = ref.cell_forward(cell, inp, h0[k], ck, *W)[0]
        inp = hs
    logits = inp @ params["decoder.weight"].T + params["decoder.bias"]
    z = logits - logits.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    nll = -np.take_along_axis(logp, y.T[..., None], -1)[..., 0]  # (T, B)
    return float((w.T * nll).sum() / (B * T))


def ref_trace(params, cell, x, y, h0, c0, w, eps=1e-6) -> list[np.ndarray]:
    """d(weighted loss)/d(h_t) per layer by central differences of the reference: (T, B, H) each."""
    L, (B, T), H = ref.num_layers(params), x.shape, params["rnn.weight_hh_l0"].shape[1]
    out = []
    for k in range(L):
        g = np.zeros((T, B, H))
        for t in range(T):
            for b in range(B):
                for j in range(H):
                    d = np.zeros((B, H))
                    d[b, j] = eps
                    hi = ref_weighted_loss(params, cell, x, y, h0, c0, w, (k, t, d))
                    lo = ref_weighted_loss(params, cell, x, y, h0, c0, w, (k, t, -d))
                    g[t, b, j] = (hi - lo) / (2 * eps)
        out.append(g)
    return out


@pytest.mark.parametrize("cell", CELLS)
def test_gradient_norms_match_reference(cell):
    """The norms diagnose reports are those of the reference's d(loss)/d(h_t): for the last step's loss
    (per stream, against distance) and for the mean loss (against t), on every layer."""
    m = small_model(cell)
    rng = np.random.default_rng(3)
    B, T = 3, 6
    x, y = rng.integers(0, 7, (B, T)), rng.integers(0, 7, (B, T))
    state = m.zero_state(B)
    state.h[:] = rng.uniform(-0.5, 0.5, state.h.shape)
    if state.c is not None:
        state.c[:] = rng.uniform(-0.5, 0.5, state.c.shape)
    params = {n: v.astype(np.float64) for n, v in m.params.views.items()}
    h0, c0 = state.h.astype(np.float64), None if state.c is None else state.c.astype(np.float64)
    last_w = np.zeros((B, T))
    last_w[:, -1] = 1
    loss, last, mean = dg.gradient_norms(m, x, y, state)
    assert loss == pytest.approx(ref.model_loss(params, cell, x, y, h0, c0)[0], rel=1e-5)
    for weights, scale, got in ((last_w, B * T, last), (np.ones((B, T)), B, mean)):
        want = ref_trace(params, cell, x, y, h0, c0, weights)
        for k in range(m.num_layers):
            norms = np.linalg.norm(want[k] * scale, axis=2).mean(axis=1)
            expect = norms[::-1] if got is last else norms
            np.testing.assert_allclose(got[k], expect, rtol=2e-3, atol=1e-7 * expect.max())
    # nothing reaches a step from a later one's loss but through time: the last step's loss gives the
    # last h the largest share on the top layer here
    assert last[-1][0] > 0


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("E", [0, 3])
def test_inside_forward_matches_model_and_reference(cell, E):
    """The float64 look-inside forward: its logits equal Model.logits, its states and gates equal the
    reference cells'."""
    m = Model(Shape(cell, 9, 5, 2, E))
    init_params(m.params, np.random.default_rng(1), 0.5)
    rng = np.random.default_rng(2)
    x = rng.integers(0, 9, (2, 7))
    st = m.zero_state(2)
    st.h[:] = rng.uniform(-1, 1, st.h.shape)
    if st.c is not None:
        st.c[:] = rng.uniform(-1, 1, st.c.shape)
    ins = inside.forward(m.params, x, st.h, st.c)
    logits, new = m.logits(x, st)
    np.testing.assert_allclose(ins.logits, logits, atol=1e-5)
    np.testing.assert_allclose(ins.h_last, new.h, atol=1e-5)
    params = {n: v.astype(np.float64) for n, v in m.params.views.items()}
    inp = params["encoder.weight"][x.T] if E else np.eye(9)[x.T]
    for k in range(2):
        W = [params[f"rnn.{n}_l{k}"] for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        hs, _, cache = ref.cell_forward(cell, inp, st.h[k], None if st.c is None else st.c[k], *W)
        np.testing.assert_allclose(ins.h[k], hs, atol=1e-12)
        for name in inside.GATE_NAMES[cell]:
            if cell == "rnn":
                continue  # the vanilla RNN's one "gate" is its output, checked just above
            want = np.stack([s[name] for s in cache["steps"]])
            np.testing.assert_allclose(ins.gates[k][name], want, atol=1e-12)
        inp = hs


def test_saturation_counts_the_tails():
    ins = inside.forward(small_model("lstm", L=1).params, np.zeros((1, 3), dtype=int))
    ins.gates[0]["f"][:] = np.array([0.05, 0.5, 0.95, 0.99]).reshape(1, 1, 4)
    ins.gates[0]["g"][:] = np.array([-0.95, 0.0, 0.5, 0.95]).reshape(1, 1, 4)
    sat = inside.saturation(ins)[0]
    assert sat["f"] == (0.25, 0.5)
    assert sat["g"] == (0.25, 0.25)


def _text_ids(n=20000):
    text = BUNDLED_CORPUS.read_text(encoding="utf-8")[:n]
    vocab = Vocab(text)
    return vocab, vocab.encode(text)


def test_vanilla_rnn_gradient_vanishes_geometrically_lstm_keeps_it():
    """The seeds' lesson in numbers. An untrained vanilla RNN with small recurrent weights (char-rnn's
    U(-0.08, 0.08)): each step back multiplies the gradient by W_hh^T diag(tanh'), so log||dL_T/dh_t||
    falls on a straight line. An LSTM whose forget gates sit near 1 (bias 5) carries it along c."""
    vocab, ids = _text_ids()
    T = 30
    rnn = dg.initial_model(Shape("rnn", vocab.size, 32, 1), seed=1, init_scale=0.08)
    lstm = dg.initial_model(Shape("lstm", vocab.size, 32, 1), seed=1, init_scale=0.08, forget_bias=5.0)
    r = dg.diagnose([("init", rnn)], ids, 8, T, "text").flows[0]
    s = dg.diagnose([("init", lstm)], ids, 8, T, "text").flows[0]
    factor, r2 = dg.decay(r.last[0])
    assert factor < 0.6, factor          # each step back keeps less than 60 % of the gradient
    assert r2 > 0.95, r2                 # and the decay is geometric: a straight line in log scale
    rnn_ratio = r.last[0][T - 1] / r.last[0][1]
    lstm_ratio = s.last[0][T - 1] / s.last[0][1]
    assert rnn_ratio < 1e-6, rnn_ratio
    assert lstm_ratio > 1e-2, lstm_ratio
    assert lstm_ratio / rnn_ratio > 1e4
    assert s.forget[0] > 0.95            # sigmoid(5) is 0.993; the inputs move it a little


def test_init_is_the_trainers_init(corpus, tmp_path):
    """diagnose's 'init' column is the exact weights `charrnn train` started from (same seed, scale)."""
    from charrnn.config import Config
    from charrnn.data.corpus import load_corpus
    from charrnn.training.trainer import Trainer
    cfg = Config.from_dict({"model": {"hidden_size": 8, "num_layers": 2, "init_scale": 0.1},
                            "train": {"seed": 11, "batch_size": 2, "seq_len": 8}})
    trainer = Trainer(cfg, load_corpus(corpus), tmp_path, None, (2, 8))
    init = dg.initial_model(trainer.model.shape, cfg.train.seed, cfg.model.init_scale)
    np.testing.assert_array_equal(init.params.flat, trainer.model.params.flat)


# -- the command -------------------------------------------------------------------------------------
def test_diagnose_checkpoint_table_json_png(cli, trained, tmp_path):
    mpimg = pytest.importorskip("matplotlib.image")
    out = tmp_path / "d.png"
    r = cli("diagnose", trained, "-o", out, "--seq-len", 12, "--batch-size", 4)
    assert r.exit_code == 0, r.output
    assert "gradient reaching h_t" in r.stdout and "gate saturation" in r.stdout
    assert "trained" in r.stdout and "init" in r.stdout and "mean f" in r.stdout
    img = mpimg.imread(out)
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 600
    assert img[..., :3].std() > 0.05  # not a blank canvas
    r = cli("diagnose", trained, "--json", "--seq-len", 12, "--batch-size", 4)
    d = json.loads(r.stdout)
    assert set(d["weights"]) == {"trained", "init"}
    layer = d["weights"]["trained"]["layers"][0]
    assert len(layer["grad_last_step_by_distance"]) == 12 == len(layer["grad_mean_loss_by_step"])
    assert set(layer["saturation"]) == {"i", "f", "g", "o"} and 0 < layer["mean_forget_gate"] < 1
    assert d["weights"]["trained"]["loss"] < d["weights"]["init"]["loss"]  # training did something


def test_diagnose_fresh_model_terminal(cli, corpus):
    r = cli("diagnose", "--model", "gru", "--hidden", 8, "--layers", 2, "--text", corpus, "--seq-len", 20,
            "--terminal")
    assert r.exit_code == 0, r.output
    assert "GRU 2x8" in r.stdout and "wrote" not in r.stderr
    for gate in ("r", "z", "n"):
        assert f" {gate} " in r.stdout


def test_diagnose_without_matplotlib_falls_back(cli, trained, monkeypatch, tmp_path):
    import charrnn.insight.figures
    monkeypatch.setattr(charrnn.insight.figures, "available", lambda: False)
    r = cli("diagnose", trained, "--seq-len", 8)
    assert r.exit_code == 0 and "gate saturation" in r.stdout and "pip install 'charrnn[plot]'" in r.stderr
    line = one_line_error(cli("diagnose", trained, "-o", tmp_path / "x.png"))
    assert "matplotlib" in line and "charrnn[plot]" in line
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("args, words", [
    ([], "exactly one of CHECKPOINT or --model"),
    (["TRAINED", "--model", "rnn"], "exactly one of CHECKPOINT or --model"),
    (["TRAINED", "--hidden", "8"], "--hidden describes a fresh model"),
    (["--model", "rnn", "--forget-bias", "3"], "LSTM only"),
    (["--model", "rnn", "--text", "CORPUS", "--seq-len", "100000"], "needs at least 200001"),
    (["--model", "rnn", "--seq-len", "1"], "--seq-len >= 2"),
    (["--model", "rnn", "--hidden", "0"], "--hidden and --layers must be >= 1"),
    (["TRAINED", "-o", "out.jpg"], "written as PNG"),
    (["TRAINED", "--text", "MISSING"], "does not exist"),
    (["NOWHERE"], "does not exist"),
])
def test_diagnose_bad_input(cli, trained, corpus, tmp_path, args, words):
    subst = {"TRAINED": trained, "CORPUS": corpus, "MISSING": tmp_path / "missing.txt", "NOWHERE": tmp_path / "no"}
    line = one_line_error(cli("diagnose", *[subst.get(a, a) for a in args]))
    assert words in line, line

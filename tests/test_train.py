"""Training end to end through the Python API (`charrnn.train`, `charrnn.load`): a non-ASCII corpus,
determinism, every optimizer and schedule, cells/dropout/embedding, stop conditions, pruning."""
import json
import math
import re
import time

import numpy as np
import pytest
from conftest import ENGLISH_LINES, VIETNAMESE_LINES, make_text, step_records
from rich.console import Console

import charrnn
from charrnn.checkpoints import npz as checkpoint
from charrnn.errors import UsageError


def quiet() -> Console:
    return Console(file=open("/dev/null", "w"))  # noqa: SIM115 - lives as long as the run


def tiny_cfg(**sections) -> dict:
    """A tiny config dict; keyword arguments are sections whose keys override the defaults."""
    cfg = {"model": {"hidden_size": 16, "num_layers": 1},
           "optim": {"lr": 0.01},
           "train": {"batch_size": 4, "seq_len": 16, "max_steps": 20, "max_epochs": 0, "eval_every": 10,
                     "sample_every": 0, "checkpoint_every": 0, "log_every": 1}}
    for section, values in sections.items():
        cfg.setdefault(section, {}).update(values)
    return cfg


def run(corpus, out, **sections):
    return charrnn.train(corpus, tiny_cfg(**sections), out, live=False, console=quiet())


def metrics(run_dir) -> list[dict]:
    return step_records(run_dir)


def losses(run_dir) -> list[float]:
    return [m["train_loss"] for m in metrics(run_dir)]


# -- a non-ASCII corpus ---------------------------------------------------------------------------------
def test_vietnamese_corpus_trains_and_samples(vi_corpus, tmp_path):
    text = vi_corpus.read_text(encoding="utf-8")
    best = run(vi_corpus, tmp_path / "run", train={"max_steps": 40, "sample_every": 20, "sample_length": 50})
    assert best == tmp_path / "run" / "best.npz" and best.is_file()
    model = charrnn.load(best)
    # the vocabulary is the set of code points: each accented letter is one token, no UTF-8 byte pieces
    assert model.vocab.chars == "".join(sorted(set(text)))
    for ch in "ăâđôưữệờõ":
        assert ch in model.vocab.chars
    assert model.vocab.encode("chữ tài").size == len("chữ tài") == 7
    assert not any(0x80 <= ord(c) < 0xC0 for c in model.vocab.chars)  # no stray continuation bytes
    out = model.sample(500, seed=1, prime="Trăm năm")
    assert out.startswith("Trăm năm") and len(out) == 508 and set(out) <= set(model.vocab.chars)
    samples = (tmp_path / "run" / "samples.txt").read_text(encoding="utf-8")
    body = "".join(re.split(r"^=== step \d+ ===$", samples, flags=re.M))
    assert set(body) <= set(model.vocab.chars)
    # training learned something: far better than uniform over the vocabulary
    assert model.loss(text[:600]) < 0.85 * math.log(model.vocab.size)


# -- determinism ------------------------------------------------------------------------------------------
def test_same_seed_same_losses_different_seed_different(corpus, tmp_path):
    kw = dict(model={"dropout": 0.2, "num_layers": 2}, train={"seed": 5, "max_steps": 25, "sample_every": 10})
    run(corpus, tmp_path / "a", **kw)
    run(corpus, tmp_path / "b", **kw)
    a, b = losses(tmp_path / "a"), losses(tmp_path / "b")
    assert len(a) == 25 and a == b  # bit for bit: floats compared exactly
    kw["train"] = {**kw["train"], "seed": 6}
    run(corpus, tmp_path / "c", **kw)
    c = losses(tmp_path / "c")
    assert c != a and not any(x == y for x, y in zip(a, c))
    assert (tmp_path / "a" / "samples.txt").read_text() == (tmp_path / "b" / "samples.txt").read_text()


# -- optimizers and schedules -------------------------------------------------------------------------------
LR = {"adam": 0.01, "rmsprop": 0.01, "adagrad": 0.1, "sgd": 1.0}


@pytest.mark.parametrize("schedule", ["constant", "step", "cosine"])
@pytest.mark.parametrize("optimizer", list(LR))
def test_optimizer_and_schedule_lower_the_loss(corpus, tmp_path, optimizer, schedule):
    optim = {"optimizer": optimizer, "lr": LR[optimizer], "schedule": schedule, "decay_every": 10,
             "decay_rate": 0.5, "warmup_steps": 5 if schedule == "cosine" else 0}
    run(corpus, tmp_path / "r", optim=optim, train={"max_steps": 30, "eval_every": 0})
    ms = metrics(tmp_path / "r")
    ls = [m["train_loss"] for m in ms]
    assert len(ls) == 30
    assert np.mean(ls[-5:]) < np.mean(ls[:5]) - 0.2, ls
    lrs = [m["lr"] for m in ms]  # the rate each logged step's update used
    lr = LR[optimizer]
    if schedule == "constant":
        assert lrs == [lr] * 30
    elif schedule == "step":
        assert lrs[:10] == [lr] * 10 and lrs[10] == pytest.approx(lr / 2) and lrs[29] == pytest.approx(lr / 4)
    else:
        assert lrs[:5] == pytest.approx([lr * k / 5 for k in range(1, 6)])  # warmup
        assert lrs[5] == pytest.approx(lr) and lrs[-1] == pytest.approx(0.0)
        assert all(x >= y for x, y in zip(lrs[5:], lrs[6:]))
    _, meta = checkpoint.load(tmp_path / "r" / "last.npz")
    assert meta["config"]["optim"]["optimizer"] == optimizer


def test_cosine_without_a_step_limit_is_refused_before_writing(corpus, tmp_path):
    with pytest.raises(UsageError, match="cosine schedule needs"):
        run(corpus, tmp_path / "r", optim={"schedule": "cosine", "schedule_length": "steps"},
            train={"max_steps": 0, "max_epochs": 0, "max_time": 5})
    assert not (tmp_path / "r").exists()


# -- cells, dropout, embedding -------------------------------------------------------------------------------
@pytest.mark.parametrize("model", [
    {"cell": "gru"}, {"cell": "rnn"}, {"cell": "lstm", "embedding_size": 8},
    {"cell": "gru", "num_layers": 2, "dropout": 0.3, "embedding_size": 6}, {"cell": "lstm", "num_layers": 2,
                                                                            "dropout": 0.5}])
def test_cells_dropout_embedding(corpus, tmp_path, model):
    best = run(corpus, tmp_path / "r", model=model, train={"max_steps": 30})
    ls = losses(tmp_path / "r")
    assert all(math.isfinite(x) for x in ls) and np.mean(ls[-5:]) < np.mean(ls[:5])
    m = charrnn.load(best)
    assert m.net.shape.cell == model["cell"] and m.net.shape.embedding_size == model.get("embedding_size", 0)
    assert ("encoder.weight" in m._loaded.arrays) == bool(model.get("embedding_size"))
    text = m.sample(100, seed=0)
    assert len(text) == 100 and set(text) <= set(m.vocab.chars)


# -- stop conditions -------------------------------------------------------------------------------------
def test_max_steps(corpus, tmp_path):
    run(corpus, tmp_path / "r", train={"max_steps": 7, "eval_every": 0})
    assert [m["step"] for m in metrics(tmp_path / "r")] == list(range(1, 8))
    _, meta = checkpoint.load(tmp_path / "r" / "last.npz")
    assert meta["progress"]["step"] == 7


def test_max_epochs(corpus, tmp_path):
    # a short corpus so an epoch is a handful of steps
    small = tmp_path / "small.txt"
    small.write_text(make_text(ENGLISH_LINES, 12), encoding="utf-8")
    run(small, tmp_path / "r", train={"max_steps": 0, "max_epochs": 2, "eval_every": 0})
    ms = metrics(tmp_path / "r")
    _, meta = checkpoint.load(tmp_path / "r" / "last.npz")
    n_train = meta["corpus"]["n_chars"] - 2 * int(meta["corpus"]["n_chars"] * 0.05)
    per_epoch = ((n_train - 1) // 4) // 16
    epochs = [m["epoch"] for m in ms]
    assert epochs[0] == 1 and epochs[-1] == 2 and sorted(epochs) == epochs
    assert epochs.count(1) == per_epoch  # epoch 1 starts at offset 0: every full batch
    assert 0 < epochs.count(2) <= per_epoch  # later epochs start at a random offset < seq_len
    assert meta["progress"]["epoch"] == 1


def test_auto_epochs_end_an_unbounded_run_but_not_a_users_step_budget(tmp_path):
    small = tmp_path / "small.txt"  # one batch (B4 x T16) per epoch
    small.write_text("abcdefgh" * 9, encoding="utf-8")
    run(small, tmp_path / "auto", train={"max_steps": 0, "max_epochs": "auto", "eval_every": 0})
    assert metrics(tmp_path / "auto")[-1]["epoch"] == 20
    run(small, tmp_path / "steps", train={"max_steps": 30, "max_epochs": "auto", "eval_every": 0})
    ms = metrics(tmp_path / "steps")
    assert ms[-1]["step"] == 30 and ms[-1]["epoch"] > 20


def test_max_time(corpus, tmp_path):
    t0 = time.perf_counter()
    run(corpus, tmp_path / "r", train={"max_steps": 0, "max_epochs": 0, "max_time": 1.0, "eval_every": 0})
    assert time.perf_counter() - t0 < 20
    ms = metrics(tmp_path / "r")
    _, meta = checkpoint.load(tmp_path / "r" / "last.npz")
    # the limit is checked before each step: no step starts after it, and the run stops promptly
    assert len(ms) > 2 and ms[-2]["elapsed_s"] < 1.0 <= meta["progress"]["elapsed_s"] < 3.0
    assert meta["progress"]["step"] == ms[-1]["step"]


# -- checkpoints ------------------------------------------------------------------------------------------
def test_keep_last_prunes_old_checkpoints(corpus, tmp_path):
    run(corpus, tmp_path / "r", train={"max_steps": 30, "eval_every": 10, "checkpoint_every": 3, "keep_last": 2,
                                        "seed": 3})
    r = tmp_path / "r"
    names = sorted(p.name for p in r.glob("step*.npz"))
    best_step = checkpoint.load(r / "best.npz")[1]["progress"]["step"]
    kept_steps = sorted(int(re.match(r"step(\d+)", n).group(1)) for n in names)
    # the two newest, plus the one best.npz links to (never pruned while it is best)
    assert kept_steps[-2:] == [27, 30]
    assert set(kept_steps) <= {27, 30, best_step}
    for p in [*r.glob("*.npz")]:
        checkpoint.load(p)
    assert checkpoint.load(r / "last.npz")[1]["progress"]["step"] == 30


def test_keep_last_zero_keeps_all(corpus, tmp_path):
    run(corpus, tmp_path / "r", train={"max_steps": 12, "eval_every": 0, "checkpoint_every": 3, "keep_last": 0})
    names = sorted(p.name for p in (tmp_path / "r").glob("step*.npz"))
    # eval_every 0: only the last step is evaluated, so only its name carries a val loss
    assert names[1:] == ["step3.npz", "step6.npz", "step9.npz"] and re.fullmatch(r"step12_val\d+\.\d{4}\.npz", names[0])


def test_checkpoint_layout(corpus, tmp_path):
    best = run(corpus, tmp_path / "r", model={"num_layers": 2}, train={"max_steps": 10})
    with np.load(best, allow_pickle=False) as z:
        names = set(z.files)
    V = charrnn.load(best).vocab.size
    for k in (0, 1):
        assert {f"rnn.weight_ih_l{k}", f"rnn.weight_hh_l{k}", f"rnn.bias_ih_l{k}", f"rnn.bias_hh_l{k}"} <= names
    assert {"decoder.weight", "decoder.bias", "meta", "optim.m", "optim.v", "optim.t", "state.h", "state.c"} <= names
    arrays, meta = checkpoint.load(best)
    assert arrays["decoder.weight"].shape == (V, 16) and arrays["rnn.weight_ih_l0"].shape == (64, V)
    assert meta["format_version"] == checkpoint.FORMAT_VERSION and len(meta["vocab"]) == V


# -- the Python API -----------------------------------------------------------------------------------------
def test_python_api_train_load_sample_loss(corpus, tmp_path):
    best = charrnn.train(str(corpus), tiny_cfg(train={"max_steps": 40, "seed": 2}), str(tmp_path / "r"),
                         live=False, console=quiet())
    assert best == tmp_path / "r" / "best.npz"
    m = charrnn.load(best)
    assert m.path == best and "LSTM" in repr(m).upper()
    assert charrnn.load(tmp_path / "r").path == best  # a run directory means its best.npz
    a = m.sample(120, seed=3, prime="the ")
    assert a == m.sample(120, seed=3, prime="the ") and a != m.sample(120, seed=4, prime="the ")
    assert a.startswith("the ") and len(a) == 124  # the prime, then 120 characters, as `charrnn sample`
    assert m.sample(120, seed=3, prime="the ", echo=False) == a[4:]  # like --no-echo
    g = m.sample(50, argmax=True)
    assert g == m.sample(50, temperature=0) == m.sample(50, top_k=1, seed=9)
    assert len(m.sample(30, top_p=0.5, seed=1)) == 30
    text = corpus.read_text()[:400]
    loss = m.loss(text)
    assert 0 < loss < math.log(m.vocab.size)
    assert m.loss(text) == loss
    with pytest.raises(UsageError):
        m.loss("THE QUICK")  # characters the model has never seen


def test_python_api_config_path_and_options(corpus, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: {hidden_size: 12, num_layers: 1}\ntrain: {batch_size: 2, seq_len: 8, max_steps: 3}\n")
    best = charrnn.train(corpus, cfg, tmp_path / "r", options={"train.max_steps": 4}, sets=["optim.lr=0.02"],
                         live=False, console=quiet())
    meta = charrnn.load(best).meta
    assert meta["config"]["model"]["hidden_size"] == 12 and meta["progress"]["step"] == 4
    assert meta["config"]["optim"]["lr"] == 0.02


def test_vocabulary_order_and_encoding(vi_corpus, tmp_path):
    text = vi_corpus.read_text(encoding="utf-8")
    run(vi_corpus, tmp_path / "r", train={"max_steps": 2})
    m = charrnn.load(tmp_path / "r")
    assert list(m.vocab.chars) == sorted(set(text))
    assert m.vocab.decode(m.vocab.encode(VIETNAMESE_LINES[0])) == VIETNAMESE_LINES[0]


# -- divergence guard (issue 5 point 3) ------------------------------------------------------------------------
def inject_nan_grads(monkeypatch, bad) -> dict:
    """Make Model.forward_backward put a NaN into the gradient on the (1-based) training steps in `bad`
    (a set, or a callable step -> bool). Records the weights before each bad step and one step later."""
    from charrnn.engine.model import Model
    real = Model.forward_backward
    seen = {"calls": 0, "before": {}, "after": {}}
    is_bad = bad if callable(bad) else bad.__contains__

    def forward_backward(self, x, y, state, grads, masks=None):
        out = real(self, x, y, state, grads, masks)
        seen["calls"] += 1
        n = seen["calls"]
        if is_bad(n - 1) and n - 1 in seen["before"]:
            seen["after"][n - 1] = self.params.flat.copy()
        if is_bad(n):
            grads.flat[0] = np.nan
            seen["before"][n] = self.params.flat.copy()
        return out
    monkeypatch.setattr(Model, "forward_backward", forward_backward)
    return seen


def test_nan_gradient_step_is_skipped(monkeypatch, cli, corpus, tmp_path):
    from conftest import TINY
    seen = inject_nan_grads(monkeypatch, {4, 9})
    run_dir = tmp_path / "r"
    r = cli("train", corpus, "--out", run_dir, *TINY, "--max-steps", 15, "--eval-every", 5, "--sample-every", 0,
            "--set", "train.log_every=1", "--set", "train.max_bad_steps=2")
    assert r.exit_code == 0, r.output
    assert r.stderr.count("non-finite loss or gradient, update skipped") == 2
    assert "step 4:" in r.stderr and "step 9:" in r.stderr
    for step in (4, 9):  # the skipped update left every weight exactly as it was
        assert np.array_equal(seen["before"][step], seen["after"][step])
    arrays, meta = checkpoint.load(run_dir / "last.npz")
    assert meta["progress"]["bad_steps"] == 2 and meta["progress"]["bad_in_row"] == 0
    assert int(arrays["optim.t"][0]) == 13  # the optimizer never saw the two bad gradients
    m = charrnn.load(run_dir / "last.npz")
    assert np.isfinite(m.net.params.flat).all()
    assert json.loads(cli("info", run_dir / "last.npz", "--json").stdout)["training"]["skipped_steps"] == 2
    assert all(math.isfinite(x) for x in losses(run_dir))


def test_consecutive_nan_steps_stop_training(monkeypatch, cli, corpus, tmp_path):
    from conftest import TINY, one_line_error
    inject_nan_grads(monkeypatch, lambda n: n >= 6)
    run_dir = tmp_path / "r"
    r = cli("train", corpus, "--out", run_dir, *TINY, "--max-steps", 30, "--eval-every", 0, "--sample-every", 0,
            "--checkpoint-every", 2, "--set", "train.max_bad_steps=3", "--keep-last", 0)
    line = one_line_error(r, 1)
    assert "training diverged: 3 non-finite steps in a row at step 8" in line
    assert sorted(p.name for p in run_dir.glob("step*.npz")) == ["step2.npz", "step4.npz", "step6.npz"]
    for p in run_dir.glob("*.npz"):
        assert np.isfinite(charrnn.load(p).net.params.flat).all()
    assert checkpoint.load(run_dir / "last.npz")[1]["progress"]["step"] == 6


def test_nan_weights_are_never_checkpointed(monkeypatch, cli, corpus, tmp_path):
    """If the weights themselves ever went non-finite, no checkpoint would be written over a good one."""
    from conftest import TINY, one_line_error

    from charrnn.engine.optim import Adam
    real = Adam._update

    def update(self, params, grads, lr, decay, mom):
        real(self, params, grads, lr, decay, mom)
        if self.t == 5:
            params[0] = np.nan
    monkeypatch.setattr(Adam, "_update", update)
    run_dir = tmp_path / "r"
    r = cli("train", corpus, "--out", run_dir, *TINY, "--max-steps", 30, "--eval-every", 0, "--sample-every", 0,
            "--checkpoint-every", 1, "--set", "train.max_bad_steps=3", "--keep-last", 0)
    line = one_line_error(r, 1)
    assert "training diverged" in line
    assert "weights are not finite; checkpoint not written" in r.stderr
    assert checkpoint.load(run_dir / "last.npz")[1]["progress"]["step"] == 4
    assert not list(run_dir.glob("step5*.npz"))
    for p in run_dir.glob("*.npz"):
        assert np.isfinite(charrnn.load(p).net.params.flat).all()

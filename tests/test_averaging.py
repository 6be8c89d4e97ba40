"""Weight averaging (optim.ema): the average's arithmetic, that evaluation, samples and checkpoints use
the average while training moves the other weights, and that a resume stays exact."""
import json
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import TINY, one_line_error, step_records

import charrnn
from charrnn.checkpoints import npz as checkpoint
from charrnn.engine.averaging import TRAIN_KEY, Averager, decay_at
from charrnn.config import Config
from charrnn.data.corpus import load_corpus
from charrnn.training.trainer import Trainer


def test_average_follows_the_textbook_formula():
    """avg_1 = w_1; avg_n = d_n avg_{n-1} + (1 - d_n) w_n with d_n = min(decay, (1+n)/(10+n)), in float64."""
    rng = np.random.default_rng(0)
    a, want = Averager(0.9), None
    for n in range(1, 40):
        w = rng.normal(size=50).astype(np.float32)
        a.update(w, n)
        d = decay_at(0.9, n)
        want = w.astype(np.float64) if want is None else d * want + (1 - d) * w
        np.testing.assert_allclose(a.avg, want, rtol=1e-5, atol=1e-6)
    assert decay_at(0.9, 1) == pytest.approx(2 / 11) and decay_at(0.9, 1000) == 0.9


def test_swap_puts_the_training_weights_back():
    a, w = Averager(0.5), np.arange(6, dtype=np.float32)
    with a.swapped_in(w):  # before the first update: nothing to swap
        assert a.train_weights() is None
    a.update(w, 1)
    a.update(w + 10, 2)
    avg = a.avg.copy()
    with a.swapped_in(w):
        np.testing.assert_array_equal(w, avg)
        held = a.train_weights()
        held[:] = -1  # a copy: changing it changes nothing
    np.testing.assert_array_equal(w, np.arange(6, dtype=np.float32))
    np.testing.assert_array_equal(a.avg, avg)


@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5])
def test_bad_ema_is_one_line(cli, corpus, tmp_path, bad):
    msg = one_line_error(cli("train", corpus, "--out", tmp_path / "r", *TINY, "--set", f"optim.ema={bad}"))
    assert "optim.ema must be in [0, 1)" in msg


def make_trainer(corpus, tmp_path, ema: float) -> Trainer:
    cfg = Config.from_dict({"model": {"hidden_size": 16, "num_layers": 2},
                            "optim": {"ema": ema, "lr": 0.02, "schedule": "constant"},
                            "train": {"seed": 3, "batch_size": 4, "seq_len": 16, "sample_length": 20}})
    quiet = SimpleNamespace(warn=lambda msg: None, info=lambda msg: None)
    return Trainer(cfg, load_corpus(corpus), tmp_path, quiet, (4, 16))


def test_trainer_evaluates_samples_and_saves_the_average(corpus, tmp_path, monkeypatch):
    tr = make_trainer(corpus, tmp_path, 0.8)
    seen = []
    for i in range(12):
        tr.train_step(*tr._next_batch())
        seen.append(tr.model.params.flat.copy())
    want = seen[0].astype(np.float64)
    for n, w in enumerate(seen[1:], start=2):
        d = decay_at(0.8, n)
        want = d * want + (1 - d) * w
    np.testing.assert_allclose(tr.averager.avg, want, rtol=1e-5, atol=1e-6)
    assert not np.allclose(tr.averager.avg, seen[-1], atol=1e-4)  # the average is not the weights

    trained = tr.model.params.flat.copy()
    got = tr.evaluate()
    np.testing.assert_array_equal(tr.model.params.flat, trained)  # evaluation gave the weights back
    averager, tr.averager = tr.averager, None
    tr.model.params.flat[:] = averager.avg
    assert tr.evaluate() == got  # the same loss as the average put in by hand
    tr.model.params.flat[:] = trained
    tr.averager = averager
    import charrnn.sampling.generate as generate
    seen_by_sampler = []
    real_sample = generate.sample

    def spy(model, *args, **kwargs):
        seen_by_sampler.append(model.params.flat.copy())
        return real_sample(model, *args, **kwargs)

    monkeypatch.setattr(generate, "sample", spy)
    assert tr.sample_text()
    np.testing.assert_array_equal(seen_by_sampler[0], averager.avg)
    np.testing.assert_array_equal(tr.model.params.flat, trained)

    path = tr.save(got)
    arrays, _ = checkpoint.load(path)
    loaded = charrnn.load(path)
    np.testing.assert_array_equal(loaded.net.params.flat, averager.avg)  # what sample/eval/export read
    np.testing.assert_array_equal(arrays[TRAIN_KEY], trained)
    np.testing.assert_array_equal(tr.model.params.flat, trained)


def test_an_error_inside_the_swap_gives_the_weights_back(corpus, tmp_path, monkeypatch):
    tr = make_trainer(corpus, tmp_path, 0.5)
    for _ in range(3):
        tr.train_step(*tr._next_batch())
    trained = tr.model.params.flat.copy()

    def boom(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(tr.model, "loss", boom)
    with pytest.raises(KeyboardInterrupt):
        tr.evaluate()
    np.testing.assert_array_equal(tr.model.params.flat, trained)
    with tr.averaged(), pytest.raises(RuntimeError):  # never nested: the inner one would hide the weights
        with tr.averaged():
            pass


def test_average_counts_updates_not_skipped_steps(corpus, tmp_path):
    """A step whose loss is not finite changes nothing, the average included."""
    tr = make_trainer(corpus, tmp_path, 0.9)
    tr.train_step(*tr._next_batch())
    tr.train_step(*tr._next_batch())
    avg, t = tr.averager.avg.copy(), tr.opt.t
    x, y = tr._next_batch()
    tr.model.params["decoder.bias"][0] = np.nan
    trained = tr.model.params.flat.copy()
    tr.train_step(x, y)  # NaN loss: skipped
    np.testing.assert_array_equal(tr.averager.avg, avg)
    assert tr.opt.t == t and tr.bad_steps == 1
    np.testing.assert_array_equal(tr.model.params.flat, trained)


def test_without_ema_nothing_changes(corpus, tmp_path):
    tr = make_trainer(corpus, tmp_path, 0.0)
    tr.train_step(*tr._next_batch())
    arrays, _ = checkpoint.load(tr.save(tr.evaluate()))
    assert tr.averager is None and TRAIN_KEY not in arrays
    np.testing.assert_array_equal(charrnn.load(tr.run_dir / "last.npz").net.params.flat, tr.model.params.flat)


def test_metrics_log_both_losses_with_ema(cli, corpus, tmp_path):
    """With optim.ema each evaluation also scores the weights being trained (metrics.jsonl), and those
    weights are exactly the ones a run without ema trains: the two losses are a fair comparison."""
    common = [*TINY, "--lr", 0.02, "--eval-every", 5, "--checkpoint-every", 0, "--max-steps", 15,
              "--set", "optim.schedule=constant"]
    r = cli("train", corpus, "--out", tmp_path / "ema", *common, "--set", "optim.ema=0.9")
    assert r.exit_code == 0, r.output
    r = cli("train", corpus, "--out", tmp_path / "plain", *common)
    assert r.exit_code == 0, r.output
    evals = lambda run: [rec for line in (run / "metrics.jsonl").read_text().splitlines()
                         if "val_loss" in (rec := json.loads(line))]
    ema, plain = evals(tmp_path / "ema"), evals(tmp_path / "plain")
    assert [e["step"] for e in ema] == [e["step"] for e in plain] and len(ema) >= 3
    for e, p in zip(ema, plain):
        assert e["val_loss_train_weights"] == p["val_loss"]  # same training path, bit for bit
        assert "val_loss_train_weights" not in p
    assert any(e["val_loss"] != e["val_loss_train_weights"] for e in ema)


EMA = [*TINY, "--lr", 0.02, "--eval-every", 5, "--sample-every", 10, "--checkpoint-every", 0,
       "--set", "optim.schedule=constant", "--set", "optim.ema=0.9"]


def test_resume_with_ema_is_exact(cli, corpus, tmp_path):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    r = cli("train", corpus, "--out", whole, *EMA, "--max-steps", 30)
    assert r.exit_code == 0, r.output
    assert "weight average (ema 0.9)" in r.stdout + r.stderr  # the run's header says so
    r = cli("train", corpus, "--out", parts, *EMA, "--max-steps", 13)
    assert r.exit_code == 0, r.output
    r = cli("train", "--resume", parts, "--max-steps", 30, "--plain")
    assert r.exit_code == 0, r.output
    strip = lambda run: [{k: v for k, v in rec.items() if k not in ("chars_per_sec", "elapsed_s")}
                         for rec in step_records(run)]
    # the first part ended at step 13 with an evaluation the run left alone did not make (between its
    # evaluations every 5 steps): that one record is the only difference
    stopped = [m for m in strip(parts) if m["step"] == 13]
    assert len(stopped) == 1 and "val_loss" in stopped[0] and "val_loss_train_weights" in stopped[0]
    assert [m for m in strip(parts) if m["step"] != 13] == strip(whole)
    a, _ = checkpoint.load(whole / "last.npz")
    b, _ = checkpoint.load(parts / "last.npz")
    assert TRAIN_KEY in a and a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    # the best checkpoint is the best average, and it samples
    r = cli("sample", whole / "best.npz", "-n", 40, "--seed", 1)
    assert r.exit_code == 0 and len(r.stdout) >= 40, r.output

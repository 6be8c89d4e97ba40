"""The recipe levers of issue 14 as config keys: the init choices (model.init, init_scale, forget_bias,
orthogonal_recurrent), a cosine/linear schedule that follows max_time (optim.schedule_length=auto), and
a clock that counts start-up against max_time. The defaults keep the behaviour from before the keys."""
import json
import time

import numpy as np
import pytest
from test_train import metrics, run, tiny_cfg

import charrnn
from charrnn.checkpoints import npz as checkpoint
from charrnn.config import Config, resolve
from charrnn.errors import UsageError
from charrnn.engine.params import Params, Shape, init_params


def drawn(cell="lstm", V=7, H=8, L=2, E=0, seed=3, **kw) -> Params:
    p = Params(Shape(cell, V, H, L, E), np.float32)
    init_params(p, np.random.default_rng(seed), **kw)
    return p


def test_default_init_is_one_uniform_draw():
    """The default (issue 14, measured): one uniform draw over the flat buffer, nothing set afterwards."""
    np.testing.assert_array_equal(drawn().flat, drawn(forget_bias=None).flat)
    assert Config.from_dict({}).model.forget_bias is None


def test_forget_bias_one_is_char_rnns_init():
    """forget_bias=1 (char-rnn's, the default before issue 14): the LSTM forget block bias_ih 1, bias_hh 0."""
    p = drawn(forget_bias=1.0)
    want = np.random.default_rng(3).uniform(-0.08, 0.08, size=len(p)).astype(np.float32)
    H = 8
    for k in range(2):
        p_ih, p_hh = p[f"rnn.bias_ih_l{k}"], p[f"rnn.bias_hh_l{k}"]
        assert np.all(p_ih[H:2 * H] == 1.0) and np.all(p_hh[H:2 * H] == 0.0)
        p_ih[H:2 * H] = p_hh[H:2 * H] = 0.0
    mask = np.ones(len(p), bool)
    mask[p.flat == 0.0] = False
    np.testing.assert_array_equal(p.flat[mask], want[mask])


def test_forget_bias_none_leaves_every_parameter_uniform():
    p = drawn(forget_bias=None)
    np.testing.assert_array_equal(p.flat, np.random.default_rng(3).uniform(-0.08, 0.08, len(p)).astype(np.float32))
    assert not np.any(drawn(cell="gru", forget_bias=2.0).flat == 2.0)  # LSTM only


def test_forget_bias_value():
    p = drawn(forget_bias=2.5, scale=0.01)
    assert np.all(p["rnn.bias_ih_l1"][8:16] == 2.5) and np.all(p["rnn.bias_hh_l1"][8:16] == 0.0)
    assert np.abs(p["rnn.bias_ih_l1"][:8]).max() <= 0.01


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_orthogonal_recurrent_blocks(cell):
    H = 8
    p = drawn(cell=cell, orthogonal_recurrent=True)
    w = p["rnn.weight_hh_l1"].astype(np.float64)
    for g in range(w.shape[0] // H):
        block = w[g * H:(g + 1) * H]
        np.testing.assert_allclose(block @ block.T, np.eye(H), atol=1e-5)
    plain = drawn(cell=cell)
    np.testing.assert_array_equal(p["rnn.weight_ih_l0"], plain["rnn.weight_ih_l0"])  # drawn first, unchanged
    assert not np.allclose(drawn(cell=cell, seed=4, orthogonal_recurrent=True)["rnn.weight_hh_l0"], p["rnn.weight_hh_l0"])


def test_torch_scheme_bounds():
    H = 16
    p = drawn(H=H, E=5, scheme="torch", forget_bias=None)
    bound = 1 / np.sqrt(H)
    for name, view in p.views.items():
        if name == "encoder.weight":
            assert view.std() > 0.5  # N(0, 1), not a small uniform
        else:
            assert np.abs(view).max() <= bound and np.abs(view).max() > 0.5 * bound
    with pytest.raises(ValueError):
        drawn(scheme="xavier")


def test_init_keys_parse_and_round_trip(tmp_path):
    cfg = resolve(sets=["model.forget_bias=none", "model.orthogonal_recurrent=true", "model.init=torch",
                        "optim.schedule=linear", "optim.schedule_length=auto"])
    assert cfg.model.forget_bias is None and cfg.model.orthogonal_recurrent is True and cfg.model.init == "torch"
    assert Config.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert resolve(sets=["model.forget_bias=0"]).model.forget_bias == 0.0
    assert Config.from_dict({"model": {"forget_bias": None}}).model.forget_bias is None


@pytest.mark.parametrize("item, words", [("model.orthogonal_recurrent=3", "true or false"),
                                         ("model.forget_bias=high", "a number"),
                                         ("model.forget_bias=.nan", "finite"),
                                         ("model.init=xavier", "one of"),
                                         ("optim.schedule_length=time", "one of")])
def test_init_keys_refuse_bad_values(item, words):
    with pytest.raises(UsageError) as e:
        resolve(sets=[item])
    assert words in str(e.value) and item.split("=")[0] in str(e.value)


def test_trainer_uses_the_init_keys(corpus, tmp_path):
    best = run(corpus, tmp_path / "r", model={"forget_bias": None, "orthogonal_recurrent": True},
               train={"max_steps": 1, "eval_every": 0})
    assert best.is_file()
    cfg = Config.from_dict(checkpoint.load(best)[1]["config"])
    assert cfg.model.forget_bias is None and cfg.model.orthogonal_recurrent is True


# -- a schedule that follows max_time --------------------------------------------------------------------
def test_time_bounded_cosine_decays_over_max_time(corpus, tmp_path):
    run(corpus, tmp_path / "r", optim={"schedule": "cosine", "schedule_length": "auto", "min_lr": 0.001,
                                          "decay_fraction": 1.0},
        train={"max_steps": 0, "max_epochs": 0, "max_time": 1.0, "eval_every": 0})
    lrs = [m["lr"] for m in metrics(tmp_path / "r")]
    assert len(lrs) > 2 and all(a >= b for a, b in zip(lrs, lrs[1:]))
    assert lrs[0] <= 0.01 and 0.001 <= lrs[-1] < lrs[0]


def test_auto_schedule_without_any_budget_keeps_the_rate(corpus, tmp_path):
    """schedule_length=auto on a run with no step, epoch or time budget (trained until stopped): nothing to
    decay over, so the rate stays at lr instead of refusing to start."""
    from charrnn import api
    cfg = Config.from_dict({"model": {"hidden_size": 16, "num_layers": 1}, "train": {
        "batch_size": 4, "seq_len": 16, "max_steps": 0, "max_epochs": 0, "max_time": 0, "eval_every": 0},
        "optim": {"lr": 0.01, "schedule": "cosine", "schedule_length": "auto"}}, source="test")
    (tmp_path / "r").mkdir()
    trainer, _, _ = api._prepare(cfg, [str(corpus)], tmp_path / "r", None)
    assert trainer.lr() == 0.01
    trainer.step = 500
    assert trainer.lr() == 0.01


def test_time_schedule_needs_auto(corpus, tmp_path):
    with pytest.raises(UsageError, match="schedule_length=auto"):
        run(corpus, tmp_path / "r", optim={"schedule": "linear", "schedule_length": "steps"},
            train={"max_steps": 0, "max_epochs": 0, "max_time": 1.0})
    assert not (tmp_path / "r").exists()


def test_resume_continues_the_time_schedule(corpus, tmp_path):
    """The elapsed time is saved in checkpoints and restored, so a resumed timed run goes on decaying from
    where it was instead of starting the schedule again."""
    from charrnn import api
    from charrnn.checkpoints import store
    cfg = tiny_cfg(optim={"schedule": "linear", "schedule_length": "auto", "min_lr": 0.0, "decay_fraction": 1.0},
                   train={"max_steps": 4, "max_time": 600, "eval_every": 0})
    r = tmp_path / "r"
    charrnn.train(corpus, cfg, r, live=False, console=None, started=time.perf_counter() - 300)
    loaded = store.load(r / "last.npz")
    saved = loaded.meta["progress"]["elapsed_s"]
    assert 300 <= saved < 400
    go_on = Config.from_dict({**cfg, "train": {**cfg["train"], "max_steps": 10**9}})  # step budget: no say
    for d in ("other", "fresh"):
        (tmp_path / d).mkdir()
    resumed, _, _ = api._prepare(go_on, [str(corpus)], tmp_path / "other", loaded)
    fresh, _, _ = api._prepare(go_on, [str(corpus)], tmp_path / "fresh", None)
    assert resumed.elapsed_before == saved
    assert resumed.lr() == pytest.approx(0.01 * (1 - saved / 600), rel=0.05) and fresh.lr() > 0.0099


# -- the clock counts start-up ----------------------------------------------------------------------------
def test_max_time_counts_from_started(corpus, tmp_path):
    """`started` (the CLI passes the command's start) is when the budget begins: here 0.5 s before the call."""
    charrnn.train(corpus, {"model": {"hidden_size": 8, "num_layers": 1},
                           "train": {"max_steps": 3, "max_epochs": 0, "log_every": 1, "eval_every": 0}},
                  tmp_path / "r", live=False, console=None, started=time.perf_counter() - 0.5)
    assert metrics(tmp_path / "r")[0]["elapsed_s"] >= 0.5


def test_a_used_up_budget_still_takes_one_step(corpus, tmp_path):
    charrnn.train(corpus, {"model": {"hidden_size": 8, "num_layers": 1},
                           "train": {"max_steps": 0, "max_epochs": 0, "max_time": 1.0, "eval_every": 0}},
                  tmp_path / "r", live=False, console=None, started=time.perf_counter() - 5.0)
    assert checkpoint.load(tmp_path / "r" / "last.npz")[1]["progress"]["step"] == 1


# -- checkpoints older than a key -----------------------------------------------------------------------------
def test_a_checkpoint_older_than_a_key_is_resumed_the_old_way(cli, corpus, tmp_path):
    """A saved config without optim.decay_fraction / optim.schedule_length / model.forget_bias was trained
    before those keys existed; today's defaults for them differ (0.2, auto, null), so resuming must take
    what that code did (1.0, steps, 1.0), or an old cosine run would change its schedule halfway."""
    r = tmp_path / "r"
    cfg = tiny_cfg(optim={"schedule": "cosine", "schedule_length": "steps", "decay_fraction": 1.0},
                   model={"forget_bias": 1.0}, train={"max_steps": 6, "eval_every": 0})
    charrnn.train(corpus, cfg, r, live=False, console=None)
    arrays, meta = checkpoint.load(r / "last.npz")
    meta = {k: v for k, v in meta.items() if k not in ("checksum", "format_version")}
    del meta["config"]["optim"]["decay_fraction"], meta["config"]["optim"]["schedule_length"]
    del meta["config"]["model"]["forget_bias"]
    checkpoint.save(r / "last.npz", arrays, meta)  # as a checkpoint from before the keys
    today = Config.from_dict(meta["config"])
    assert (today.optim.decay_fraction, today.optim.schedule_length, today.model.forget_bias) == (0.2, "auto", None)
    old = Config.from_saved(meta["config"])
    assert (old.optim.decay_fraction, old.optim.schedule_length, old.model.forget_bias) == (1.0, "steps", 1.0)
    r2 = cli("train", "--resume", r, "--max-steps", 12, "--plain")
    assert r2.exit_code == 0, r2.output
    saved = checkpoint.load(r / "last.npz")[1]["config"]
    assert (saved["optim"]["decay_fraction"], saved["optim"]["schedule_length"], saved["model"]["forget_bias"]) \
        == (1.0, "steps", 1.0)
    lrs = [m["lr"] for m in metrics(r)]
    assert len(lrs) == 12 and all(a > b for a, b in zip(lrs[6:], lrs[7:]))  # a cosine over 12 steps, not held

"""The thread count never changes a number: passes and whole training runs on 1, 2, 3, 4 and 8 threads
give the same losses, gradients, states and weights, bit for bit (this 2-core machine is oversubscribed
on purpose). Also the thread count's sources (affinity, CHARRNN_THREADS, --threads) and the team's
failure path. No timing here: speed is measured in benchmarks/bench.py and benchmarks/scaling.py."""

import numpy as np
import pytest
from rich.console import Console
from support.exe import assert_child_exits
from support.runs import TINY, read_metrics

import charrnn
from charrnn.engine import threads
from charrnn.engine.model import Model
from charrnn.engine.params import Shape
from charrnn.engine.passes import task_count
from charrnn.engine.team import Team, chunks, run_threads, split

COUNTS = (1, 2, 3, 4, 8)


@pytest.fixture
def restore_threads():
    yield threads.set_threads
    threads.set_threads(None)


def _pass(m: Model, B: int, T: int, dropout: bool, seed: int):
    rng = np.random.default_rng(seed)
    x, y = rng.integers(0, m.vocab_size, (B, T)), rng.integers(0, m.vocab_size, (B, T))
    state = m.zero_state(B)
    state.h[:] = rng.normal(size=state.h.shape).astype(np.float32) * 0.3
    if state.c is not None:
        state.c[:] = rng.normal(size=state.c.shape).astype(np.float32) * 0.3
    masks = m.dropout_masks(np.random.default_rng(seed + 1), 0.25, B, T) if dropout else None
    g = m.params.zeros_like()
    loss, st = m.forward_backward(x, y, state, g, masks)
    ev, _ = m.loss(x, y, state)
    lg, _ = m.logits(x[:3], m.zero_state(3))
    return [loss, ev, g.flat.copy(), st.h.copy(), None if st.c is None else st.c.copy(), lg]


@pytest.mark.parametrize("cell,H,L,E,B,T,dropout", [
    ("lstm", 64, 2, 0, 13, 9, True),    # fused, panels split over the team; dropout between layers
    ("gru", 48, 3, 0, 7, 6, False),     # fused, three layers
    ("rnn", 32, 2, 5, 21, 5, True),     # fused tanh, an embedding
    ("lstm", 20, 2, 0, 5, 7, False),    # H not a multiple of the panel width: the one-thread path
    ("lstm", 32, 1, 0, 160, 10, False),  # 800 rows a group: two tasks a phase (passes.task_count)
    ("gru", 256, 1, 0, 64, 48, False),  # 1536 rows, G 768: two tasks; bias sums in partials per task
])
def test_a_pass_is_the_same_on_any_thread_count(cell, H, L, E, B, T, dropout, restore_threads):
    m = Model(Shape(cell, 11, H, L, E))
    m.params.flat[:] = np.random.default_rng(H).uniform(-0.3, 0.3, m.params.flat.size)
    want = None
    for n in COUNTS:
        restore_threads(n)
        got = _pass(m, B, T, dropout, seed=B * T)
        if want is None:
            want = got
            continue
        for a, b in zip(got, want):
            assert (a is None and b is None) or np.array_equal(a, b), f"{n} threads differ"
    m.one_team = True  # two threads as one team over both groups in turn: barriers in every T loop
    restore_threads(2)
    for a, b in zip(_pass(m, B, T, dropout, seed=B * T), want):
        assert (a is None and b is None) or np.array_equal(a, b), "one team of 2 differs"


def _train(corpus, out, n: int, **model):
    threads.set_threads(n)
    cfg = {"model": {"hidden_size": 32, "num_layers": 2, "dropout": 0.2, **model},
           "optim": {"lr": 0.01, "grad_clip": 1.0},
           "train": {"batch_size": 9, "seq_len": 12, "max_steps": 6, "max_epochs": 0, "eval_every": 3,
                     "sample_every": 0, "checkpoint_every": 0, "log_every": 1}}
    charrnn.train(corpus, cfg, out, live=False, console=Console(file=open("/dev/null", "w")))  # noqa: SIM115
    rows = read_metrics(out)
    weights = charrnn.load(out / "last.npz").net.params.flat.copy()
    return [(r.get("train_loss"), r.get("val_loss"), r.get("grad_norm")) for r in rows], weights


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_training_runs_are_the_same_on_any_thread_count(corpus, tmp_path, cell, restore_threads):
    """Whole runs through charrnn.train (dropout on, clipping, Adam, evaluations): the logged losses and
    the final weights match bit for bit."""
    want = None
    for n in (1, 3, 8):
        losses, weights = _train(corpus, tmp_path / f"run{n}", n, cell=cell)
        assert len(losses) >= 6
        if want is None:
            want = losses, weights
            continue
        assert losses == want[0], f"{n} threads"
        assert np.array_equal(weights, want[1]), f"{n} threads"


@pytest.mark.parametrize("name", ["adam", "rmsprop", "adagrad", "sgd"])
def test_optimizer_updates_are_the_same_on_any_thread_count(name, restore_threads):
    from charrnn.engine.optim import UPDATE_PIECE, make_optimizer
    n = 5 * UPDATE_PIECE + 123  # several pieces, one not whole
    rng = np.random.default_rng(0)
    p0 = rng.standard_normal(n, dtype=np.float32)
    grads = [rng.standard_normal(n, dtype=np.float32) for _ in range(2)]
    want = None
    for t in (1, 3, 8):
        restore_threads(t)
        opt, p = make_optimizer(name, n, weight_decay=0.01), p0.copy()
        for g in grads:
            opt.step(p, g, 1e-2)
        if want is None:
            want = p
        assert np.array_equal(p, want), f"{t} threads"


def test_the_thread_count_follows_affinity_env_and_option(monkeypatch, restore_threads):
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5}, raising=False)
    monkeypatch.delenv("CHARRNN_THREADS", raising=False)
    assert threads.usable_cores() == threads.threads() == 6
    monkeypatch.setenv("CHARRNN_THREADS", "4")  # a sweep worker's share
    assert threads.usable_cores() == threads.threads() == 4
    restore_threads(3)
    assert threads.threads() == 3 and threads.pool()._max_workers >= 2
    restore_threads(None)
    assert threads.threads() == 4
    with pytest.raises(ValueError):
        threads.set_threads(0)


def test_splits_depend_on_the_sizes_only():
    for n in (1, 5, 16, 100, 6400):
        for parts in (1, 3, 48):
            s = split(n, parts)
            assert s[0][0] == 0 and s[-1][1] == n and all(a[1] == b[0] for a, b in zip(s, s[1:]))
    assert all((b - a) % 16 == 0 for a, b in split(2048, 24, 16)) and split(2048, 24, 16)[-1][1] == 2048
    assert len(chunks(6400, 128)) == 32 and len(chunks(2500, 128)) == 16 and chunks(50, 128) == [(0, 50)]
    assert len(chunks(3200, 384, limit=8)) == 8 and len(chunks(3200, 384, limit=4)) == 4
    # bench.py's rows (rows a group, gate width): LSTM 2x512, 2x256, GRU 2x256, RNN 2x256, LSTM 2x128 B50 T50
    assert [task_count(3200, g) for g in (2048, 1024, 768, 256)] == [8, 4, 2, 2] and task_count(1250, 512) == 2
    assert task_count(800, 128) == 2 and task_count(1536, 768) == 2 and task_count(117, 256) == 1


def test_a_failing_member_does_not_hang_the_team():
    teams = [Team(2), Team(2)]

    def body(j):
        ti, me = divmod(j, 2)
        if j == 1:
            raise RuntimeError("boom")
        teams[ti].sync(me)
        teams[ti].sync(me)

    with pytest.raises(RuntimeError, match="boom"):
        run_threads(4, body, teams)
    run_threads(4, lambda j: teams[j // 2].sync(j % 2), teams)  # usable again afterwards


def test_train_header_names_the_thread_count(cli, corpus, tmp_path, restore_threads):
    r = cli("train", corpus, "--out", tmp_path / "run", *TINY, "--max-steps", 2, "--threads", 3, "--plain")
    assert r.exit_code == 0, r.output
    assert "threads: 3 (of " in r.stdout, r.stdout
    bad = cli("train", corpus, "--out", tmp_path / "run2", *TINY, "--threads", 0)
    assert bad.exit_code != 0 and "Traceback" not in bad.output and len(bad.stderr.strip().splitlines()) == 1


INTERRUPTED_BETWEEN_SUBMITS = """
import numpy as np
from charrnn.engine import team, threads

class Interrupting:
    def submit(self, *args):
        threads.pool().submit(*args)  # the member is queued and a worker runs it ...
        raise KeyboardInterrupt  # ... and a Ctrl-C lands before the calling thread joins the team

teams = [team.Team(2)]
team.pool = lambda: Interrupting()
try:
    team.run_threads(2, lambda j: [teams[0].sync(j) for _ in range(3)], teams)
except KeyboardInterrupt:
    print("interrupted", flush=True)
"""


def test_a_ctrl_c_between_a_teams_submits_leaves_no_thread_spinning():
    """The member already submitted must not wait at a barrier for ever for the calling thread (the
    interpreter would wait for it at exit): the child must exit on its own."""
    assert_child_exits(INTERRUPTED_BETWEEN_SUBMITS, "interrupted\n")

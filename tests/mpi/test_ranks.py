"""`mpirun -n K charrnn train` on this host: K = 2 and 4 give one process's numbers (to float32 rounding),
two K-rank runs the same bits; a K that does not divide batch_size is one line; a resume may change K;
a rank killed outright ends the whole run at once, its last checkpoint loads and a resume continues.

Tolerance of the equality with one process: a rank's GEMMs run over its streams only and the Allreduce
adds the ranks' gradients in its own order, so each step's gradient differs from one process's in the
last bits; Adam carries the differences into the weights. Over 200 steps of an LSTM 2x128 the losses
stayed within 4.5e-6 relative of one process's (benchmarks/README.md, "mpi_equality.py"); 2e-5 leaves four
times that for the 12 steps here.
"""
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from support import mpi
from support.exe import charrnn_command
from support.runs import step_records

from charrnn.checkpoints import store

pytestmark = pytest.mark.usefixtures("_mpi")

# 2 layers with dropout: the masks of a rank's streams and the carried state of two layers both count
MODEL = ["--hidden", "16", "--layers", "2", "--set", "model.dropout=0.2", "--batch-size", "4", "--seq-len", "16",
         "--plain", "--sample-every", "0", "--set", "train.log_every=1", "--eval-every", "6", "--checkpoint-every", "6", "--seed", "7"]
REL = 2e-5


@pytest.fixture
def _mpi():
    mpi.need_mpi()


def _env() -> dict:
    return mpi.env(CHARRNN_THREADS="1")


def _argv(k: int, args) -> list[str]:
    """`mpirun -n k ... charrnn train ARGS`, or for k = 1 the one-process command."""
    argv = [charrnn_command(), "train", *map(str, args)]
    return mpi.mpirun_argv(k, argv) if k > 1 else argv


def _train(tmp_path, k, out, *extra, check=True):
    args = [str(tmp_path / "corpus.txt"), "--out", str(tmp_path / out), *MODEL, *extra]
    r = mpi.run(_argv(k, args), cwd=tmp_path, env=_env())
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def _losses(run: Path) -> np.ndarray:
    return np.array([[r["train_loss"], r.get("val_loss") or 0.0] for r in step_records(run)])


def _arrays(path: Path) -> dict:
    return store.load(path).arrays


@pytest.fixture
def text(tmp_path, corpus):
    (tmp_path / "corpus.txt").write_bytes(corpus.read_bytes())
    return tmp_path


@pytest.mark.parametrize("k", [2, 4])
def test_k_ranks_train_what_one_process_trains(text, k):
    _train(text, 1, "one", "--max-steps", "12")
    r = _train(text, k, "many", "--max-steps", "12")
    assert f"{k} MPI ranks x {4 // k} streams" in r.stderr + r.stdout
    one, many = _losses(text / "one"), _losses(text / "many")
    assert one.shape == many.shape == (12, 2)
    np.testing.assert_allclose(many, one, rtol=REL)
    a, b = _arrays(text / "one" / "last.npz"), _arrays(text / "many" / "last.npz")
    assert a.keys() == b.keys()  # the same file: every stream's carried state, the optimizer's moments
    for name in a:
        np.testing.assert_allclose(b[name], a[name], rtol=1e-3, atol=1e-5, err_msg=name)


def test_two_k_rank_runs_are_bit_identical(text):
    """... also when the ranks run on another thread count (each rank's numbers do not depend on it)."""
    _train(text, 2, "a", "--max-steps", "12", "--threads", "1")
    _train(text, 2, "b", "--max-steps", "12", "--threads", "2")
    assert np.array_equal(_losses(text / "a"), _losses(text / "b"))
    a, b = _arrays(text / "a" / "last.npz"), _arrays(text / "b" / "last.npz")
    assert all(np.array_equal(a[n], b[n]) for n in a)


def test_resume_with_another_rank_count(text):
    flat = ["--set", "optim.schedule=constant"]  # the default linear decay follows --max-steps, which changes
    _train(text, 2, "run", "--max-steps", "6", *flat)
    _train(text, 4, "run", "--resume", str(text / "run"), "--max-steps", "12")
    _train(text, 1, "straight", "--max-steps", "12", *flat)
    np.testing.assert_allclose(_losses(text / "run"), _losses(text / "straight"), rtol=REL)
    assert store.load(text / "run" / "last.npz").arrays["state.h"].shape == (2, 4, 16)


def test_a_rank_count_that_does_not_divide_the_batch(text):
    r = _train(text, 3, "odd", "--max-steps", "4", check=False)
    assert r.returncode == 2, r.stdout + r.stderr
    ours = [ln for ln in (r.stdout + r.stderr).splitlines() if "batch_size" in ln]
    assert len(ours) == 1, r.stderr
    assert ours[0].startswith("error: batch_size 4 cannot be shared by 3 ranks") and "1, 2 or 4 ranks" in ours[0]
    assert "Traceback" not in r.stderr and not (text / "odd").exists()


def _ranks(mpirun_pid: int) -> dict[int, int]:
    """{rank: pid} of the processes mpirun started (its children, by their OMPI_COMM_WORLD_RANK)."""
    found = {}
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == mpirun_pid:
                env = dict(v.split("=", 1) for v in (d / "environ").read_bytes().decode(errors="replace").split("\0")
                           if "=" in v)
                if "OMPI_COMM_WORLD_RANK" in env:
                    found[int(env["OMPI_COMM_WORLD_RANK"])] = int(d.name)
        except (OSError, ValueError, IndexError):
            continue
    return found


def _wait_for(cond, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _start_two_ranks(text, out, *budget: str) -> subprocess.Popen:
    """mpirun -n 2 charrnn train in a session of its own, returned once 9 steps are logged."""
    args = [str(text / "corpus.txt"), "--out", str(out), *MODEL, *budget, "--eval-every", "0"]
    proc = subprocess.Popen(_argv(2, args), cwd=text, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        _wait_for(lambda: len(step_records(out)) >= 9 if (out / "metrics.jsonl").exists() else False, 180,
                  "9 steps")
    except BaseException:
        mpi.kill_session(proc.pid)
        raise
    return proc


def test_a_killed_rank_ends_the_run_and_the_checkpoint_survives(text):
    out = text / "run"
    proc = _start_two_ranks(text, out, "--max-steps", "100000", "--checkpoint-every", "3")
    try:
        ranks = _ranks(proc.pid)
        assert sorted(ranks) == [0, 1], ranks
        os.kill(ranks[1], signal.SIGKILL)
        killed = time.monotonic()
        code = proc.wait(timeout=60)
        took = time.monotonic() - killed
    finally:
        mpi.kill_session(proc.pid)
    output = proc.stdout.read()
    assert code != 0, output
    assert took < 20, (took, output)
    _wait_for(lambda: not _ranks(proc.pid) and not os.path.exists(f"/proc/{ranks[0]}"), 20, "rank 0 to end")
    last = store.load(out / "last.npz")  # intact: written atomically by rank 0 alone
    step = last.meta["progress"]["step"]
    assert step >= 9 and step % 3 == 0
    _train(text, 2, "run", "--resume", str(out), "--max-steps", str(step + 3), "--eval-every", "0")
    assert store.load(out / "last.npz").meta["progress"]["step"] == step + 3


def test_ctrl_c_on_the_launcher_checkpoints_once_and_stops_every_rank(text):
    """Open MPI answers the Ctrl-C with SIGCONT, a wait, SIGTERM, the same wait, SIGKILL, and forwards no
    output while it waits: the ranks hold at the SIGCONT (or rank 0 would block on a full terminal buffer
    at ~260 lines of a tiny model), agree on the SIGTERM, write one checkpoint and exit; a resume goes on."""
    from support.pty import Terminal
    out = text / "run"
    args = [text / "corpus.txt", "--out", out, *MODEL, "--max-steps", "100000", "--checkpoint-every", "100000",
            "--eval-every", "0"]
    # the wait (default 1 s) must cover the checkpoint on a loaded machine: the README's flag
    argv = mpi.mpirun_argv(2, [charrnn_command(), "train"], flags=["--mca", "odls_base_sigkill_timeout", "5"])
    with Terminal(args, cmd=argv, cwd=text, env={**mpi.ROOT_ENV, "CHARRNN_THREADS": "1"}) as t:
        t.expect(r"step 20 ")
        t.send("\x03")  # the terminal's SIGINT reaches mpirun only: the ranks have process groups of their own
        start = time.monotonic()
        code = t.wait()
    shown, took = t.text, time.monotonic() - start
    assert code != 0 and took < 60, shown
    assert shown.count("stopped at step") == 1 and "go on with: charrnn train --resume" in shown, shown
    end = [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r.get("event") == "end"]
    assert len(end) == 1 and end[0]["reason"] == "signal"
    step = end[0]["step"]
    assert step < 60, step  # held at the SIGCONT: a few steps after the Ctrl-C, not hundreds
    saved = [p.name for p in out.glob("step*.npz")]  # one checkpoint, at the agreed step (evaluated: the last)
    assert len(saved) == 1 and saved[0].startswith(f"step{step}_val"), saved
    assert store.load(out / "last.npz").meta["progress"]["step"] == step
    assert not (out / ".lock").exists()
    _train(text, 2, "run", "--resume", str(out), "--max-steps", str(step + 3), "--eval-every", "0")
    assert store.load(out / "last.npz").meta["progress"]["step"] == step + 3


def test_a_sigcont_alone_holds_the_ranks_briefly_and_training_goes_on(text):
    """mpirun forwards SIGCONT (after Ctrl-Z and `fg`, a suspended batch job resumed): no SIGTERM follows,
    so the ranks wait Open MPI's 1 s plus HOLD_MARGIN and train on to the end."""
    out = text / "run"
    proc = _start_two_ranks(text, out, "--max-steps", "400", "--checkpoint-every", "100000")
    try:
        for pid in _ranks(proc.pid).values():
            os.kill(pid, signal.SIGCONT)
        output, _ = proc.communicate(timeout=120)
    finally:
        mpi.kill_session(proc.pid)
    assert proc.returncode == 0 and "stopped at step 400: the step budget" in output, output
    elapsed = [r["elapsed_s"] for r in step_records(out)]
    assert len(elapsed) == 400
    assert 2.0 < max(np.diff(elapsed)) < 10, max(np.diff(elapsed))

"""Exact resume (issue 5): a run killed with SIGKILL at a random moment and resumed gives the same
metrics.jsonl train losses, bit for bit, as the run left alone; Ctrl-C/SIGTERM checkpoint and exit
130/143; --resume only accepts safe changes and the original corpus; run directories are not mixed."""
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ENGLISH_LINES, make_text, one_line_error, snapshot, step_records

from charrnn.checkpoints import npz as checkpoint, store

REPO = Path(__file__).resolve().parents[1]
# The training helper run as a subprocess: the real CLI, with every step slowed down by
# CHARRNN_TEST_STEP_DELAY seconds so the test can pick its moment (the numbers are unaffected).
HELPER = """
import os, sys, time
sys.path.insert(0, {repo!r})
from charrnn.training import trainer
_step = trainer.Trainer.train_step
_delay = float(os.environ.get("CHARRNN_TEST_STEP_DELAY", "0"))
def train_step(self, x, y):
    time.sleep(_delay)
    return _step(self, x, y)
trainer.Trainer.train_step = train_step
from charrnn.cli import main
main(prog_name="charrnn")
"""
# Two layers, dropout, eval/sample/checkpoint cadences that do not line up, two epochs (new random
# offset): every piece of state an exact resume needs is exercised.
ARGS = ["--hidden", "16", "--layers", "2", "--dropout", "0.2", "--batch-size", "4", "--seq-len", "16",
        "--eval-every", "7", "--sample-every", "5", "--sample-length", "16", "--checkpoint-every", "1",
        "--keep-last", "3", "--seed", "3", "--lr", "0.01", "--set", "train.log_every=1", "--plain"]
MAX_STEPS = 90
TIMING = ("chars_per_sec", "elapsed_s")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("resume")
    (d / "corpus.txt").write_text(make_text(ENGLISH_LINES, 60, seed=1), encoding="utf-8")
    (d / "helper.py").write_text(HELPER.format(repo=str(REPO)), encoding="utf-8")
    return d


@pytest.fixture(scope="module")
def reference(workdir, cli) -> Path:
    """The uninterrupted run."""
    run = workdir / "reference"
    r = cli("train", workdir / "corpus.txt", "--out", run, *ARGS, "--max-steps", MAX_STEPS)
    assert r.exit_code == 0, r.output
    epochs = step_records(run)[-1]["epoch"]
    assert epochs >= 2, "the reference run should cross an epoch boundary"
    return run


def records(run: Path) -> list[dict]:
    return step_records(run)


def comparable(run: Path) -> list[dict]:
    """metrics.jsonl without the wall-clock fields."""
    return [{k: v for k, v in m.items() if k not in TIMING} for m in records(run)]


def start(workdir: Path, run: Path, *extra, delay: float = 0.01) -> subprocess.Popen:
    env = {**os.environ, "CHARRNN_TEST_STEP_DELAY": str(delay)}
    return subprocess.Popen([sys.executable, str(workdir / "helper.py"), "train", str(workdir / "corpus.txt"),
                             "--out", str(run), *ARGS, "--max-steps", str(MAX_STEPS), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=workdir)


def wait_for_step(proc: subprocess.Popen, run: Path, step: int, timeout: float = 60) -> None:
    """Poll metrics.jsonl until it holds `step` (the process keeps running)."""
    deadline = time.monotonic() + timeout
    path = run / "metrics.jsonl"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"training ended before step {step}: {proc.returncode}\n{out}\n{err}")
        if path.exists():
            lines = path.read_text().splitlines()
            if lines and lines[-1].endswith("}") and json.loads(lines[-1])["step"] >= step:
                return
        time.sleep(0.002)
    proc.kill()
    pytest.fail(f"step {step} not reached in {timeout} s")


def assert_checkpoints_load(run: Path) -> None:
    """Every checkpoint under a real name is complete and valid (temp files are hidden dot-files)."""
    names = [p for p in run.iterdir() if p.suffix == ".npz" and not p.name.startswith(".")]
    assert names
    for p in names:
        checkpoint.load(p)
        store.load(p)


SEEDS = [int(s) for s in os.environ.get("CHARRNN_TEST_KILL_SEEDS", "0,1,2").split(",")]


@pytest.mark.parametrize("seed", SEEDS)
def test_sigkill_at_a_random_moment_then_resume_is_exact(workdir, reference, cli, seed):
    rng = random.Random(seed)
    run = workdir / f"killed{seed}"
    delay = rng.choice([0.01, 0.002])  # 2 ms: the kill mostly lands in real work, not in the sleep
    proc = start(workdir, run, delay=delay)
    wait_for_step(proc, run, rng.randint(3, MAX_STEPS // 2))
    time.sleep(rng.uniform(0, delay + 0.002))  # anywhere inside a step: training, eval, sampling, writing
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert_checkpoints_load(run)  # even right after kill -9
    killed_at = records(run)[-1]["step"] if records(run) else 0
    assert killed_at < MAX_STEPS

    r = cli("train", "--resume", run)
    assert r.exit_code == 0, r.output
    assert "resumed at step" in r.stdout
    got, want = comparable(run), comparable(reference)
    assert [m["step"] for m in got] == list(range(1, MAX_STEPS + 1))
    # bit for bit: the floats are compared exactly, not approximately
    assert [m["train_loss"] for m in got] == [m["train_loss"] for m in want]
    assert got == want  # also val losses, lr, epoch and the smoothed loss
    assert (run / "samples.txt").read_text() == (reference / "samples.txt").read_text()
    assert_checkpoints_load(run)
    assert not [p for p in run.iterdir() if ".tmp-" in p.name]  # stale temp files were cleaned up
    a, _ = checkpoint.load(run / "last.npz")
    b, _ = checkpoint.load(reference / "last.npz")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_checkpoints_prints_hint_and_resumes_exactly(workdir, reference, cli, sig, code):
    run = workdir / f"signal{int(sig)}"
    proc = start(workdir, run, delay=0.02)
    wait_for_step(proc, run, 6)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, (out, err)
    assert "Traceback" not in err
    assert f"go on with: charrnn train --resume {run}" in err and "error" not in err
    last = records(run)[-1]["step"]
    assert last < MAX_STEPS
    _, meta = checkpoint.load(run / "last.npz")
    assert meta["progress"]["step"] == last  # the step that was running finished and was saved
    assert_checkpoints_load(run)
    r = cli("train", "--resume", run)
    assert r.exit_code == 0, r.output
    assert [m["train_loss"] for m in records(run)] == [m["train_loss"] for m in records(reference)]


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_second_signal_exits_at_once_without_corrupting(workdir, sig, code):
    run = workdir / f"twice{int(sig)}"
    proc = start(workdir, run, delay=0.02)
    wait_for_step(proc, run, 4)
    proc.send_signal(sig)
    time.sleep(0.001)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, (out, err)
    assert "Traceback" not in err
    assert_checkpoints_load(run)


# -- what --resume accepts and refuses ----------------------------------------------------------------------
@pytest.fixture
def short_run(tmp_path, cli) -> Path:
    (tmp_path / "corpus.txt").write_text(make_text(ENGLISH_LINES, 60, seed=1), encoding="utf-8")
    run = tmp_path / "run"
    r = cli("train", tmp_path / "corpus.txt", "--out", run, *ARGS, "--max-steps", 10)
    assert r.exit_code == 0, r.output
    return run


@pytest.mark.parametrize("option", [["--hidden", "32"], ["--layers", "1"], ["--model", "gru"], ["--lr", "0.1"],
                                    ["--seed", "4"], ["--batch-size", "8"], ["--set", "data.val_fraction=0.2"],
                                    ["--optimizer", "sgd"], ["--dropout", "0"]])
def test_resume_refuses_unsafe_changes(short_run, cli, option):
    before = snapshot(short_run)
    line = one_line_error(cli("train", "--resume", short_run, *option))
    assert "when resuming" in line and "cannot change" in line
    assert snapshot(short_run) == before


def test_resume_accepts_safe_changes_and_same_values(short_run, cli):
    r = cli("train", "--resume", short_run, "--max-steps", 14, "--eval-every", 3, "--hidden", 16,
            "--sample-every", 0, "--checkpoint-every", 2)
    assert r.exit_code == 0, r.output
    assert [m["step"] for m in records(short_run)] == list(range(1, 15))
    _, meta = checkpoint.load(short_run / "last.npz")
    assert meta["progress"]["step"] == 14 and meta["config"]["train"]["eval_every"] == 3


def test_resume_with_another_corpus_is_refused(short_run, cli, tmp_path):
    other = tmp_path / "other.txt"
    other.write_text(make_text(ENGLISH_LINES, 60, seed=2), encoding="utf-8")
    before = snapshot(short_run)
    line = one_line_error(cli("train", other, "--resume", short_run, "--max-steps", 20))  # (not finished)
    assert "is not the corpus this run was trained on" in line
    assert snapshot(short_run) == before
    # the same file changed in place is refused too
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(corpus.read_text() + "one more line\n", encoding="utf-8")
    line = one_line_error(cli("train", "--resume", short_run, "--max-steps", 20))
    assert "is not the corpus this run was trained on" in line
    assert snapshot(short_run) == before


def test_resume_of_a_finished_run_does_nothing_more(short_run, cli):
    before = records(short_run)
    r = cli("train", "--resume", short_run)
    assert r.exit_code == 0, r.output
    assert records(short_run) == before


def test_resume_without_a_checkpoint(tmp_path, cli):
    line = one_line_error(cli("train", "--resume", tmp_path))
    assert "no last.npz" in line
    line = one_line_error(cli("train", "--resume", tmp_path / "nope.npz"))
    assert "does not exist" in line


def test_existing_run_needs_force_or_resume(short_run, cli, tmp_path):
    before = snapshot(short_run)
    corpus = tmp_path / "corpus.txt"
    line = one_line_error(cli("train", corpus, "--out", short_run, *ARGS, "--max-steps", 5))
    assert "already holds a run" in line and "--resume" in line and "--force" in line
    assert snapshot(short_run) == before
    r = cli("train", corpus, "--out", short_run, *ARGS, "--max-steps", 5, "--force")
    assert r.exit_code == 0, r.output
    assert [m["step"] for m in records(short_run)] == [1, 2, 3, 4, 5]
    assert not (short_run / "step10.npz").exists()  # the old run's checkpoints are gone
    assert checkpoint.load(short_run / "last.npz")[1]["progress"]["step"] == 5


def test_force_keeps_the_old_run_when_the_new_one_cannot_start(short_run, cli, tmp_path):
    before = snapshot(short_run)
    r = cli("train", tmp_path / "missing.txt", "--out", short_run, *ARGS, "--force")
    one_line_error(r)
    r = cli("train", tmp_path / "corpus.txt", "--out", short_run, *ARGS, "--force", "--lr", "-1")
    one_line_error(r)
    assert snapshot(short_run) == before

"""charrnn sweep: the sweep file's checks, a tiny sweep with two worker processes on the journal file,
the best config that `charrnn train --config` takes, --status, and both in a pseudo-terminal."""
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import step_records
from terminal import run

optuna = pytest.importorskip("optuna")

CHARRNN = str(Path(sys.executable).with_name("charrnn"))
TINY_SWEEP = """\
model: {hidden_size: 16, num_layers: 1}
train: {batch_size: 4, seq_len: 16, max_steps: 10, eval_every: 5, sample_every: 0, log_every: 5}
space:
  optim.lr: {log_uniform: [1.0e-3, 3.0e-2]}
  model.hidden_size: {choice: [8, 16]}
  model.dropout: {uniform: [0, 0.3]}
  train.seq_len: {int: [8, 16, 4]}
sweep: {trials: 4, sampler: random, seed: 0}
"""


def run_in_pty(args, cwd, timeout=240.0) -> tuple[int, str]:
    """(exit code, output decoded, escapes kept) of `charrnn *args` on a 100x30 terminal (tests/terminal.py)."""
    t = run(args, cwd=cwd, timeout=timeout)
    return t.code, t.raw.decode(errors="replace")


@pytest.fixture
def sweep_file(tmp_path) -> Path:
    p = tmp_path / "tiny.yaml"
    p.write_text(TINY_SWEEP)
    return p


def _study(storage: str, name: str):
    from charrnn.sweep.storage import Store
    return Store(storage).load(name)


@pytest.mark.parametrize("text, expected", [
    ("space: {optim.lrr: {uniform: [0.1, 0.2]}}", "unknown config key 'optim.lrr' in {f} space (did you mean 'optim.lr'?)"),
    ("space: {optim.lr: {uniformm: [0.1, 0.2]}}", "unknown kind 'uniformm' for space optim.lr in {f} (did you mean 'uniform'?"),
    ("space: {model.dropout: {uniform: [0, 1.5]}}", "model.dropout must be in [0, 1), got 1.5 in the space of {f}"),
    ("space: {optim.lr: {log_uniform: [0, 0.1]}}", "a log range needs low > 0, got 0"),
    ("space: {optim.lr: {uniform: [0.2, 0.1]}}", "low must be below high, got [0.2, 0.1]"),
    ("space: {model.hidden_size: {uniform: [8, 16]}}", "model.hidden_size takes whole numbers, not a uniform range"),
    ("space: {model.cell: {choice: [lstm, gur]}}", "model.cell must be one of lstm|gru|rnn, got 'gur'"),
    ("space: {train.seq_len: {int: [8, 17, 4]}}", "the step must be >= 1 and divide high - low"),
    ("spaces: {}", "unknown key 'spaces' in {f} (did you mean 'space'?"),
    ("space: {optim.lr: {uniform: [0.1, 0.2]}}\nsweep: {trails: 3}", "unknown key sweep.trails in {f} (did you mean 'trials'?"),
    ("space: {optim.lr: {uniform: [0.1, 0.2]}}\nsweep: {sampler: grid}", "the grid sampler needs choice or int ranges"),
    ("space: {optim.lr: {uniform: [0.1, 0.2]}}\nsweep: {pruner: medain}", "sweep.pruner must be one of median|hyperband|none"),
])
def test_bad_sweep_files_get_one_line(cli, tmp_path, corpus, text, expected):
    f = tmp_path / "bad.yaml"
    f.write_text("train: {max_steps: 10, eval_every: 5}\n" + text + "\n")
    r = cli("sweep", f, corpus, "--out", tmp_path / "out")
    assert r.exit_code == 2
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert expected.format(f=f) in r.stderr
    assert not (tmp_path / "out").exists()  # nothing written before the checks pass


def test_no_budget_and_no_eval_are_refused(cli, tmp_path, corpus):
    f = tmp_path / "s.yaml"
    f.write_text("space: {optim.lr: {uniform: [0.1, 0.2]}}\n")
    r = cli("sweep", f, corpus)
    assert r.exit_code == 2 and "sets no per-trial budget" in r.stderr
    f.write_text("train: {max_steps: 5, eval_every: 0}\nspace: {optim.lr: {uniform: [0.1, 0.2]}}\n")
    r = cli("sweep", f, corpus)
    assert r.exit_code == 2 and "trials are compared by validation loss" in r.stderr


def test_missing_extra_says_what_to_install(cli, sweep_file, corpus, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna now raises ImportError
    r = cli("sweep", sweep_file, corpus)
    assert r.exit_code == 2
    assert r.stderr.strip() == "error: charrnn sweep needs optuna: pip install 'charrnn[sweep]'"


def test_unreachable_database_is_one_line(cli, sweep_file, corpus, tmp_path):
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))  # a port nobody listens on
    port = s.getsockname()[1]
    s.close()
    r = cli("sweep", sweep_file, corpus, "--storage", f"postgresql+psycopg://u:secret@127.0.0.1:{port}/db")
    assert r.exit_code == 1 and r.stderr.count("\n") == 1
    assert "cannot reach the sweep database" in r.stderr and "secret" not in r.stderr


def test_too_many_workers_refused(cli, sweep_file, corpus):
    from charrnn.engine.threads import usable_cores
    r = cli("sweep", sweep_file, corpus, "--workers", usable_cores() + 1)
    assert r.exit_code == 2 and "--workers must be between 1 and the" in r.stderr


def test_threads_env_caps_usable_cores(monkeypatch):
    from charrnn.engine.threads import usable_cores
    monkeypatch.delenv("CHARRNN_THREADS", raising=False)
    n = usable_cores()
    monkeypatch.setenv("CHARRNN_THREADS", "1")
    assert usable_cores() == 1
    monkeypatch.setenv("CHARRNN_THREADS", "64")
    assert usable_cores() == n


def test_two_workers_on_the_journal_file(tmp_path, sweep_file, corpus):
    out = tmp_path / "out"
    r = subprocess.run([CHARRNN, "sweep", sweep_file, corpus, "--workers", "2", "--out", out, "--plain"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    study = _study(str(out / "journal.log"), "tiny")
    trials = study.get_trials()
    assert len(trials) == 4
    assert {t.state.name for t in trials} <= {"COMPLETE", "PRUNED"}
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # both workers trained
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 4  # and never drew the same values
    import charrnn
    for t in trials:
        run = out / t.user_attrs["run"]
        assert (run / "config.yaml").is_file() and (run / "metrics.jsonl").is_file()
        charrnn.load(run)  # every trial is an ordinary run dir with a loadable checkpoint
    best = min((t for t in trials if t.state.name == "COMPLETE"), key=lambda t: t.value)
    assert f"best: trial {best.number}" in r.stdout
    # The best config is one `charrnn train --config` takes, and it is the best trial's.
    import yaml
    cfg = yaml.safe_load((out / "best.yaml").read_text())
    assert cfg["optim"]["lr"] == best.params["optim.lr"]
    assert cfg == yaml.safe_load((out / best.user_attrs["run"] / "config.yaml").read_text())
    r2 = subprocess.run([CHARRNN, "train", corpus, "--config", out / "best.yaml", "--max-steps", "2",
                         "--out", tmp_path / "again", "--plain"], capture_output=True, text=True, timeout=300)
    assert r2.returncode == 0, r2.stderr
    # The closing hint trains past the trial's budget (best.yaml keeps max_steps 10), in its own directory.
    hint = next(ln for ln in r.stdout.splitlines() if ln.startswith("train it 10x longer with: "))
    words = shlex.split(hint.removeprefix("train it 10x longer with: "))
    assert words[:3] == ["charrnn", "train", str(corpus)] and words[words.index("--config") + 1] == str(out / "best.yaml")
    assert words[words.index("--max-steps") + 1] == "100" and words[-2:] == ["--out", str(out / "best-run")]
    # Running it again on the finished study trains nothing more.
    r3 = subprocess.run([CHARRNN, "sweep", sweep_file, corpus, "--out", out, "--plain"],
                        capture_output=True, text=True, timeout=300)
    assert r3.returncode == 0 and len(_study(str(out / "journal.log"), "tiny").trials) == 4


def test_changed_space_is_not_mixed_into_a_study(tmp_path, sweep_file, corpus, cli):
    out = tmp_path / "out"
    sweep_file.write_text(TINY_SWEEP.replace("trials: 4", "trials: 1"))
    assert cli("sweep", sweep_file, corpus, "--out", out, "--plain").exit_code == 0
    sweep_file.write_text(TINY_SWEEP.replace("[8, 16]}", "[8, 12]}"))
    r = cli("sweep", sweep_file, corpus, "--out", out, "--plain")
    assert r.exit_code == 2 and "was started with another base config or search space" in r.stderr


def test_live_table_and_status_in_a_terminal(tmp_path, sweep_file, corpus):
    out = tmp_path / "out"
    code, text = run_in_pty(["sweep", sweep_file, corpus, "--out", "out"], tmp_path)
    assert code == 0, text
    assert "study tiny (random, median pruning, 4 trials)" in text
    assert re.search(r"4 trials\) on out/journal\.log - ", text)  # the live view's title, with its summary
    assert "lr" in text and "hidden_size" in text and "best: trial" in text
    assert "Traceback" not in text
    code, status = run_in_pty(["sweep", "--status", "--storage", out / "journal.log"], tmp_path)
    assert code == 0, status
    assert "study tiny" in status
    assert sum(status.count(w) for w in ("complete", "pruned")) >= 4


def test_ctrl_c_checkpoints_and_queues_the_trials(tmp_path, corpus):
    """Ctrl-C in the terminal: each worker writes its checkpoint, the trial is marked and queued, and
    the next `charrnn sweep` resumes it from that checkpoint (max_time counts across sessions)."""
    import json
    f = tmp_path / "long.yaml"
    f.write_text(TINY_SWEEP.replace("max_steps: 10", "max_time: 6, max_epochs: 0, checkpoint_every: 50")
                 .replace("trials: 4", "trials: 1").replace("seed: 0", "seed: 0, pruner: none"))
    out = tmp_path / "out"
    p = subprocess.Popen([CHARRNN, "sweep", f, corpus, "--out", out, "--plain"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 240
    while not list(out.glob("trial-0000/step*.npz")):
        assert time.monotonic() < deadline and p.poll() is None, p.communicate()
        time.sleep(0.1)
    os.killpg(p.pid, signal.SIGINT)  # what the terminal does: to the sweep's process group
    stdout, stderr = p.communicate(timeout=120)
    assert p.returncode == 130, stderr
    assert "stopping: each worker checkpoints its trial" in stderr
    trials = _study(str(out / "journal.log"), "long").get_trials()
    assert [t.state.name for t in trials] == ["FAIL", "WAITING"]
    assert trials[0].user_attrs["interrupted"] is True and trials[1].params == trials[0].params
    r = subprocess.run([CHARRNN, "sweep", f, corpus, "--out", out, "--plain"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    trials = _study(str(out / "journal.log"), "long").get_trials()
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE"]
    assert trials[1].user_attrs["run"] == "trial-0000" and not (out / "trial-0001").exists()
    log = "".join(p.read_text() for p in (out / "logs").glob("*.log"))
    assert "trial-0000 (resumed at step" in log
    steps = [r["step"] for r in step_records(out / "trial-0000")]
    assert steps == sorted(set(steps))  # one run, continued: no step logged twice


def test_grid_with_two_workers_visits_each_point_once(tmp_path, corpus):
    f = tmp_path / "grid.yaml"
    f.write_text(TINY_SWEEP.replace("  optim.lr: {log_uniform: [1.0e-3, 3.0e-2]}\n", "")
                 .replace("  model.dropout: {uniform: [0, 0.3]}\n", "")
                 .replace("sampler: random", "sampler: grid, pruner: hyperband").replace("trials: 4", "trials: 10"))
    out = tmp_path / "out"
    r = subprocess.run([CHARRNN, "sweep", f, corpus, "--workers", "2", "--out", out, "--plain"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    trials = _study(str(out / "journal.log"), "grid").get_trials()
    points = {(t.params["model.hidden_size"], t.params["train.seq_len"]) for t in trials}
    assert len(trials) == 6 and points == {(h, s) for h in (8, 16) for s in (8, 12, 16)}  # the whole grid, once


def test_the_example_sweep_file_is_valid():
    from charrnn.sweep.spec import load
    spec = load(str(Path(__file__).resolve().parent.parent / "examples" / "sweep-shakespeare.yaml"))
    assert spec.trials == 20 and spec.base.train.max_time == 60 and spec.sampler == "tpe"
    assert set(spec.space) == {"optim.lr", "model.hidden_size", "model.dropout", "train.seq_len"}

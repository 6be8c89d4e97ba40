"""Two `charrnn sweep` processes on one storage, as two machines would be, and one of them killed with
SIGKILL in the middle of a trial: the study still ends with every trial accounted for, the dead one
retried and resumed from its checkpoint, no run trained by two workers at once, every checkpoint whole.

Runs on the journal file (one machine's worker processes or an NFS share) and on a real PostgreSQL
server: set CHARRNN_TEST_PG_URL (`.ci/postgres.sh start DIR` prints one; `.ci/run` does it). Without it
the PostgreSQL case skips, except under CI=true, where it fails.
"""
import datetime
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from conftest import step_records

pytest.importorskip("optuna")

CHARRNN = str(Path(sys.executable).with_name("charrnn"))
STEPS = 3000
SWEEP = f"""\
model: {{hidden_size: 16, num_layers: 1}}
train: {{batch_size: 4, seq_len: 16, max_steps: {STEPS}, max_epochs: 0, eval_every: 250, checkpoint_every: 250,
         sample_every: 0, log_every: 250}}
space:
  optim.lr: {{log_uniform: [1.0e-3, 3.0e-2]}}
  model.dropout: {{uniform: [0, 0.3]}}
sweep: {{trials: 4, sampler: random, pruner: none, seed: 0, heartbeat: 1}}
"""


@pytest.fixture(scope="session")
def pg_url():
    url = os.environ.get("CHARRNN_TEST_PG_URL")
    if not url:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but CHARRNN_TEST_PG_URL is not set (.ci/run starts PostgreSQL with .ci/postgres.sh)")
        pytest.skip("no PostgreSQL server: set CHARRNN_TEST_PG_URL (e.g. from .ci/postgres.sh start DIR)")
    return url


@pytest.fixture(params=["journal", "postgresql"])
def storage(request, tmp_path):
    if request.param == "journal":
        return str(tmp_path / "shared" / "journal.log")
    return request.getfixturevalue("pg_url")


def _parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_killed_machine_loses_no_trial(storage, tmp_path, corpus):
    import charrnn
    from charrnn.checkpoints.npz import load as load_npz
    from charrnn.sweep.storage import Store
    f = tmp_path / "sweep.yaml"
    f.write_text(SWEEP)
    name = f"kill-{uuid.uuid4().hex[:8]}"
    out = tmp_path / "runs"  # the trials' run dirs, on storage both "machines" see
    cmd = [CHARRNN, "sweep", f, corpus, "--storage", storage, "--study", name, "--out", out, "--plain"]
    machines = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                 start_new_session=True) for _ in range(2)]
    try:
        # Wait for a trial that is running and has written a checkpoint, then kill its machine.
        deadline, victim, store = time.monotonic() + 300, None, Store(storage)
        while victim is None:
            assert time.monotonic() < deadline, "no trial reached a checkpoint"
            assert all(m.poll() is None for m in machines), [m.communicate()[0] for m in machines]
            time.sleep(0.05)
            try:
                study = store.load(name)
            except Exception:  # the study is being created
                continue
            for t in study.get_trials(deepcopy=False):
                run = t.user_attrs.get("run")
                if t.state.name == "RUNNING" and run and "worker" in t.user_attrs and list((out / run).glob("step*.npz")):
                    worker_pid = int(t.user_attrs["worker"].rsplit("-", 2)[1])
                    victim = (t.number, run, worker_pid, _parent_of(worker_pid))
                    break
        number, run, worker_pid, sweep_pid = victim
        dead = next(m for m in machines if m.pid == sweep_pid)
        survivor = next(m for m in machines if m is not dead)
        dead.kill()  # SIGKILL: no handler runs, no checkpoint, nothing told to the storage
        killed_at = datetime.datetime.now()
        dead.wait(timeout=30)
        t0 = time.monotonic()
        while _alive(worker_pid):  # its worker goes with it, as on a machine that died
            assert time.monotonic() - t0 < 30, "the killed sweep's worker is still alive"
            time.sleep(0.05)
        text, _ = survivor.communicate(timeout=600)
        assert survivor.returncode == 0, text
    finally:
        for m in machines:
            if m.poll() is None:
                os.killpg(m.pid, signal.SIGKILL)
                m.wait()

    trials = Store(storage).load(name).get_trials()
    by_number = {t.number: t for t in trials}
    killed = by_number[number]
    assert killed.state.name == "FAIL" and not killed.user_attrs.get("interrupted")
    # Every trial is accounted for: complete, or failed with a retry that continues its run.
    assert {t.state.name for t in trials} <= {"COMPLETE", "PRUNED", "FAIL"}, [t.state for t in trials]
    retried = {t.system_attrs["retry_history"][-1]: t for t in trials if t.system_attrs.get("retry_history")}
    for t in trials:
        if t.state.name == "FAIL":
            assert t.number in retried, f"trial {t.number} failed and was not retried"
            if "run" in t.user_attrs:
                assert retried[t.number].user_attrs["run"] == t.user_attrs["run"]
    assert sum(1 for t in trials if not t.system_attrs.get("retry_history")) == 4
    assert len({t.user_attrs["run"] for t in trials}) == 4
    # The killed run was continued by the survivor, from its checkpoint, after the kill.
    retry = retried[number]
    assert retry.state.name == "COMPLETE" and retry.user_attrs["run"] == run
    assert retry.datetime_start > killed_at
    logs = "".join(p.read_text() for p in (out / "logs").glob("*.log"))
    assert f"{run} (resumed at step" in logs
    # No run trained by two workers at once: each run's attempts follow one another.
    for r in {t.user_attrs["run"] for t in trials}:
        attempts = sorted((t for t in trials if t.user_attrs.get("run") == r), key=lambda t: t.datetime_start)
        for a, b in zip(attempts, attempts[1:]):
            assert a.datetime_complete <= b.datetime_start, f"{r}: trials {a.number} and {b.number} overlap"
    # No run dir is corrupt: every checkpoint verifies, every run reached its budget exactly once.
    for d in sorted(out.glob("trial-*")):
        for npz in d.glob("*.npz"):
            load_npz(npz)
        assert charrnn.load(d).meta["progress"]["step"] <= STEPS
        steps = [r["step"] for r in step_records(d)]
        assert steps == sorted(set(steps)) and steps[-1] == STEPS, d

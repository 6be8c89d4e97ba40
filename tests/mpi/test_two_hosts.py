"""Two "hosts" on one machine: two network namespaces joined by a veth pair, ranks launched in both by
Open MPI's mpirun through an rsh agent (`ip netns exec HOST ...`), talking over TCP only. Under CI=true these
run (the fixture fails rather than skips without MPI, root or `ip netns`)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from support import mpi
from support.exe import charrnn_command
from support.runs import step_records

from charrnn.checkpoints import store

# Every rank reports its rank, its network namespace's inode, and the sum over ranks of a 1 MB float32 buffer
# filled with rank + 1 (an Allreduce of that size goes over the wire in pieces, not one small message).
PROBE = """
import json, os, sys
import numpy as np
from mpi4py import MPI
c = MPI.COMM_WORLD
a = np.full(1 << 18, c.rank + 1, dtype=np.float32)
b = np.empty_like(a)
for _ in range(4):
    c.Allreduce(a, b, op=MPI.SUM)
mine = {"rank": c.rank, "size": c.size, "netns": os.stat("/proc/self/ns/net").st_ino,
        "sum": float(b[0]), "same": bool((b == b[0]).all())}
ranks = c.gather(mine, root=0)  # one line from rank 0: the ranks' own lines may interleave in mpirun's output
if c.rank == 0:
    print(json.dumps(ranks), flush=True)
"""


@pytest.fixture
def hosts():
    with mpi.two_hosts() as h:
        yield h


def _probe(hosts, tmp_path, per_host: int) -> list[dict]:
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    done = mpi.run(hosts.mpirun_argv(per_host, [sys.executable, script]), timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(next(line for line in done.stdout.splitlines() if line.startswith("[")))


@pytest.mark.parametrize("per_host", [1, 2])
def test_allreduce_crosses_the_veth(hosts, tmp_path, per_host):
    """The harness itself: ranks 0..per_host-1 in host a, the rest in b; the Allreduce is right on every
    rank, and at least the buffer's bytes went each way over the veth."""
    before = hosts.veth_bytes()
    ranks = _probe(hosts, tmp_path, per_host)
    after = hosts.veth_bytes()
    k = 2 * per_host
    assert [r["rank"] for r in ranks] == list(range(k))
    assert all(r["sum"] == k * (k + 1) / 2 and r["same"] for r in ranks)
    own = os.stat("/proc/self/ns/net").st_ino
    spaces = [r["netns"] for r in ranks]
    assert own not in spaces
    assert len(set(spaces[:per_host])) == 1 and len(set(spaces[per_host:])) == 1 and spaces[0] != spaces[-1]
    moved = {ns: (after[ns][0] - before[ns][0], after[ns][1] - before[ns][1]) for ns in after}
    for rx, tx in moved.values():
        assert rx >= 4 << 20 and tx >= 4 << 20, moved  # 4 Allreduces of 1 MB: each crosses in full at least once


def test_namespaces_are_gone_after_the_fixture(tmp_path):
    with mpi.two_hosts() as h:
        names = [x.netns for x in h.hosts]
        assert set(names) <= set(mpi.ours())
    assert not set(names) & set(mpi.ours())


def test_a_hung_job_fails_and_leaves_nothing_running(hosts, tmp_path):
    """Rank 1 never joins the Barrier: run() gives up at its timeout, kills every process of the job (the
    ranks too, in both namespaces) and fails the test instead of hanging CI."""
    script = tmp_path / "hang.py"
    script.write_text("import time\nfrom mpi4py import MPI\nc = MPI.COMM_WORLD\n"
                      "print('up', c.rank, flush=True)\nc.Barrier() if c.rank == 0 else time.sleep(600)\n")
    with pytest.raises(pytest.fail.Exception, match="timed out after 8 s"):
        mpi.run(hosts.mpirun_argv(1, [sys.executable, script]), timeout=8)
    assert [mpi._processes_in(h.netns) for h in hosts.hosts] == [[], []]


# -- charrnn train across the two hosts -----------------------------------------------------------------------
# 32's one-host tests' model (tests/mpi/test_ranks.py): 2 layers with dropout, B4 T16; 12 steps.
MODEL = ["--hidden", "16", "--layers", "2", "--set", "model.dropout=0.2", "--batch-size", "4", "--seq-len", "16",
         "--plain", "--sample-every", "0", "--set", "train.log_every=1", "--eval-every", "6", "--checkpoint-every", "6",
         "--seed", "7", "--max-steps", "12"]
# The tolerance 32 states for K ranks against one process (its tests/mpi/test_ranks.py, docs/architecture.md
# "Processes"): a rank's GEMMs cover its streams only and the Allreduce adds in its own order.
REL = 2e-5


def _train(argv_of, tmp_path, corpus, out: str) -> subprocess.CompletedProcess:
    args = ["train", corpus, "--out", tmp_path / out, *MODEL]
    done = mpi.run(argv_of([charrnn_command(), *args]), timeout=300, cwd=tmp_path, env=mpi.env(CHARRNN_THREADS="1"))
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def _losses(run) -> np.ndarray:
    return np.array([[r["train_loss"], r.get("val_loss") or 0.0] for r in step_records(run)])


@pytest.mark.parametrize("per_host", [1, 2])
def test_charrnn_train_across_two_hosts_is_one_process_run(hosts, tmp_path, corpus, per_host):
    """per_host ranks in each namespace: the same losses as one process (to REL), the same checkpoint
    arrays, and every step's gradient Allreduce went over the veth."""
    _train(lambda argv: argv, tmp_path, corpus, "one")
    before = hosts.veth_bytes()
    done = _train(lambda argv: hosts.mpirun_argv(per_host, argv), tmp_path, corpus, "many")
    after = hosts.veth_bytes()
    k = 2 * per_host
    assert f"ranks: {k} MPI ranks x {4 // k} streams ({per_host} on this host)" in done.stdout + done.stderr
    one, many = _losses(tmp_path / "one"), _losses(tmp_path / "many")
    assert one.shape == many.shape == (12, 2)
    np.testing.assert_allclose(many, one, rtol=REL)
    a, b = (store.load(tmp_path / run / "last.npz").arrays for run in ("one", "many"))
    assert {n: v.shape for n, v in a.items()} == {n: v.shape for n, v in b.items()}
    for name in a:
        np.testing.assert_allclose(b[name], a[name], rtol=1e-3, atol=1e-5, err_msg=name)
    # Each of 12 steps reduces the flat float32 gradient across the hosts: its bytes cross the veth each way.
    gradient = 4 * sum(v.size for n, v in a.items() if not n.startswith(("optim.", "state.", "ema.")))
    for ns, (rx, tx) in after.items():
        moved = (rx - before[ns][0], tx - before[ns][1])
        assert min(moved) >= 12 * gradient, (ns, moved, gradient)

"""Two "hosts" on one machine: two network namespaces joined by a veth pair, ranks launched in both by
Open MPI's mpirun through an rsh agent (`ip netns exec HOST ...`), talking over TCP only. Under CI=true these
run (the fixture fails rather than skips without MPI, root or `ip netns`)."""
from __future__ import annotations

import json
import os
import sys

import pytest
from support import mpi

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

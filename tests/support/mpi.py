"""Launching MPI jobs in the tests: Open MPI's mpirun on this host, and two "hosts" on this host.

- need_mpi() skips a test (fails it under CI=true) unless Open MPI's mpirun and a working mpi4py are here.
- mpirun_argv(k, argv) is the one-host command line: root allowed, --oversubscribe (4 ranks on CI's 2 cores),
  --bind-to none (ranks share the cores with the threads they start).
- run(argv, timeout) waits for a job; on timeout it kills the job's whole session (mpirun, its daemons and
  every rank, wherever they run) and fails the test with the job's output, so a hung collective fails CI
  instead of hanging it.
- two_hosts() (the `two_hosts` fixture of tests/mpi/conftest.py) is two network namespaces joined by a veth
  pair; TwoHosts.mpirun_argv(per_host, argv) launches ranks in both with mpirun's rsh launcher, an agent that
  runs `ip netns exec HOST ...`, over MPI's TCP transport only (btl tcp,self: no shared memory between them).
  veth_bytes() reads the veth's byte counters, so a test can show the traffic crossed it.

The recipe (the subnet form of btl_tcp_if_include is required: each namespace sees only its own veth end, so
an interface name is unknown on the other side) is in the issue 32 notes.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

MPIRUN = shutil.which("mpirun")
IP = shutil.which("ip")
ROOT_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
FLAGS = ["--oversubscribe", "--bind-to", "none"]
# Only TCP between ranks in the two "hosts" (no shared memory, no other fabric), on the veth's subnet.
TCP_ONLY = ["--mca", "btl", "tcp,self", "--mca", "pml", "ob1"]
PREFIX = "crn"  # namespaces and veth ends of these tests: crn<pid>-<tag><a|b>, so stale ones can be found
TIMEOUT = 240.0


def _fail_or_skip(why: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{why} (CI=true: .ci/run installs it with .ci/mpi.sh and the test extra)")
    pytest.skip(why)


@cache
def mpi_missing() -> str | None:
    """Why MPI jobs cannot run here, or None. mpi4py is tried in a subprocess: importing mpi4py.MPI in the
    pytest process would initialise MPI in it."""
    if MPIRUN is None:
        return "no mpirun (Debian: apt-get install openmpi-bin libopenmpi-dev)"
    version = subprocess.run([MPIRUN, "--version"], capture_output=True, text=True, timeout=60).stdout
    if "Open MPI" not in version:
        return f"mpirun is not Open MPI's ({version.splitlines()[0] if version else 'no version'}): the tests use its flags"
    probe = subprocess.run([sys.executable, "-c", "from mpi4py import MPI; print(MPI.Get_library_version())"],
                           capture_output=True, text=True, timeout=60, env=env())
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["?"])[-1]
        return f"mpi4py does not load an MPI ({last}): pip install 'charrnn[mpi]' with an MPI installed"
    return None


def need_mpi() -> None:
    """Skip, or under CI=true fail, unless Open MPI's mpirun and mpi4py both work."""
    why = mpi_missing()
    if why:
        _fail_or_skip(why)


def env(**extra: str) -> dict[str, str]:
    """This process's environment for a job: root allowed, and nothing that would make a test run inside a
    launcher look like a rank itself."""
    e = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_", "PMI_", "PMIX_", "SLURM_"))}
    return {**e, **ROOT_ENV, **extra}


def mpirun_argv(k: int, argv: list[str], flags: list[str] = ()) -> list[str]:
    """`mpirun -n k ... argv` on this host."""
    return [MPIRUN, "-n", str(k), *FLAGS, *flags, *map(str, argv)]


def _pids(where) -> list[int]:
    """Pids of the processes for which where(/proc/PID) holds (one that ends meanwhile is skipped)."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                if where(d):
                    pids.append(int(d.name))
    return pids


def _kill_until_gone(find) -> None:
    """SIGKILL every pid find() returns until it returns none (a few rounds: a dying daemon may fork)."""
    for _ in range(20):
        pids = find()
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def _session(d: Path) -> int:
    return int((d / "stat").read_text().rsplit(")", 1)[1].split()[3])  # after ")": state ppid pgrp session


def kill_session(sid: int) -> None:
    """Kill every process of session sid: Open MPI puts each rank in a process group of its own, but not in
    a new session, so the session finds them all (in any network namespace)."""
    _kill_until_gone(lambda: _pids(lambda d: _session(d) == sid))


def run(argv: list[str], timeout: float = TIMEOUT, **kw) -> subprocess.CompletedProcess:
    """Run a job in a session of its own and wait; stdout and stderr captured as text. On timeout, every
    process of the session is killed and the test fails with the output so far. The session is emptied
    after a normal end too (a rank left behind would hold a port or a namespace)."""
    kw.setdefault("env", env())
    proc = subprocess.Popen(list(map(str, argv)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, **kw)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_session(proc.pid)
        out, err = proc.communicate()
        pytest.fail(f"timed out after {timeout:.0f} s: {' '.join(map(str, argv))}\n"
                    f"stdout:\n{out[-3000:]}\nstderr:\n{err[-3000:]}")
    finally:
        kill_session(proc.pid)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


# -- two "hosts": network namespaces joined by a veth pair ---------------------------------------------------
def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([IP, *args], capture_output=True, text=True, timeout=60)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done


def _netns_inode(name: str) -> int | None:
    with contextlib.suppress(OSError):
        return os.stat(f"/run/netns/{name}").st_ino
    return None


def _processes_in(name: str) -> list[int]:
    """Pids whose network namespace is the named one."""
    ino = _netns_inode(name)
    return [] if ino is None else _pids(lambda d: os.stat(d / "ns" / "net").st_ino == ino)


def delete_namespace(name: str) -> None:
    """Kill what still runs in it, then delete it (its veth end goes with it, and the peer with that)."""
    _kill_until_gone(lambda: _processes_in(name))
    _ip("netns", "delete", name, check=False)


def ours() -> list[str]:
    """The namespaces these tests made that still exist (any process's)."""
    listing = _ip("netns", "list", check=False).stdout
    return [line.split()[0] for line in listing.splitlines() if line.startswith(PREFIX)]


def _remove_stale() -> None:
    """Namespaces left by a test process that no longer runs (killed before its cleanup)."""
    for name in ours():
        pid = name[len(PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            delete_namespace(name)


def namespaces_missing() -> str | None:
    """Why two network namespaces cannot be made here, or None."""
    if IP is None:
        return "no ip command (Debian: apt-get install iproute2)"
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"{PREFIX}{os.getpid()}-probe"
    done = _ip("netns", "add", probe, check=False)
    if done.returncode != 0:
        return f"ip netns add fails here: {done.stderr.strip()}"
    delete_namespace(probe)
    return None


AGENT = """#!/bin/sh
# mpirun's rsh agent for the two "hosts": `agent HOST COMMAND...` runs COMMAND in HOST's network namespace.
host=$1; shift
case "$host" in
{cases}
*) echo "agent: unknown host $host" >&2; exit 1 ;;
esac
exec {ip} netns exec "$ns" sh -c "$*"
"""


@dataclass
class Host:
    netns: str
    veth: str
    address: str


class TwoHosts:
    """Two network namespaces a and b, a veth pair between them on a /24 of their own, a hostfile and the
    rsh agent. Ranks fill host a's slots first: with per_host ranks each, ranks 0..per_host-1 run in a."""

    def __init__(self, workdir: Path):
        tag = secrets.token_hex(2)
        self.subnet_prefix = f"10.{200 + int(tag[:2], 16) % 50}.{int(tag[2:], 16)}"
        self.subnet = f"{self.subnet_prefix}.0/24"
        self.hosts = [Host(f"{PREFIX}{os.getpid()}-{tag}{s}", f"v{PREFIX}{tag}{s}", f"{self.subnet_prefix}.{i + 1}")
                      for i, s in enumerate("ab")]
        self.workdir = Path(workdir)
        self.agent = self.workdir / "agent.sh"
        self.hostfile = self.workdir / "hostfile"

    def up(self) -> None:
        a, b = self.hosts
        for h in self.hosts:
            _ip("netns", "add", h.netns)
        _ip("link", "add", a.veth, "type", "veth", "peer", "name", b.veth)
        for h in self.hosts:
            _ip("link", "set", h.veth, "netns", h.netns)
            _ip("-n", h.netns, "addr", "add", f"{h.address}/24", "dev", h.veth)
            _ip("-n", h.netns, "link", "set", h.veth, "up")
            _ip("-n", h.netns, "link", "set", "lo", "up")
        cases = "\n".join(f'{h.address}) ns={h.netns} ;;' for h in self.hosts)
        self.agent.write_text(AGENT.format(cases=cases, ip=IP))
        self.agent.chmod(0o755)

    def down(self) -> None:
        for h in self.hosts:
            delete_namespace(h.netns)

    def mpirun_argv(self, per_host: int, argv: list[str], flags: list[str] = ()) -> list[str]:
        """mpirun started in host a, per_host ranks in each host, TCP only on the veth's subnet."""
        self.hostfile.write_text("".join(f"{h.address} slots={per_host}\n" for h in self.hosts))
        a = self.hosts[0]
        return [IP, "netns", "exec", a.netns, MPIRUN, "-n", str(2 * per_host), "--hostfile", str(self.hostfile),
                "--mca", "plm_rsh_agent", str(self.agent), *TCP_ONLY,
                "--mca", "btl_tcp_if_include", self.subnet, "--mca", "oob_tcp_if_include", self.subnet,
                "--bind-to", "none", *flags, *map(str, argv)]

    def veth_bytes(self) -> dict[str, tuple[int, int]]:
        """{namespace: (rx_bytes, tx_bytes)} of each host's veth end (`ip -s -j link`)."""
        out = {}
        for h in self.hosts:
            link = json.loads(_ip("-n", h.netns, "-s", "-j", "link", "show", "dev", h.veth).stdout)[0]
            stats = link.get("stats64") or link["stats"]
            out[h.netns] = (int(stats["rx"]["bytes"]), int(stats["tx"]["bytes"]))
        return out


@contextlib.contextmanager
def two_hosts():
    """TwoHosts, set up; its namespaces are deleted afterwards, also when the test fails. Skips (fails
    under CI=true) when MPI or network namespaces are unavailable."""
    need_mpi()
    why = namespaces_missing()
    if why:
        _fail_or_skip(why)
    _remove_stale()
    with tempfile.TemporaryDirectory(prefix="two-hosts-") as d:
        hosts = TwoHosts(Path(d))
        try:
            hosts.up()
            yield hosts
        finally:
            hosts.down()

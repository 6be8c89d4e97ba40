"""The MPI world of a run, if it has one: seen from the environment the launcher sets, mpi4py imported
only then, and the handful of collectives data-parallel training uses.

How a launch is recognised (no import of MPI otherwise):
- Open MPI's mpirun/mpiexec: OMPI_COMM_WORLD_SIZE (and _RANK, _LOCAL_SIZE);
- MPICH/Intel MPI's hydra, Slurm's srun --mpi=pmi2: PMI_SIZE (PMI_RANK);
- Slurm's srun: SLURM_STEP_NUM_TASKS (SLURM_PROCID), set in a job step only, not in the batch script;
- a PMIx launcher that says only PMIX_RANK: the size is asked from MPI.
A world of one process is no world: `mpirun -n 1 charrnn train` is an ordinary run.

A rank that leaves without the others agreeing to end (an error on one rank, a second Ctrl-C, an
exception nobody expected) calls MPI_Abort on its way out (`atexit`), so no rank ever waits forever in a
collective for a partner that is gone; a rank killed outright (SIGKILL, the OOM killer) is seen by the
launcher, which ends the job.

Open MPI's mpirun answers a Ctrl-C (or its own SIGTERM/SIGHUP) with a kill sequence on every rank (orte/mca/
odls/base/odls_base_default_fns.c, v4.1): SIGCONT, a sleep of odls_base_sigkill_timeout seconds (default
1), SIGTERM, the same sleep, SIGKILL. While it sleeps it forwards no output, so a rank that kept printing
would block on a full terminal buffer and never reach the SIGTERM's checkpoint: kill_grace() tells the
trainer how long to wait at its SIGCONT for the SIGTERM that follows (training/ranks.py holds there).
"""
from __future__ import annotations

import atexit
import hashlib
import os

import numpy as np

from ..errors import UsageError

SIZE_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_STEP_NUM_TASKS")
RANK_VARS = ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "SLURM_PROCID")
INSTALL = "pip install 'charrnn[mpi]'"
SIGKILL_TIMEOUT = "OMPI_MCA_odls_base_sigkill_timeout"  # mpirun passes its --mca settings on to the ranks


def launch_size(environ=os.environ) -> int | None:
    """The number of processes the launcher started (0: a launcher that does not say), None without one."""
    for name in SIZE_VARS:
        value = environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 0 if environ.get("PMIX_RANK", "").isdigit() else None


def launch_rank(environ=os.environ) -> int:
    """This process's rank as the launcher numbered it (0 without a launcher)."""
    for name in RANK_VARS:
        value = environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 0


class Quiet(UsageError):
    """An error every rank has; rank 0 says it, the others only exit with its code."""
    quiet = True

    def __init__(self, exit_code: int):
        super().__init__("(said by rank 0)")
        self.exit_code = exit_code


def kill_grace(environ=os.environ) -> float | None:
    """Seconds from Open MPI's SIGCONT to its SIGTERM when it ends the job (odls_base_sigkill_timeout: the
    rank sees it when it was given with --mca or in the environment; Open MPI's default is 1), or None
    when the launcher is not Open MPI's (no such sequence is known of it)."""
    if "OMPI_COMM_WORLD_SIZE" not in environ:
        return None
    try:
        return max(0.0, float(environ.get(SIGKILL_TIMEOUT, "1")))
    except ValueError:
        return 1.0


def world(environ=os.environ) -> "World | None":
    """The MPI world of this process, or None for an ordinary run (no launcher, or a world of one)."""
    size = launch_size(environ)
    if size is None or size == 1:
        return None
    try:
        from mpi4py import MPI
    except ImportError:
        if launch_rank(environ) != 0:
            raise Quiet(2) from None
        var = next((v for v in SIZE_VARS + ("PMIX_RANK",) if v in environ), "")
        raise UsageError(f"charrnn train was started by an MPI launcher ({var} is set) but mpi4py is not "
                         "installed", f"{INSTALL}, with an MPI such as Debian's openmpi-bin and "
                         "libopenmpi-dev, or train without the launcher") from None
    if MPI.COMM_WORLD.Get_size() == 1:
        return None
    return World(MPI)


class World:
    """COMM_WORLD with this process's place in it: rank, size, and the ranks sharing its host."""

    def __init__(self, MPI):
        self._mpi, self.comm = MPI, MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        node = self.comm.Split_type(MPI.COMM_TYPE_SHARED)
        self.local_rank, self.local_size = node.Get_rank(), node.Get_size()
        node.Free()
        self.root = self.rank == 0
        self.kill_grace = kill_grace()
        self.ended_together = False  # set when every rank leaves at the same point (success or one error)
        self.exit_code = 1
        atexit.register(self._leave)

    def _leave(self) -> None:
        # atexit runs before mpi4py's own MPI_Finalize, which would wait for ranks that are waiting for us
        if not self.ended_together and not self._mpi.Is_finalized():
            self.comm.Abort(self.exit_code)

    # -- collectives: every rank calls each one at the same point of the run ---------------------------
    def sum_in_place(self, buf: np.ndarray) -> None:
        """buf (a contiguous float32 or float64 vector) becomes the sum of every rank's buf."""
        self.comm.Allreduce(self._mpi.IN_PLACE, buf, op=self._mpi.SUM)

    def sum(self, values) -> np.ndarray:
        """The element-wise sum over the ranks of a few float64 numbers."""
        buf = np.array(values, dtype=np.float64)
        self.sum_in_place(buf)
        return buf

    def gather_streams(self, a: np.ndarray) -> np.ndarray | None:
        """a (L, b, H), this rank's streams: on rank 0 the (L, size*b, H) array of every rank's streams in
        rank order; None elsewhere."""
        mine = np.ascontiguousarray(a.transpose(1, 0, 2))
        out = np.empty((self.size * mine.shape[0],) + mine.shape[1:], a.dtype) if self.root else None
        self.comm.Gather(mine, out, root=0)
        return None if out is None else np.ascontiguousarray(out.transpose(1, 0, 2))

    def differing(self, *arrays: np.ndarray) -> list[int]:
        """The ranks whose arrays' bytes differ from rank 0's (by sha256), the same list on every rank."""
        h = hashlib.sha256()
        for a in arrays:
            h.update(np.ascontiguousarray(a).data)
        mine = np.frombuffer(h.digest(), np.uint8)
        every = np.empty((self.size, mine.size), np.uint8)
        self.comm.Allgather(mine, every)
        return [r for r in range(1, self.size) if not np.array_equal(every[r], every[0])]

    def broadcast_text(self, text: str | None, root: int = 0) -> str:
        """Rank `root`'s text on every rank (text is ignored elsewhere). UTF-8 bytes, never pickled."""
        data = np.frombuffer(text.encode(), np.uint8) if self.rank == root else None
        n = np.array([0 if data is None else data.size], np.int64)
        self.comm.Bcast(n, root=root)
        buf = data.copy() if data is not None else np.empty(int(n[0]), np.uint8)
        self.comm.Bcast(buf, root=root)
        return buf.tobytes().decode()

    def first_failure(self, code: int, text: str) -> tuple[int, int, str] | None:
        """(rank, exit code, message) of the lowest rank whose code is not 0, the same on every rank;
        None when every rank's code is 0."""
        codes = np.empty(self.size, np.int64)
        self.comm.Allgather(np.array([code], np.int64), codes)
        failed = np.flatnonzero(codes)
        if failed.size == 0:
            return None
        r = int(failed[0])
        return r, int(codes[r]), self.broadcast_text(text, root=r)

    def barrier(self) -> None:
        self.comm.Barrier()

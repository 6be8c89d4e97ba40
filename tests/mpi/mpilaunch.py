"""Starting `charrnn train` under Open MPI's mpirun on this host for the one-host tests (tests/support/mpi.py,
helper 32n's, holds the two-host harness). Under CI=true a missing mpirun or mpi4py fails the tests;
elsewhere they skip."""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys

import pytest
from support.exe import charrnn_command

MPIRUN = shutil.which("mpirun")
# 4 ranks on CI's 2 cores; no binding (ranks share the cores with the threads they start)
FLAGS = ["--oversubscribe", "--bind-to", "none"]
ROOT_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}


def need_mpi() -> None:
    """Skip (fail under CI=true) unless mpirun and mpi4py are both installed."""
    missing = [what for what, ok in (("mpirun", MPIRUN is not None),
                                     ("mpi4py", importlib.util.find_spec("mpi4py") is not None)) if not ok]
    if missing:
        why = f"{' and '.join(missing)} not installed (pip install 'charrnn[mpi]' with Open MPI)"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)


def env(**extra: str) -> dict[str, str]:
    e = dict(os.environ, **ROOT_ENV, CHARRNN_THREADS="1", **extra)
    for k in [k for k in e if k.startswith(("OMPI_COMM_WORLD", "PMI_", "PMIX_", "SLURM_"))]:
        del e[k]  # a test run inside a launcher must not look like a rank itself
    return e


def command(k: int, args: list[str], mpirun_flags: list[str] = ()) -> list[str]:
    return [MPIRUN, "-n", str(k), *FLAGS, *mpirun_flags, charrnn_command(), "train", *args]


def mpirun(k: int, args: list[str], cwd, timeout: float = 240, **kw) -> subprocess.CompletedProcess:
    """`mpirun -n k charrnn train ARGS`, waited for; stdout and stderr captured as text."""
    return subprocess.run(command(k, args), cwd=cwd, env=env(), capture_output=True, text=True,
                          timeout=timeout, **kw)


def one_process(args: list[str], cwd, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([charrnn_command(), "train", *args], cwd=cwd, env=env(), capture_output=True,
                          text=True, timeout=timeout)


def python() -> str:
    return sys.executable

#!/usr/bin/env bash
# An MPI for the tests of `mpirun -n K charrnn train` (tests/mpi/): Debian's Open MPI (openmpi-bin for the
# mpirun launcher, libopenmpi-dev for the libmpi.so.40 the mpi4py wheel loads) and iproute2 (`ip netns` for
# the two-"host" tests), installed with apt-get when missing, as postgres.sh installs PostgreSQL.
# mpi4py itself comes from the test extra (pip install -e '.[test]'); it needs no compiler (a manylinux wheel).
# Under CI=true the MPI tests fail rather than skip without these.
set -euo pipefail
missing=()
command -v mpirun >/dev/null 2>&1 || missing+=(openmpi-bin)
dpkg-query -W -f='${Status}' libopenmpi-dev 2>/dev/null | grep -q "ok installed" || missing+=(libopenmpi-dev)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
if [ ${#missing[@]} -gt 0 ]; then
    echo "mpi.sh: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q "${missing[@]}" >&2 \
        || { apt-get update -q >&2 && apt-get install -y -q "${missing[@]}" >&2; }
fi
command -v mpirun >/dev/null 2>&1 || { echo "mpi.sh: no mpirun after installing openmpi-bin" >&2; exit 1; }
command -v ip >/dev/null 2>&1 || { echo "mpi.sh: no ip after installing iproute2" >&2; exit 1; }
mpirun --version | head -n 1 >&2

"""What a rank computes for its share of the streams, checked in one process (no MPI needed): its dropout
masks are the rows of the whole batch's, its gradients normalised by the whole batch add up to the
batch's, and an ordinary run never imports mpi4py; under a launcher without mpi4py, one line says what to
install."""
import os
import subprocess
import sys

import numpy as np
import pytest

from charrnn.distributed import world as W
from charrnn.engine.kernels import dropout
from charrnn.engine.model import Model
from charrnn.engine.params import Shape, init_params


@pytest.mark.parametrize("H", [16, 7])
@pytest.mark.parametrize("share", [(0, 2), (1, 3), (3, 5), (0, 5)])
def test_mask_rows_are_the_whole_masks_rows(H, share):
    T, B, p, key = 5, 5, 0.3, 0x1234_5678_9ABC_DEF0
    whole = np.empty((T, B, H), np.float32)
    dropout.fill_masks(whole, key, p)
    b0, b1 = share
    part = np.empty((T, b1 - b0, H), np.float32)
    dropout.fill_mask_columns(part.reshape(T, -1), key, p, B * H, b0 * H)
    assert np.array_equal(part, whole[:, b0:b1])
    plain = np.empty_like(part)  # the numpy twin (NUMBA_DISABLE_JIT) gives the same bits
    dropout._fill_rows_numpy(plain.reshape(T, -1), np.uint64(key), np.uint64(round(p * 2 ** 32)),
                             np.float32(1 / (1 - p)), B * H, b0 * H)
    assert np.array_equal(plain, part)


def test_model_masks_for_streams_follow_the_same_keys():
    m = Model(Shape("lstm", 11, 8, 2, 0))
    whole = m.dropout_masks(np.random.default_rng(3), 0.5, 4, 6)
    half = m.dropout_masks(np.random.default_rng(3), 0.5, 4, 6, streams=(2, 4))
    for a, b in zip(whole, half):
        assert np.array_equal(a[:, 2:4], b)


def test_share_gradients_add_up_to_the_batch():
    """Two halves, each normalised by the whole batch's B*T, sum to the one-process gradient (float32
    rounding: the sums run in another order)."""
    shape = Shape("lstm", 13, 16, 2, 0)
    m = Model(shape)
    init_params(m.params, np.random.default_rng(0), 0.1)
    rng = np.random.default_rng(1)
    B, T = 4, 9
    x, y = rng.integers(0, 13, (B, T)), rng.integers(0, 13, (B, T))
    g = m.params.zeros_like()
    loss, _ = m.forward_backward(x, y, m.zero_state(B), g)
    total, parts = 0.0, m.params.zeros_like()
    for b0, b1 in ((0, 2), (2, 4)):
        gp = m.params.zeros_like()
        lp, _ = m.forward_backward(x[b0:b1], y[b0:b1], m.zero_state(b1 - b0), gp, mean_over=B * T)
        total += lp
        parts.flat += gp.flat
    assert abs(total - loss) < 1e-6 * abs(loss)
    np.testing.assert_allclose(parts.flat, g.flat, rtol=1e-4, atol=1e-7)


def test_launch_seen_from_the_environment_only():
    assert W.launch_size({}) is None and W.world({}) is None
    assert W.launch_size({"OMPI_COMM_WORLD_SIZE": "4"}) == 4
    assert W.launch_size({"PMI_SIZE": "2", "PMI_RANK": "1"}) == 2 and W.launch_rank({"PMI_RANK": "1"}) == 1
    assert W.launch_size({"SLURM_STEP_NUM_TASKS": "8"}) == 8
    assert W.launch_size({"PMIX_RANK": "0"}) == 0
    assert W.launch_size({"SLURM_NTASKS": "8"}) is None  # a batch script, not a job step
    assert W.world({"OMPI_COMM_WORLD_SIZE": "1"}) is None  # mpirun -n 1: an ordinary run


def test_the_kill_grace_is_open_mpis_sigkill_timeout():
    """How long a rank holds at Open MPI's SIGCONT (training/ranks.py): mpirun's --mca value, else its 1 s."""
    ompi = {"OMPI_COMM_WORLD_SIZE": "2"}
    assert W.kill_grace(ompi) == 1.0
    assert W.kill_grace({**ompi, W.SIGKILL_TIMEOUT: "30"}) == 30.0
    assert W.kill_grace({**ompi, W.SIGKILL_TIMEOUT: "soon"}) == 1.0
    assert W.kill_grace({"PMI_SIZE": "2"}) is None and W.kill_grace({}) is None  # no such sequence known


CODE = """
import sys
if {hide}:
    sys.modules["mpi4py"] = None  # import mpi4py now raises ImportError
import charrnn
try:
    charrnn.train({corpus!r}, {{"model": {{"hidden_size": 8, "num_layers": 1}},
                  "train": {{"batch_size": 2, "seq_len": 8, "max_steps": 2, "sample_every": 0}}}},
                  {out!r}, live=False)
except charrnn.errors.CharrnnError as e:
    print("ERROR", e.one_line())
print("MPI", any(name == "mpi4py" or name.startswith("mpi4py.") for name, mod in sys.modules.items()
                 if mod is not None))
"""


def _run(tmp_path, corpus, hide: bool, **env):
    e = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_COMM_WORLD", "PMI_", "PMIX_", "SLURM_"))}
    code = CODE.format(hide=hide, corpus=str(corpus), out=str(tmp_path / "run"))
    return subprocess.run([sys.executable, "-c", code], env=dict(e, **env), capture_output=True, text=True,
                          timeout=300)


def test_an_ordinary_run_imports_no_mpi(tmp_path, corpus):
    r = _run(tmp_path, corpus, hide=False)
    assert r.returncode == 0, r.stderr
    assert "MPI False" in r.stdout and "ERROR" not in r.stdout
    assert (tmp_path / "run" / "last.npz").exists()


def test_a_launch_without_mpi4py_says_what_to_install(tmp_path, corpus):
    r = _run(tmp_path, corpus, hide=True, OMPI_COMM_WORLD_SIZE="2", OMPI_COMM_WORLD_RANK="0")
    assert r.returncode == 0, r.stderr
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("ERROR"))
    assert "mpi4py is not installed" in line and "pip install 'charrnn[mpi]'" in line
    assert not (tmp_path / "run").exists()

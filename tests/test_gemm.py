"""The packed recurrent path: the LLVM-vector micro-kernel, panel packing, and the jitted T loops of every
cell against the per-step numpy loops they replace (float32; the float64 reference checks run the per-step
loops, see test_kernels.py)."""
import numba
import numpy as np
import pytest

from charrnn.engine import model as model_mod
from charrnn.engine.kernels import gemm
from charrnn.engine.model import Model
from charrnn.engine.params import Shape

pytestmark = pytest.mark.skipif(numba.config.DISABLE_JIT, reason="the micro-kernel is an LLVM intrinsic")


def _block_runner(MR, NR):
    mk = gemm.micro_kernel(MR, NR)

    @numba.njit
    def run(a, w, c):  # a (MR, K), w (K, NR), c (MR, NR): c = a @ w, rows read at a stride of K
        mk(a.ctypes.data, a.shape[1], w.ctypes.data, a.shape[1], c.ctypes.data, c.shape[1])
    return run


@pytest.mark.parametrize("MR,NR", [(8, 32), (6, 16), (4, 32), (2, 16), (1, 32), (3, 24)])
@pytest.mark.parametrize("K", [1, 7, 64])
def test_micro_kernel_matches_numpy(MR, NR, K):
    # Both block shapes run here whatever the host: the AVX2 shape (6, 16) is checked on AVX-512 too.
    rng = np.random.default_rng(MR * 100 + K)
    a = rng.standard_normal((MR, K)).astype(np.float32)
    w = rng.standard_normal((K, NR)).astype(np.float32)
    c = np.full((MR, NR), np.nan, np.float32)
    _block_runner(MR, NR)(a, w, c)
    np.testing.assert_allclose(c, a.astype(np.float64) @ w, rtol=1e-5, atol=1e-5 * np.sqrt(K))


@pytest.mark.parametrize("B", [1, 2, 3, 5, 7, 8, 9, 13, 16, 25, 33])
@pytest.mark.parametrize("K,N", [(5, 12), (16, 64), (40, 160), (128, 512)])
def test_panel_product_any_rows_and_widths(B, K, N):
    rng = np.random.default_rng(B + K + N)
    a = rng.standard_normal((B, K)).astype(np.float32)
    w = rng.standard_normal((K, N)).astype(np.float32)
    wp = gemm.pack(w)
    assert wp.shape == (gemm.padded(N) // gemm.NR, K, gemm.NR)
    c = np.full((B, gemm.padded(N) + 3), np.nan, np.float32)  # wider than needed: ldc != width
    gemm.panel_product(a, wp, c)
    np.testing.assert_allclose(c[:, :N], a.astype(np.float64) @ w, rtol=1e-5, atol=1e-5 * np.sqrt(K))
    assert np.all(c[:, N:gemm.padded(N)] == 0)  # zero padding columns give zeros
    assert np.all(np.isnan(c[:, gemm.padded(N):]))  # nothing written past the panels


@pytest.fixture
def per_step_loops(monkeypatch):
    """Run the model with the per-step numpy loops (the path the packed kernels replace)."""
    def use(flag: bool):
        monkeypatch.setattr(model_mod, "packed_path", lambda dtype: flag and np.dtype(dtype) == np.float32)
    return use


@pytest.mark.parametrize("mr", [4, 6, 8])
@pytest.mark.parametrize("B", range(1, 41))
def test_row_blocks_are_balanced(B, mr):
    blocks = [gemm.row_block(B, j, mr) for j in range(gemm.n_row_blocks(B, mr))]
    starts = [b for b, _ in blocks]
    sizes = [r for _, r in blocks]
    assert starts == [sum(sizes[:j]) for j in range(len(sizes))] and sum(sizes) == B
    assert max(sizes) <= mr and max(sizes) - min(sizes) <= 1
    assert len(blocks) == -(-B // mr)


@pytest.mark.parametrize("cell,gates", [("lstm", 4), ("gru", 3)])
def test_interleaved_gate_order(cell, gates):
    from charrnn.engine.kernels import gru_fused, lstm_fused
    kernels = lstm_fused if cell == "lstm" else gru_fused
    U, H = kernels.U, 3 * kernels.U
    perm = kernels.interleaved_order(H)
    assert sorted(perm) == list(range(gates * H))
    # column block p holds every gate (PyTorch's blocks, each H wide) of units pU .. pU+U-1
    for p in range(H // U):
        for q in range(gates):
            lo = p * gates * U + q * U
            assert list(perm[lo:lo + U]) == [q * H + p * U + u for u in range(U)]


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("H,trace,fused", [(gemm.NR, False, True), (2 * gemm.NR, True, False),
                                           (gemm.NR + 4, False, False)])
def test_fused_passes_use_the_interleaved_order(cell, H, trace, fused):
    prep = Model(Shape(cell, 7, H, 2))._prepare_weights(backward=not trace, fused=not trace)
    assert (prep.perm is not None) == (fused and cell != "rnn")
    if prep.perm is not None:
        np.testing.assert_array_equal(prep.perm[prep.inv], np.arange(len(prep.perm)))


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("H,B,T,L,E", [(8, 1, 3, 1, 0), (40, 13, 7, 2, 0), (64, 9, 5, 3, 0), (33, 4, 6, 2, 0),
                                       (32, 13, 4, 2, 5), (96, 7, 3, 2, 0), (160, 11, 3, 1, 0), (64, 25, 3, 2, 0)])
def test_packed_path_matches_per_step_loops(cell, H, B, T, L, E, per_step_loops):
    m = Model(Shape(cell, 11, H, L, E))
    rng = np.random.default_rng(H * B + T)
    m.params.flat[:] = rng.uniform(-0.3, 0.3, m.params.flat.size)
    x, y = rng.integers(0, 11, (B, T)), rng.integers(0, 11, (B, T))
    state = m.zero_state(B)
    state.h[:] = rng.normal(size=state.h.shape) * 0.3
    if state.c is not None:
        state.c[:] = rng.normal(size=state.c.shape) * 0.3
    masks = m.dropout_masks(np.random.default_rng(1), 0.2, B, T)
    results = []
    for flag in (True, False):
        per_step_loops(flag)
        g = m.params.zeros_like()
        loss, s = m.forward_backward(x, y, state.copy(), g, masks)
        logits, _ = m.logits(x, state.copy())
        results.append((loss, s, g.flat.copy(), logits))
    (l1, s1, g1, z1), (l2, s2, g2, z2) = results
    assert l1 == pytest.approx(l2, rel=1e-6)
    # 5e-6: float32 rounding, not a difference of method. The RNN case H=64, 3 layers (no gate keeps
    # the state small, weights up to 0.3) puts both float32 paths 1.5-2.3e-6 from a float64 run of the
    # same model (AMD Zen 1, AVX2 blocks: the two are 2.7e-6 apart; 2e-6 failed there).
    np.testing.assert_allclose(s1.h, s2.h, atol=5e-6)
    np.testing.assert_allclose(z1, z2, atol=2e-5)
    np.testing.assert_allclose(g1, g2, atol=2e-6 * max(1.0, np.abs(g2).max()))


def test_float64_and_trace_take_the_per_step_loops():
    assert model_mod.packed_path(np.float32)
    assert not model_mod.packed_path(np.float64)


def test_other_block_shape_in_a_fresh_process(tmp_path):
    """The block shape is fixed per machine at import (8x32 with AVX-512, 6x16 with AVX2); run this file's
    model comparison under the other one, with its own Numba cache so no machine code is shared."""
    import os
    import subprocess
    import sys

    from charrnn.engine.kernels import gemm
    other = "6x16" if (gemm.MR, gemm.NR) == (8, 32) else "8x32"
    env = dict(os.environ, CHARRNN_KERNEL_BLOCK=other, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", __file__,
                        "-k", "packed_path_matches or panel_product_any_rows"],
                       env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert " passed" in r.stdout

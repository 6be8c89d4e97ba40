"""The per-step recurrent product: W_hh packed once per pass into panels, and a register-blocked
micro-kernel that reads them in order.

The product of one time step is small (B/2 rows of h against W_hh) and runs T times per chunk. Called as
numpy's matmul from a Python loop, it costs a Python round trip and an OpenBLAS repacking of the whole
W_hh on every call. Here `pack` cuts W into panels of NR columns, each K-major (row k of a panel is NR
consecutive floats), once per pass; `panel_product` runs the micro-kernel of vir.py over blocks of MR rows
by one panel, panels outer so a panel is fetched once per step and reused from L1 by every block of rows.
GRU and RNN call it from their jitted T loops, then their gate kernels; LSTM fuses the gate arithmetic
into the micro-kernel itself (lstm_fused.py).

Measured here (Xeon, AVX-512, one core, steady weights): 25x128.128x512 145 GFLOP/s against numpy's 84,
32x256.256x1024 143 vs 94, 32x512.512x2048 109 vs 66 (W_hh no longer fits L2 there).

Sizes: K = inner dimension, NR = panel width (columns), MR = rows per block.
"""
import os

import numpy as np

from .jit import kernel
from .vir import emit_product, row_block_intrinsic, vector_intrinsic

_CACHE: dict[tuple[int, int], object] = {}


def _product_body(NR: int):
    def body(v, args, rows):
        a, lda, w, K, c, ldc = args
        for r, acc in enumerate(emit_product(v, rows, NR, a, lda, w, K)):
            v.store(acc, v.ptr(c, v.b.mul(ldc, v.i64(r))))
    return body


def micro_kernel(MR: int, NR: int):
    """The intrinsic `mk(a_addr, lda, w_addr, K, c_addr, ldc)`, for fixed MR and NR.

    a_addr: address of A[0, 0] (float32, rows lda elements apart; reads A[r, k] for r < MR, k < K).
    w_addr: address of one packed panel (K, NR) float32, contiguous, row k at w + k*NR.
    c_addr: address of C[0, 0] (rows ldc elements apart); C[r, :NR] = sum_k A[r, k] * W[k, :].
    All addresses are plain integers (array.ctypes.data + offsets); the caller checks every extent."""
    key = (MR, NR)
    if key not in _CACHE:
        body = _product_body(NR)
        _CACHE[key] = vector_intrinsic(6, lambda v, args: body(v, args, MR))
    return _CACHE[key]


def _host_has_avx512() -> bool:
    try:
        from llvmlite import binding as llvm
        return "+avx512f" in llvm.get_host_cpu_features().flatten().split(",")
    except Exception:  # noqa: BLE001 - any failure: take the AVX2-sized block, correct everywhere
        return False


# Block shape by register file: AVX-512 has 32 zmm registers, so 8 rows x 32 columns (16 accumulators,
# 2 panel vectors, a broadcast) fit; AVX2 has 16 ymm registers: 6 rows x 16 columns (12 accumulators).
# Measured here (Xeon, AVX-512, one core, 32x256 . 256x1024): 8x32 74 GFLOP/s, 8x16 58, numpy 48.
def _block_shape() -> tuple[int, int]:
    # CHARRNN_KERNEL_BLOCK=6x16 runs the AVX2 block shape on an AVX-512 machine (and the reverse): the
    # tests use it, with a fresh NUMBA_CACHE_DIR, to check both shapes wherever they run.
    forced = os.environ.get("CHARRNN_KERNEL_BLOCK", "")
    if forced:
        mr, nr = (int(x) for x in forced.lower().split("x"))
        if not (1 <= mr <= 8 and nr % 4 == 0 and nr >= 4):  # NR = 4 units' gates (lstm_fused.py)
            raise ValueError(f"CHARRNN_KERNEL_BLOCK={forced!r}: want MRxNR, MR 1-8, NR a multiple of 4")
        return mr, nr
    return (8, 32) if _host_has_avx512() else (6, 16)


MR, NR = _block_shape()
_MK = row_block_intrinsic(6, _product_body(NR), MR)  # _MK(rows, a, lda, w, K, c, ldc), rows 1..MR


@kernel
def row_block(B, j, mr):
    """(first row, rows) of block j when B rows are cut into ceil(B / mr) blocks whose sizes differ by at
    most one (B = 25, mr = 8: 7, 6, 6, 6). Blocks of mr - 1 or mr - 2 rows keep enough independent
    accumulators to hide the FMA latency; a lone remainder row (8+8+8+1) does not."""
    nb = (B + mr - 1) // mr
    base = B // nb
    extra = B - base * nb
    return j * base + min(j, extra), base + (1 if j < extra else 0)


@kernel
def n_row_blocks(B, mr):
    return (B + mr - 1) // mr


def padded(n: int, nr: int = NR) -> int:
    """n rounded up to whole panels: the width of the scratch buffer `panel_product` writes."""
    return -(-n // nr) * nr


def pack(w: np.ndarray, nr: int = NR) -> np.ndarray:
    """Panels (P, K, nr) of w (K, N), K-major; columns past N are zero (their results unused). nr = NR
    for panel_product and the LSTM kernels; gru_fused's forward reads 3/2 NR-wide panels."""
    K, N = w.shape
    if N % nr == 0 and w.dtype == np.float32:  # one strided copy (a transposed w is fine); 10x the loop
        return np.ascontiguousarray(w.reshape(K, N // nr, nr).transpose(1, 0, 2))
    out = np.zeros((padded(N, nr) // nr, K, nr), np.float32)
    _pack_cols(out, np.ascontiguousarray(w, dtype=np.float32))
    return out


@kernel
def _pack_cols(out, w):
    P, K, nr = out.shape
    N = w.shape[1]
    for p in range(P):
        for k in range(K):
            for j in range(nr):
                if p * nr + j < N:
                    out[p, k, j] = w[k, p * nr + j]


@kernel
def panel_product(a, wp, c):
    """c[:, :P*NR] = a @ W for a (B, K) C-contiguous float32, wp = pack(W) (P, K, NR), c (B, >= P*NR)
    C-contiguous. Panels outer, row blocks inner (balanced: row_block): each panel is read from memory
    once per call and reused from L1 by every block of rows."""
    B, K = a.shape
    P = wp.shape[0]
    ldc = c.shape[1]
    aa = a.ctypes.data
    ca = c.ctypes.data
    wa = wp.ctypes.data
    for p in range(P):
        w_p = wa + p * K * NR * 4
        c_p = ca + p * NR * 4
        for j in range(n_row_blocks(B, MR)):
            b, rows = row_block(B, j, MR)
            _MK(rows, aa + b * K * 4, K, w_p, K, c_p + b * ldc * 4, ldc)

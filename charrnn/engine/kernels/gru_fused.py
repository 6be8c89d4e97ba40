"""GRU over a chunk with the gate arithmetic fused into the recurrent micro-kernel (float32, packed path).

Forward, per time step, per panel of U hidden units and block of rows: the micro-kernel computes h_t W_hh^T
for the 3U gate columns of those units (r, z, n side by side: 3U = 1.5 NR columns, 3 vector registers per
row), then in registers: r, z = sigmoid(x + hh), hn = hh_n + b_hn, n = tanh(x_n + r hn), h' = (1-z) n + z h.
Backward, per step and panel of NR units: dh = dhs_t + (dh_t+1 z_t+1, carried in `dh`) + dgh_t+1 W_hh
(the product), then the gate gradients of those units, written into dgx_t, dgh_t (which the next product
reads) and the carried dh z.

Gate layout: xproj, gates, dgx and dgh are in the interleaved order of `interleaved_order(H)` (column
block p = r, z, n of units pU..pU+U-1), for the reason lstm_fused.py gives; the model permutes W_ih, the
biases and the input table into it once per pass and the weight gradients back.

Register budget of the forward block: MRG rows x 3 accumulator vectors + 3 panel vectors + 1 broadcast.
With AVX-512 (NR = 32, 32 zmm) 8 rows fit (28 registers); with AVX2 (NR = 16, 16 ymm) 4 (16).

Sizes: T steps, B streams, H hidden, G = 3H, U = NR/2 units per forward panel, NR units per backward panel.
"""
import numpy as np

from .gemm import MR, NR, n_row_blocks, row_block
from .jit import kernel
from .team import step as team_step
from .vir import emit_product, row_block_intrinsic

U = NR // 2
NRG = 3 * U  # forward panel width
_REGISTERS = 32 if NR >= 32 else 16  # zmm with AVX-512 (NR = 32), ymm with AVX2 (NR = 16)
MRG = min(MR, (_REGISTERS - 4) // 3)  # rows per forward block


def _forward_block(v, args, rows: int):
    """The body of blk(rows, h, lda, w, K, xp, gate, hn, bhn, hprev, hnew, G, H): `rows` streams, one
    panel of U units u0. h: h_t[b0, 0] (rows lda apart); w: the panel (K, 3U); xp, gate: xproj_t and
    gates_t at [b0, 3*u0] (interleaved r, z, n of the U units; rows G apart); hn: hn_t[b0, u0]; bhn:
    b_hn[u0]; hprev, hnew: h_t and h_t+1 at [b0, u0] (rows H apart)."""
    h, lda, w, K, xp, gate, hn, bhn, hprev, hnew, G, H = args
    b = v.b
    half = v.splat(0.5, U)
    bias = v.load(v.ptr(bhn), U)
    # the epilogue's scattered rows, fetched during the product (lstm_fused.py)
    v.prefetch_rows(rows, [(xp, G, NRG, False), (gate, G, NRG, True), (hprev, H, U, False), (hn, H, U, True)])
    # one accumulator per gate (U floats: one register), so no lane shuffles anywhere
    for r, (ar, az, an) in enumerate(emit_product(v, rows, NRG, h, lda, w, K, piece=U)):
        rg = b.mul(G, v.i64(r))
        rh = b.mul(H, v.i64(r))
        xr, xz, xn = (v.load(v.ptr(xp, b.add(rg, v.i64(q * U))), U) for q in range(3))
        rr = v.fma(v.tanh(v.mul(v.add(ar, xr), half)), half, half)
        z = v.fma(v.tanh(v.mul(v.add(az, xz), half)), half, half)
        hnv = v.add(an, bias)
        n = v.tanh(v.fma(rr, hnv, xn))
        for q, g in enumerate((rr, z, n)):
            v.store(g, v.ptr(gate, b.add(rg, v.i64(q * U))))
        v.store(hnv, v.ptr(hn, rh))
        hp = v.load(v.ptr(hprev, rh), U)
        v.store(v.fma(z, v.sub(hp, n), n), v.ptr(hnew, rh))  # (1-z) n + z h = n + z (h - n)


def _backward_block(v, args, rows: int):
    """The body of blk(rows, dgn, lda, w, K, dhs, dgx, dgh, gate, hn, hprev, dh, G, H): `rows` streams,
    one panel of NR units u0. dgn: dgh_t+1[b0, 0] (rows lda apart; K = 0 at the last step); dhs:
    dhs_t[b0, u0]; dgx, dgh, gate: at [b0, 3*u0] (two column blocks of 3U, each r, z, n of U units; rows
    G apart); hn, hprev: hn_t, h_t at [b0, u0]; dh: the carried dh_t+1 z_t+1 at [b0, u0], read and
    overwritten with dh_t z_t (rows H apart)."""
    dgn, lda, w, K, dhs, dgx, dgh, gate, hn, hprev, dh, G, H = args
    b = v.b
    one = v.splat(1.0, NR)
    v.prefetch_rows(rows, [(gate, G, 2 * NRG, False), (dgx, G, 2 * NRG, True), (dgh, G, 2 * NRG, True),
                           (dhs, H, NR, False), (hn, H, NR, False), (hprev, H, NR, False), (dh, H, NR, True)])
    for r, acc in enumerate(emit_product(v, rows, NR, dgn, lda, w, K)):
        rg = b.mul(G, v.i64(r))
        rh = b.mul(H, v.i64(r))
        offs = [[b.add(rg, v.i64(j * NRG + q * U)) for j in range(2)] for q in range(3)]
        rr, z, n = (v.concat([v.load(v.ptr(gate, x), U) for x in offs[q]]) for q in range(3))
        dhp = v.ptr(dh, rh)
        d = v.add(v.add(acc, v.load(v.ptr(dhs, rh), NR)), v.load(dhp, NR))
        dan = v.mul(v.mul(d, v.sub(one, z)), v.sub(one, v.mul(n, n)))
        dz = v.mul(v.mul(d, v.sub(v.load(v.ptr(hprev, rh), NR), n)), v.mul(z, v.sub(one, z)))
        dr = v.mul(v.mul(dan, v.load(v.ptr(hn, rh), NR)), v.mul(rr, v.sub(one, rr)))
        for q, (gx, gh) in enumerate(((dr, dr), (dz, dz), (dan, v.mul(dan, rr)))):
            for j in range(2):
                v.store(v.part(gx, j * U, U), v.ptr(dgx, offs[q][j]))
                v.store(v.part(gh, j * U, U), v.ptr(dgh, offs[q][j]))
        v.store(v.mul(d, z), dhp)


_F = row_block_intrinsic(12, _forward_block, MRG)
_B = row_block_intrinsic(13, _backward_block, MR)


def fused_ok(H: int) -> bool:
    """The fused passes need whole panels of NR hidden units (the backward's panel width)."""
    return H % NR == 0


def interleaved_order(H: int) -> np.ndarray:
    """perm (G,): column j of the interleaved layout is column perm[j] of PyTorch's r, z, n blocks."""
    p, q, u = np.meshgrid(np.arange(H // U), np.arange(3), np.arange(U), indexing="ij")
    return (q * H + p * U + u).reshape(-1)


def pack_forward(w_hh_perm: np.ndarray) -> np.ndarray:
    """(H/U, H, 3U) panels of W_hh[perm]^T for the forward."""
    from .gemm import pack
    return pack(w_hh_perm.T, NRG)


@kernel
def gru_forward_fused(hs, gates, hn, xproj, wp, b_hn, p0, p1, flags, me, nthreads):
    """hs (T+1, B, H): [0] holds h0. gates (T, B, G): out, activated r, z, n, interleaved. hn (T, B, H):
    out, W_hn h + b_hn. xproj (T, B, G): interleaved, with b_ih and b_hr, b_hz. wp = pack_forward(...)."""
    T, B, G = gates.shape
    H = G // 3
    ha, ga, na, xa, wa, ba = (hs.ctypes.data, gates.ctypes.data, hn.ctypes.data, xproj.ctypes.data,
                              wp.ctypes.data, b_hn.ctypes.data)
    for t in range(T):
        for p in range(p0, p1):
            w = wa + p * H * NRG * 4
            for j in range(n_row_blocks(B, MRG)):
                b, rows = row_block(B, j, MRG)
                xg = ((t * B + b) * G + p * NRG) * 4
                hc = ((t * B + b) * H + p * U) * 4
                hx = (((t + 1) * B + b) * H + p * U) * 4
                _F(rows, ha + (t * B + b) * H * 4, H, w, H, xa + xg, ga + xg, na + hc, ba + p * U * 4,
                   ha + hc, ha + hx, G, H)
        team_step(flags, me, nthreads)


@kernel
def gru_backward_fused(dgx, dgh, dh, dhs, hs, gates, hn, wp, p0, p1, flags, me, nthreads):
    """dgx, dgh (T, B, G): out, interleaved (see gru.gru_backward). dh (B, H): in, the gradient reaching
    the final h; out, only its direct part dh_0 z_0 (the caller's dgh[0] @ W_hh would complete it).
    dhs (T, B, H): gradient w.r.t. each output. hs, gates, hn: the forward cache. wp = gemm.pack(W_hh[perm])."""
    T, B, G = gates.shape
    H = G // 3
    xa, ya, da, sa, ha, ga, na, wa = (dgx.ctypes.data, dgh.ctypes.data, dh.ctypes.data, dhs.ctypes.data,
                                      hs.ctypes.data, gates.ctypes.data, hn.ctypes.data, wp.ctypes.data)
    for t in range(T - 1, -1, -1):
        K = G if t < T - 1 else 0
        for p in range(p0, p1):
            w = wa + p * G * NR * 4
            for j in range(n_row_blocks(B, MR)):
                b, rows = row_block(B, j, MR)
                gq = ((t * B + b) * G + p * 2 * NRG) * 4
                hp = ((t * B + b) * H + p * NR) * 4
                _B(rows, ya + ((t + 1) * B + b) * G * 4, G, w, K, sa + hp, xa + gq, ya + gq, ga + gq,
                   na + hp, ha + hp, da + (b * H + p * NR) * 4, G, H)
        team_step(flags, me, nthreads)

"""Vanilla tanh RNN forward/backward over a whole chunk: h' = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh).

Sizes: T = time steps, B = streams, H = hidden (G = H). `xproj` holds the input projection with both
biases; the outputs hs double as the cache (tanh' = 1 - h^2). Loop over T in Python with numpy's BLAS,
element-wise work jitted (see lstm.py for why); on the packed path one jitted T loop, with the tanh fused
into the micro-kernel where H is a multiple of NR (below), else a panel product then the step kernel.
"""
import numpy as np

from .activations import tanh
from .gemm import MR, NR, n_row_blocks, panel_product, row_block
from .jit import kernel
from .team import step as team_step
from .vir import emit_product, row_block_intrinsic


def rnn_forward(hs, hh, xproj, w_hh_t):
    """hs (T+1, B, H): [0] holds h0. hh (B, H): workspace. xproj (T, B, H). w_hh_t (H, H)."""
    for t in range(xproj.shape[0]):
        np.matmul(hs[t], w_hh_t, out=hh)
        _forward_step(hs[t + 1], hh, xproj[t])


def rnn_backward(dgates, dh, dhs, hs, w_hh, trace=None):
    """dgates (T, B, H): out, gradient w.r.t. the pre-activation. dh (B, H): in, gradient reaching the
    final h; out, gradient w.r.t. h0. dhs (T, B, H): gradient w.r.t. each output. w_hh (H, H)."""
    for t in range(dhs.shape[0] - 1, -1, -1):
        if trace is not None:  # (T, B, H) out: the whole gradient reaching h_t (diagnose)
            np.add(dh, dhs[t], out=trace[t])
        _backward_step(dgates[t], dh, dhs[t], hs[t + 1])
        np.matmul(dgates[t], w_hh, out=dh)


@kernel
def rnn_forward_packed(hs, hh, xproj, wp):
    """rnn_forward with the whole T loop jitted: wp = gemm.pack(W_hh^T); hh (B, >= P*NR) scratch."""
    for t in range(xproj.shape[0]):
        panel_product(hs[t], wp, hh)
        _forward_step(hs[t + 1], hh, xproj[t])


@kernel
def rnn_backward_packed(dgates, dh, dhs, hs, wp, dhh):
    """rnn_backward with the T loop jitted: wp = gemm.pack(W_hh); dhh (B, >= P*NR) scratch."""
    H = dh.shape[1]
    for t in range(dhs.shape[0] - 1, -1, -1):
        _backward_step(dgates[t], dh, dhs[t], hs[t + 1])
        panel_product(dgates[t], wp, dhh)
        dh[:, :] = dhh[:, :H]


@kernel
def _forward_step(h_new, hh, xp):
    B, H = h_new.shape
    for b in range(B):
        x_ = xp[b]
        hb = hh[b]
        hn = h_new[b]
        for j in range(H):
            hn[j] = tanh(x_[j] + hb[j])


@kernel
def _backward_step(dg, dh, dhs_t, h_cur):
    B, H = dh.shape
    one = dh.dtype.type(1.0)
    for b in range(B):
        d_ = dg[b]
        dhb = dh[b]
        dht = dhs_t[b]
        hc = h_cur[b]
        for j in range(H):
            dhb[j] += dht[j]
        for j in range(H):
            h = hc[j]
            d_[j] = dhb[j] * (one - h * h)


# -- fused T loops (float32 packed path, H a multiple of NR): the tanh in the micro-kernel's epilogue --

def _fused_forward_block(v, args, rows: int):
    """blk(rows, h, lda, w, K, xp, hnew, H): hnew[r, :NR] = tanh(xp[r, :NR] + h[r] W) for one panel."""
    h, lda, w, K, xp, hnew, H = args
    for r, acc in enumerate(emit_product(v, rows, NR, h, lda, w, K)):
        rh = v.b.mul(H, v.i64(r))
        v.store(v.tanh(v.add(acc, v.load(v.ptr(xp, rh), NR))), v.ptr(hnew, rh))


def _fused_backward_block(v, args, rows: int):
    """blk(rows, dgn, lda, w, K, dhs, hcur, dg, H): dg[r, :NR] = (dhs + dgn[r] W)(1 - hcur^2), one panel."""
    dgn, lda, w, K, dhs, hcur, dg, H = args
    one = v.splat(1.0, NR)
    for r, acc in enumerate(emit_product(v, rows, NR, dgn, lda, w, K)):
        rh = v.b.mul(H, v.i64(r))
        hc = v.load(v.ptr(hcur, rh), NR)
        v.store(v.mul(v.add(acc, v.load(v.ptr(dhs, rh), NR)), v.sub(one, v.mul(hc, hc))), v.ptr(dg, rh))


_F = row_block_intrinsic(7, _fused_forward_block, MR)
_B = row_block_intrinsic(8, _fused_backward_block, MR)


def fused_ok(H: int) -> bool:
    return H % NR == 0


@kernel
def rnn_forward_fused(hs, xproj, wp, p0, p1, flags, me, nthreads):
    """rnn_forward_packed without the scratch: wp = gemm.pack(W_hh^T) (H/NR, H, NR)."""
    T, B, H = xproj.shape
    ha, xa, wa = hs.ctypes.data, xproj.ctypes.data, wp.ctypes.data
    for t in range(T):
        for p in range(p0, p1):
            for j in range(n_row_blocks(B, MR)):
                b, rows = row_block(B, j, MR)
                o = ((t * B + b) * H + p * NR) * 4
                _F(rows, ha + (t * B + b) * H * 4, H, wa + p * H * NR * 4, H, xa + o, ha + B * H * 4 + o, H)
        team_step(flags, me, nthreads)


@kernel
def rnn_backward_fused(dgates, dhs, hs, wp, p0, p1, flags, me, nthreads):
    """dgates (T, B, H): out. dhs (T, B, H): gradient w.r.t. each output, dhs[T-1] with the carried dh
    added in (zero in truncated BPTT). wp = gemm.pack(W_hh) (H/NR, H, NR)."""
    T, B, H = dhs.shape
    da, sa, ha, wa = dgates.ctypes.data, dhs.ctypes.data, hs.ctypes.data, wp.ctypes.data
    for t in range(T - 1, -1, -1):
        K = H if t < T - 1 else 0
        for p in range(p0, p1):
            for j in range(n_row_blocks(B, MR)):
                b, rows = row_block(B, j, MR)
                o = ((t * B + b) * H + p * NR) * 4
                _B(rows, da + ((t + 1) * B + b) * H * 4, H, wa + p * H * NR * 4, K, sa + o,
                   ha + B * H * 4 + o, da + o, H)
        team_step(flags, me, nthreads)

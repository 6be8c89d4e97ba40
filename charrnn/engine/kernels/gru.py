"""GRU forward/backward over a whole chunk: T time steps of B streams, one layer.

Sizes: T = time steps, B = streams, H = hidden, G = 3H (gates r, z, n, PyTorch order):
  r = s(xr + W_hr h + b_hr), z = s(xz + W_hz h + b_hz), n = tanh(xn + r * (W_hn h + b_hn)),
  h' = (1 - z) * n + z * h.
`xproj` holds x W_ih^T + b_ih with b_hr and b_hz folded in; b_hn stays separate because r scales it.
The loop over T and its recurrent GEMM run in Python with numpy's BLAS, the gate arithmetic in the
jitted step kernels (see lstm.py for why).
"""
import numpy as np

from .activations import sigmoid, tanh
from .gemm import panel_product
from .jit import kernel


def gru_forward(hs, gates, hn, hh, xproj, w_hh_t, b_hn):
    """hs (T+1, B, H): [0] holds h0. gates (T, B, G): activated r, z, n. hn (T, B, H): W_hn h + b_hn
    (cached: dr needs it). hh (B, G): workspace. xproj (T, B, G). w_hh_t (H, G). b_hn (H)."""
    for t in range(gates.shape[0]):
        np.matmul(hs[t], w_hh_t, out=hh)
        _forward_step(hs[t + 1], gates[t], hn[t], hh, xproj[t], hs[t], b_hn)


def gru_backward(dgx, dgh, dh, dtmp, dhs, hs, gates, hn, w_hh, trace=None):
    """dgx (T, B, G): out, gradient w.r.t. xproj (-> W_ih, b_ih). dgh (T, B, G): out, gradient w.r.t.
    the recurrent product W_hh h + b_hh (-> W_hh, b_hh); it differs from dgx only in the n block.
    dh (B, H): in, gradient reaching the final h; out, gradient w.r.t. h0. dtmp (B, H): workspace.
    dhs (T, B, H): gradient w.r.t. each output. hs, gates, hn: forward cache. w_hh (G, H)."""
    for t in range(gates.shape[0] - 1, -1, -1):
        if trace is not None:  # (T, B, H) out: the whole gradient reaching h_t (diagnose)
            np.add(dh, dhs[t], out=trace[t])
        _backward_step(dgx[t], dgh[t], dh, dhs[t], hs[t], gates[t], hn[t])
        np.matmul(dgh[t], w_hh, out=dtmp)
        dh += dtmp


@kernel
def gru_forward_packed(hs, gates, hn, hh, xproj, wp, b_hn):
    """gru_forward with the whole T loop jitted: wp = gemm.pack(W_hh^T) (P, H, NR), packed once per pass;
    hh (B, >= P*NR) scratch. float32, C-contiguous (checked by the model)."""
    for t in range(gates.shape[0]):
        panel_product(hs[t], wp, hh)
        _forward_step(hs[t + 1], gates[t], hn[t], hh, xproj[t], hs[t], b_hn)


@kernel
def gru_backward_packed(dgx, dgh, dh, dhs, hs, gates, hn, wp, dhh):
    """gru_backward with the T loop jitted: wp = gemm.pack(W_hh) (P, G, NR); dhh (B, >= P*NR) scratch."""
    H = dh.shape[1]
    for t in range(gates.shape[0] - 1, -1, -1):
        _backward_step(dgx[t], dgh[t], dh, dhs[t], hs[t], gates[t], hn[t])
        panel_product(dgh[t], wp, dhh)
        dh += dhh[:, :H]


@kernel
def _forward_step(h_new, gt, hn_t, hh, xp, h_prev, b_hn):
    B, G = gt.shape
    H = G // 3
    one = gt.dtype.type(1.0)
    for b in range(B):
        x_ = xp[b]
        hb = hh[b]
        g_ = gt[b]
        hnb = hn_t[b]
        hp = h_prev[b]
        hw = h_new[b]
        for j in range(2 * H):  # short loops vectorize; see lstm.py
            g_[j] = sigmoid(x_[j] + hb[j])
        for j in range(H):
            hnb[j] = hb[2 * H + j] + b_hn[j]
        for j in range(H):
            g_[2 * H + j] = tanh(x_[2 * H + j] + g_[j] * hnb[j])
        for j in range(H):
            z = g_[H + j]
            hw[j] = (one - z) * g_[2 * H + j] + z * hp[j]


@kernel
def _backward_step(gx_t, gh_t, dh, dhs_t, h_prev, gt, hn_t):
    """dh: in, gradient reaching this step's output (minus dhs_t); out, its direct part dh * z (the
    caller adds the recurrent part dgh @ W_hh)."""
    B, G = gt.shape
    H = G // 3
    one = gt.dtype.type(1.0)
    for b in range(B):
        g_ = gt[b]
        gx = gx_t[b]
        gh = gh_t[b]
        hnb = hn_t[b]
        hp = h_prev[b]
        dht = dhs_t[b]
        dhb = dh[b]
        for j in range(H):
            dhb[j] += dht[j]
        for j in range(H):
            z = g_[H + j]
            n = g_[2 * H + j]
            dan = dhb[j] * (one - z) * (one - n * n)
            gx[2 * H + j] = dan
            gh[2 * H + j] = dan * g_[j]
            gx[H + j] = dhb[j] * (hp[j] - n) * z * (one - z)
        for j in range(H):
            r = g_[j]
            gx[j] = gx[2 * H + j] * hnb[j] * r * (one - r)
        for j in range(H):
            gh[j] = gx[j]
            gh[H + j] = gx[H + j]
            dhb[j] = dhb[j] * g_[H + j]

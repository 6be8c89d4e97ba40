"""GRU forward/backward over a whole chunk: T time steps of B streams, one layer.

Sizes: T = time steps, B = streams, H = hidden, G = 3H (gates r, z, n, PyTorch order):
  r = s(xr + W_hr h + b_hr), z = s(xz + W_hz h + b_hz), n = tanh(xn + r * (W_hn h + b_hn)),
  h' = (1 - z) * n + z * h.
`xproj` holds x W_ih^T + b_ih with b_hr and b_hz folded in; b_hn stays separate because r scales it.
"""
import numpy as np

from .activations import sigmoid, tanh
from .jit import kernel


@kernel
def gru_forward(hs, gates, hn, hh, xproj, w_hh_t, b_hn):
    """hs (T+1, B, H): [0] holds h0. gates (T, B, G): activated r, z, n. hn (T, B, H): W_hn h + b_hn
    (cached: dr needs it). hh (B, G): workspace. xproj (T, B, G). w_hh_t (H, G). b_hn (H)."""
    T, B, G = gates.shape
    H = G // 3
    one = hs.dtype.type(1.0)
    for t in range(T):
        np.dot(hs[t], w_hh_t, hh)
        for b in range(B):
            xp = xproj[t, b]
            hb = hh[b]
            gt = gates[t, b]
            hn_b = hn[t, b]
            h_prev = hs[t, b]
            h_new = hs[t + 1, b]
            for j in range(2 * H):  # short loops vectorize; see lstm.py
                gt[j] = sigmoid(xp[j] + hb[j])
            for j in range(H):
                hn_b[j] = hb[2 * H + j] + b_hn[j]
            for j in range(H):
                gt[2 * H + j] = tanh(xp[2 * H + j] + gt[j] * hn_b[j])
            for j in range(H):
                z = gt[H + j]
                h_new[j] = (one - z) * gt[2 * H + j] + z * h_prev[j]


@kernel
def gru_backward(dgx, dgh, dh, dtmp, dhs, hs, gates, hn, w_hh):
    """dgx (T, B, G): out, gradient w.r.t. xproj (-> W_ih, b_ih). dgh (T, B, G): out, gradient w.r.t.
    the recurrent product W_hh h + b_hh (-> W_hh, b_hh); it differs from dgx only in the n block.
    dh (B, H): in, gradient reaching the final h; out, gradient w.r.t. h0. dtmp (B, H): workspace.
    dhs (T, B, H): gradient w.r.t. each output. hs, gates, hn: forward cache. w_hh (G, H)."""
    T, B, G = gates.shape
    H = G // 3
    one = hs.dtype.type(1.0)
    for t in range(T - 1, -1, -1):
        for b in range(B):
            gt = gates[t, b]
            gx = dgx[t, b]
            gh = dgh[t, b]
            hn_b = hn[t, b]
            h_prev = hs[t, b]
            dhs_t = dhs[t, b]
            dh_b = dh[b]
            for j in range(H):
                dh_b[j] += dhs_t[j]
            for j in range(H):
                z = gt[H + j]
                n = gt[2 * H + j]
                dan = dh_b[j] * (one - z) * (one - n * n)
                gx[2 * H + j] = dan
                gh[2 * H + j] = dan * gt[j]
                gx[H + j] = dh_b[j] * (h_prev[j] - n) * z * (one - z)
            for j in range(H):
                r = gt[j]
                gx[j] = gx[2 * H + j] * hn_b[j] * r * (one - r)
            for j in range(H):
                gh[j] = gx[j]
                gh[H + j] = gx[H + j]
                dh_b[j] = dh_b[j] * gt[H + j]
        np.dot(dgh[t], w_hh, dtmp)
        dh += dtmp

"""Vanilla tanh RNN forward/backward over a whole chunk: h' = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh).

Sizes: T = time steps, B = streams, H = hidden (G = H). `xproj` holds the input projection with both
biases; the outputs hs double as the cache (tanh' = 1 - h^2).
"""
import numpy as np

from .activations import tanh
from .jit import kernel


@kernel
def rnn_forward(hs, hh, xproj, w_hh_t):
    """hs (T+1, B, H): [0] holds h0. hh (B, H): workspace. xproj (T, B, H). w_hh_t (H, H)."""
    T, B, H = xproj.shape
    for t in range(T):
        np.dot(hs[t], w_hh_t, hh)
        for b in range(B):
            xp = xproj[t, b]
            hb = hh[b]
            h_new = hs[t + 1, b]
            for j in range(H):
                h_new[j] = tanh(xp[j] + hb[j])


@kernel
def rnn_backward(dgates, dh, dhs, hs, w_hh):
    """dgates (T, B, H): out, gradient w.r.t. the pre-activation. dh (B, H): in, gradient reaching the
    final h; out, gradient w.r.t. h0. dhs (T, B, H): gradient w.r.t. each output. w_hh (H, H)."""
    T, B, H = dhs.shape
    one = hs.dtype.type(1.0)
    for t in range(T - 1, -1, -1):
        for b in range(B):
            h_cur = hs[t + 1, b]
            dg_ = dgates[t, b]
            dhs_t = dhs[t, b]
            dh_b = dh[b]
            for j in range(H):
                dh_b[j] += dhs_t[j]
            for j in range(H):
                h = h_cur[j]
                dg_[j] = dh_b[j] * (one - h * h)
        np.dot(dgates[t], w_hh, dh)

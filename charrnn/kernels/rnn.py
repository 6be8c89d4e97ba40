"""Vanilla tanh RNN forward/backward over a whole chunk: h' = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh).

Sizes: T = time steps, B = streams, H = hidden (G = H). `xproj` holds the input projection with both
biases; the outputs hs double as the cache (tanh' = 1 - h^2). Loop over T in Python with numpy's BLAS,
element-wise work jitted (see lstm.py for why).
"""
import numpy as np

from .activations import tanh
from .gemm import panel_product
from .jit import kernel


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

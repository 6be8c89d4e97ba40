"""LSTM forward/backward over a whole chunk: T time steps of B streams, one layer.

Sizes: T = time steps, B = streams (batch), H = hidden, G = 4H (gates i, f, g, o, PyTorch order).
Time-major so every per-step slice is one contiguous (B, ...) block for BLAS.

The input projection (x W_ih^T + b_ih + b_hh for all T steps) is computed outside, as one GEMM or a
row gather, and passed in as `xproj`; only the recurrent product h W_hh^T runs inside the step loop.
Weight gradients are also left to the caller: one large GEMM over all T*B rows of `dgates` beats T
small ones.
"""
import numpy as np

from .activations import sigmoid, tanh
from .jit import kernel


@kernel
def lstm_forward(hs, cs, gates, hh, xproj, w_hh_t):
    """hs, cs (T+1, B, H): [0] holds h0/c0 on entry, [t+1] the state after step t.
    gates (T, B, G): activated i, f, g, o (the cache backward needs). hh (B, G): workspace.
    xproj (T, B, G): input projection with both biases. w_hh_t (H, G): W_hh transposed."""
    T, B, G = gates.shape
    H = G // 4
    for t in range(T):
        np.dot(hs[t], w_hh_t, hh)
        for b in range(B):
            xp = xproj[t, b]
            hb = hh[b]
            gt = gates[t, b]
            c_prev = cs[t, b]
            c_new = cs[t + 1, b]
            h_new = hs[t + 1, b]
            for j in range(H):
                i = sigmoid(xp[j] + hb[j])
                f = sigmoid(xp[H + j] + hb[H + j])
                g = tanh(xp[2 * H + j] + hb[2 * H + j])
                o = sigmoid(xp[3 * H + j] + hb[3 * H + j])
                c = f * c_prev[j] + i * g
                gt[j] = i
                gt[H + j] = f
                gt[2 * H + j] = g
                gt[3 * H + j] = o
                c_new[j] = c
                h_new[j] = o * tanh(c)


@kernel
def lstm_backward(dgates, dh, dc, dhs, hs, cs, gates, w_hh):
    """dgates (T, B, G): out, gradient w.r.t. the gate pre-activations (= w.r.t. xproj and hh).
    dh, dc (B, H): in, gradient reaching the final state (zeros for truncated BPTT); out, gradient
    w.r.t. h0/c0. dhs (T, B, H): gradient w.r.t. each step's output h. hs, cs, gates: the forward
    cache. w_hh (G, H)."""
    T, B, G = gates.shape
    H = G // 4
    one = hs.dtype.type(1.0)
    for t in range(T - 1, -1, -1):
        for b in range(B):
            gt = gates[t, b]
            dg_ = dgates[t, b]
            c_prev = cs[t, b]
            c_cur = cs[t + 1, b]
            dhs_t = dhs[t, b]
            dh_b = dh[b]
            dc_b = dc[b]
            for j in range(H):
                i = gt[j]
                f = gt[H + j]
                g = gt[2 * H + j]
                o = gt[3 * H + j]
                tc = tanh(c_cur[j])
                dhj = dhs_t[j] + dh_b[j]
                dcj = dc_b[j] + dhj * o * (one - tc * tc)
                dg_[j] = dcj * g * i * (one - i)
                dg_[H + j] = dcj * c_prev[j] * f * (one - f)
                dg_[2 * H + j] = dcj * i * (one - g * g)
                dg_[3 * H + j] = dhj * tc * o * (one - o)
                dc_b[j] = dcj * f
        np.dot(dgates[t], w_hh, dh)

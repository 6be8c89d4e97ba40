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
            # Short loops over few arrays: LLVM vectorizes these (one fused loop over six arrays ran 4.6x
            # slower: it stayed scalar).
            for j in range(2 * H):
                gt[j] = sigmoid(xp[j] + hb[j])
            for j in range(2 * H, 3 * H):
                gt[j] = tanh(xp[j] + hb[j])
            for j in range(3 * H, G):
                gt[j] = sigmoid(xp[j] + hb[j])
            for j in range(H):
                c_new[j] = gt[H + j] * c_prev[j] + gt[j] * gt[2 * H + j]
            for j in range(H):
                h_new[j] = gt[3 * H + j] * tanh(c_new[j])


@kernel
def lstm_backward(dgates, dh, dc, dhs, hs, cs, gates, w_hh):
    """dgates (T, B, G): out, gradient w.r.t. the gate pre-activations (= w.r.t. xproj and hh).
    dh, dc (B, H): in, gradient reaching the final state (zeros for truncated BPTT); out, gradient
    w.r.t. h0/c0. dhs (T, B, H): gradient w.r.t. each step's output h. hs, cs, gates: the forward
    cache. w_hh (G, H)."""
    T, B, G = gates.shape
    H = G // 4
    one = hs.dtype.type(1.0)
    tc = np.empty(H, hs.dtype)
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
                dh_b[j] += dhs_t[j]
            for j in range(H):
                tc[j] = tanh(c_cur[j])
            for j in range(H):
                o = gt[3 * H + j]
                dg_[3 * H + j] = dh_b[j] * tc[j] * o * (one - o)
                dc_b[j] += dh_b[j] * o * (one - tc[j] * tc[j])
            for j in range(H):
                i = gt[j]
                f = gt[H + j]
                g = gt[2 * H + j]
                dcj = dc_b[j]
                dg_[j] = dcj * g * i * (one - i)
                dg_[H + j] = dcj * c_prev[j] * f * (one - f)
                dg_[2 * H + j] = dcj * i * (one - g * g)
                dc_b[j] = dcj * f
        np.dot(dgates[t], w_hh, dh)

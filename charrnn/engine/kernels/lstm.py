"""LSTM forward/backward over a whole chunk: T time steps of B streams, one layer.

Sizes: T = time steps, B = streams (batch), H = hidden, G = 4H (gates i, f, g, o, PyTorch order).
Time-major so every per-step slice is one contiguous (B, ...) block for BLAS.

The input projection (x W_ih^T + b_ih + b_hh for all T steps) is computed outside, as one GEMM or a
row gather, and passed in as `xproj`; weight gradients are also left to the caller (one large GEMM over
all T*B rows of `dgates` beats T small ones). What stays per step is the recurrent product, done by
numpy's BLAS from a Python loop over T (measured 11-29 % faster at H >= 256 than scipy's BLAS through
np.dot inside Numba, equal at H = 128; the loop's overhead is ~µs per step), and the gate arithmetic,
done by the jitted step kernels below.
"""
import numpy as np

from .activations import sigmoid, tanh
from .gemm import panel_product
from .jit import kernel


def lstm_forward(hs, cs, gates, hh, xproj, w_hh_t):
    """hs, cs (T+1, B, H): [0] holds h0/c0 on entry, [t+1] the state after step t.
    gates (T, B, G): activated i, f, g, o (the cache backward needs). hh (B, G): workspace.
    xproj (T, B, G): input projection with both biases. w_hh_t (H, G): W_hh transposed."""
    for t in range(gates.shape[0]):
        np.matmul(hs[t], w_hh_t, out=hh)
        _forward_step(hs[t + 1], cs[t + 1], gates[t], hh, xproj[t], cs[t])


def lstm_backward(dgates, dh, dc, dhs, hs, cs, gates, w_hh, trace=None):
    """dgates (T, B, G): out, gradient w.r.t. the gate pre-activations (= w.r.t. xproj and hh).
    dh, dc (B, H): in, gradient reaching the final state (zeros for truncated BPTT); out, gradient
    w.r.t. h0/c0. dhs (T, B, H): gradient w.r.t. each step's output h. hs, cs, gates: the forward
    cache. w_hh (G, H)."""
    tc = np.empty(dh.shape[1], dh.dtype)
    for t in range(gates.shape[0] - 1, -1, -1):
        if trace is not None:  # (T, B, H) out: the whole gradient reaching h_t (diagnose)
            np.add(dh, dhs[t], out=trace[t])
        _backward_step(dgates[t], dh, dc, tc, dhs[t], gates[t], cs[t], cs[t + 1])
        np.matmul(dgates[t], w_hh, out=dh)


@kernel
def lstm_forward_packed(hs, cs, gates, hh, xproj, wp):
    """lstm_forward with the whole T loop jitted: wp = gemm.pack(W_hh^T) (P, H, NR), packed once per pass;
    hh (B, >= P*NR) scratch. float32, C-contiguous (checked by the model)."""
    for t in range(gates.shape[0]):
        panel_product(hs[t], wp, hh)
        _forward_step(hs[t + 1], cs[t + 1], gates[t], hh, xproj[t], cs[t])


@kernel
def lstm_backward_packed(dgates, dh, dc, dhs, cs, gates, wp, dhh):
    """lstm_backward with the T loop jitted: wp = gemm.pack(W_hh) (P, G, NR); dhh (B, >= P*NR) scratch."""
    H = dh.shape[1]
    tc = np.empty(H, dh.dtype)
    for t in range(gates.shape[0] - 1, -1, -1):
        _backward_step(dgates[t], dh, dc, tc, dhs[t], gates[t], cs[t], cs[t + 1])
        panel_product(dgates[t], wp, dhh)
        dh[:, :] = dhh[:, :H]


@kernel
def _forward_step(h_new, c_new, gt, hh, xp, c_prev):
    """One step for all B streams: gates from xp + hh, then c and h. All (B, .) slices."""
    B, G = gt.shape
    H = G // 4
    for b in range(B):
        x_ = xp[b]
        hb = hh[b]
        g_ = gt[b]
        cp = c_prev[b]
        cn = c_new[b]
        hn = h_new[b]
        # Short loops over few arrays: LLVM vectorizes these (one fused loop over six arrays ran 4.6x
        # slower: it stayed scalar).
        for j in range(2 * H):
            g_[j] = sigmoid(x_[j] + hb[j])
        for j in range(2 * H, 3 * H):
            g_[j] = tanh(x_[j] + hb[j])
        for j in range(3 * H, G):
            g_[j] = sigmoid(x_[j] + hb[j])
        for j in range(H):
            cn[j] = g_[H + j] * cp[j] + g_[j] * g_[2 * H + j]
        for j in range(H):
            hn[j] = g_[3 * H + j] * tanh(cn[j])


@kernel
def _backward_step(dg, dh, dc, tc, dhs_t, gt, c_prev, c_cur):
    """One step back: dh += dhs_t, then gate gradients into dg and dc carried to the previous step.
    tc (H): workspace for tanh(c)."""
    B, G = gt.shape
    H = G // 4
    one = gt.dtype.type(1.0)
    for b in range(B):
        g_ = gt[b]
        d_ = dg[b]
        cp = c_prev[b]
        cc = c_cur[b]
        dht = dhs_t[b]
        dhb = dh[b]
        dcb = dc[b]
        for j in range(H):
            dhb[j] += dht[j]
        for j in range(H):
            tc[j] = tanh(cc[j])
        for j in range(H):
            o = g_[3 * H + j]
            d_[3 * H + j] = dhb[j] * tc[j] * o * (one - o)
            dcb[j] += dhb[j] * o * (one - tc[j] * tc[j])
        for j in range(H):
            i = g_[j]
            f = g_[H + j]
            g = g_[2 * H + j]
            dcj = dcb[j]
            d_[j] = dcj * g * i * (one - i)
            d_[H + j] = dcj * cp[j] * f * (one - f)
            d_[2 * H + j] = dcj * i * (one - g * g)
            dcb[j] = dcj * f

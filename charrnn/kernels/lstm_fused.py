"""LSTM over a chunk with the gate arithmetic fused into the recurrent micro-kernel (float32, packed path).

Forward, per time step, per panel of U hidden units and block of MR streams: the micro-kernel computes
h_t W_hh^T for the 4U gate columns of those units (the panel holds i, f, g, o of units u0..u0+U side by
side), then, while the accumulators are still in registers, adds the input projection, applies the
non-linearities to all four gates at once (sigmoid(x) = 0.5 + 0.5 tanh(x/2): one vector tanh with a
per-lane scale), and writes the gates, c_t+1 and h_t+1. The separate gate pass over a (B, 4H) buffer that
the per-step numpy loop needs is gone.

Backward, per step and panel of NR hidden units: dh_t = dhs_t + dgates_t+1 W_hh for those units (the
product), then the gate gradients of those units from it, again in registers, written straight into
dgates_t (which the next product reads) and dc.

Sizes: T steps, B streams, H hidden, G = 4H, U = NR/4 units per forward panel, NR units per backward panel.
Gate order i, f, g, o (PyTorch's), everywhere outside the packed panels.
"""
import numpy as np

from .gemm import MR, NR
from .jit import kernel
from .vir import emit_product, vector_intrinsic

U = NR // 4  # hidden units per forward panel (its 4U columns: i, f, g, o of those units)


def _forward_block(rows: int):
    """blk(h, lda, w, K, xp, gate, cprev, cnew, hnew, G, H): one block of `rows` streams, one panel.
    h: h_t[b0, 0] (rows lda apart); w: the panel; xp, gate: xproj_t[b0, u0], gates_t[b0, u0] (rows G
    apart, gate q at +q*H); cprev, cnew, hnew: c_t[b0, u0], c_t+1[b0, u0], h_t+1[b0, u0] (rows H apart)."""
    scale = [0.5] * (2 * U) + [1.0] * U + [0.5] * U   # tanh argument: x/2 for sigmoids, x for g
    shift = [0.5] * (2 * U) + [0.0] * U + [0.5] * U   # sigmoid = 0.5 + 0.5 tanh(x/2); g = tanh(x)

    def body(v, args):
        h, lda, w, K, xp, gate, cprev, cnew, hnew, G, H = args
        b = v.b
        accs = emit_product(v, rows, NR, h, lda, w, K)
        for r, acc in enumerate(accs):
            rg = b.mul(G, v.i64(r))
            rh = b.mul(H, v.i64(r))
            xq = [v.load(v.ptr(xp, b.add(rg, b.mul(H, v.i64(q)))), U) for q in range(4)]
            pre = v.add(acc, v.concat(xq))
            t = v.tanh(v.mul(pre, v.const(scale)))
            act = v.fma(t, v.const(scale), v.const(shift))  # the tanh's scale doubles as the output's
            for q in range(4):
                v.store(v.part(act, q * U, U), v.ptr(gate, b.add(rg, b.mul(H, v.i64(q)))))
            i, f, g, o = (v.part(act, q * U, U) for q in range(4))
            c = v.fma(f, v.load(v.ptr(cprev, rh), U), v.mul(i, g))
            v.store(c, v.ptr(cnew, rh))
            v.store(v.mul(o, v.tanh(c)), v.ptr(hnew, rh))

    return vector_intrinsic(11, body)


def _backward_block(rows: int):
    """blk(dgn, lda, w, K, dhs, dgate, gate, cprev, ccur, dc, G, H): one block of `rows` streams, one
    panel of NR units u0... dgn: dgates_t+1[b0, 0] (rows lda apart; K = 0 at the last step: no product);
    dhs: dhs_t[b0, u0] (rows H apart; holds the carried dh at the last step); dgate, gate: dgates_t,
    gates_t at [b0, u0] (rows G apart, gate q at +q*H); cprev, ccur: c_t, c_t+1 at [b0, u0]; dc: the
    carried dc at [b0, u0] (rows H apart), read and overwritten with the one for step t-1."""

    def body(v, args):
        dgn, lda, w, K, dhs, dgate, gate, cprev, ccur, dc, G, H = args
        b = v.b
        one = v.splat(1.0, NR)
        accs = emit_product(v, rows, NR, dgn, lda, w, K)
        for r, acc in enumerate(accs):
            rg = b.mul(G, v.i64(r))
            rh = b.mul(H, v.i64(r))
            gp = [v.ptr(gate, b.add(rg, b.mul(H, v.i64(q)))) for q in range(4)]
            dp = [v.ptr(dgate, b.add(rg, b.mul(H, v.i64(q)))) for q in range(4)]
            i, f, g, o = (v.load(p, NR) for p in gp)
            dh = v.add(acc, v.load(v.ptr(dhs, rh), NR))
            tc = v.tanh(v.load(v.ptr(ccur, rh), NR))
            dcp = v.ptr(dc, rh)
            dcv = v.fma(v.mul(dh, o), v.sub(one, v.mul(tc, tc)), v.load(dcp, NR))
            v.store(v.mul(v.mul(dh, tc), v.mul(o, v.sub(one, o))), dp[3])
            v.store(v.mul(v.mul(dcv, g), v.mul(i, v.sub(one, i))), dp[0])
            v.store(v.mul(v.mul(dcv, v.load(v.ptr(cprev, rh), NR)), v.mul(f, v.sub(one, f))), dp[1])
            v.store(v.mul(v.mul(dcv, i), v.sub(one, v.mul(g, g))), dp[2])
            v.store(v.mul(dcv, f), dcp)

    return vector_intrinsic(12, body)


_MIDS = sorted({MR, 4, 2, 1}, reverse=True)  # block heights a remainder is cut into
assert _MIDS[0] == MR and len(_MIDS) == 4
_F0, _F1, _F2, _F3 = (_forward_block(m) for m in _MIDS)
_B0, _B1, _B2, _B3 = (_backward_block(m) for m in _MIDS)
_M0, _M1, _M2, _M3 = _MIDS


def fused_backward_ok(H: int) -> bool:
    """The fused backward needs whole panels of NR hidden units."""
    return H % NR == 0


def fused_forward_ok(H: int) -> bool:
    """Whole panels of U units, and a panel (H x NR floats) small enough to leave L1 room for the lines
    of xproj, gates and c the epilogue touches. Measured against the unfused jitted loop (panel product
    into a (B, 4H) buffer, then the gate kernel), one core, B 25-32: fused 1.05-1.19x at H = 128, but
    0.74-0.93x at H = 256 and 512, where the 32-64 KB panel fills L1 and the epilogue's scattered 32-byte
    pieces of four gate blocks miss (rows-outer loop order was worse still at H = 512: 0.55-0.74x)."""
    return H % U == 0 and H * NR * 4 <= 16 * 1024


@kernel
def lstm_forward_fused(hs, cs, gates, xproj, wp):
    """hs, cs (T+1, B, H): [0] holds h0/c0 on entry. gates (T, B, G): out, activated i, f, g, o.
    xproj (T, B, G): input projection with both biases. wp = pack_forward(W_hh) (H/U, H, 4U)."""
    T, B, G = gates.shape
    H = G // 4
    P = wp.shape[0]
    ha, ca, ga, xa, wa = hs.ctypes.data, cs.ctypes.data, gates.ctypes.data, xproj.ctypes.data, wp.ctypes.data
    for t in range(T):
        for p in range(P):
            w = wa + p * H * NR * 4
            b = 0
            while b < B:
                n = B - b
                a = ha + (t * B + b) * H * 4
                xg = ((t * B + b) * G + p * U) * 4
                cp = ((t * B + b) * H + p * U) * 4
                cn = (((t + 1) * B + b) * H + p * U) * 4
                if n >= _M0:
                    _F0(a, H, w, H, xa + xg, ga + xg, ca + cp, ca + cn, ha + cn, G, H)
                    b += _M0
                elif n >= _M1:
                    _F1(a, H, w, H, xa + xg, ga + xg, ca + cp, ca + cn, ha + cn, G, H)
                    b += _M1
                elif n >= _M2:
                    _F2(a, H, w, H, xa + xg, ga + xg, ca + cp, ca + cn, ha + cn, G, H)
                    b += _M2
                else:
                    _F3(a, H, w, H, xa + xg, ga + xg, ca + cp, ca + cn, ha + cn, G, H)
                    b += _M3


@kernel
def lstm_backward_fused(dgates, dc, dhs, cs, gates, wp):
    """dgates (T, B, G): out, gradient w.r.t. the gate pre-activations. dc (B, H): in, gradient reaching
    the final c; out, w.r.t. c0. dhs (T, B, H): gradient w.r.t. each output; dhs[T-1] must already hold
    the gradient reaching the final h added in (it is overwritten as a workspace). cs, gates: the forward
    cache. wp = gemm.pack(W_hh) (H/NR, G, NR). The gradient w.r.t. h0 is dgates[0] @ W_hh (the caller's)."""
    T, B, G = gates.shape
    H = G // 4
    P = wp.shape[0]
    da, ca, ga, sa, wa, dca = (dgates.ctypes.data, cs.ctypes.data, gates.ctypes.data, dhs.ctypes.data,
                               wp.ctypes.data, dc.ctypes.data)
    for t in range(T - 1, -1, -1):
        K = G if t < T - 1 else 0
        for p in range(P):
            w = wa + p * G * NR * 4
            b = 0
            while b < B:
                n = B - b
                dn = da + ((t + 1) * B + b) * G * 4  # not read when K == 0
                gq = ((t * B + b) * G + p * NR) * 4
                hp = ((t * B + b) * H + p * NR) * 4
                hc = (((t + 1) * B + b) * H + p * NR) * 4
                hd = (b * H + p * NR) * 4
                if n >= _M0:
                    _B0(dn, G, w, K, sa + hp, da + gq, ga + gq, ca + hp, ca + hc, dca + hd, G, H)
                    b += _M0
                elif n >= _M1:
                    _B1(dn, G, w, K, sa + hp, da + gq, ga + gq, ca + hp, ca + hc, dca + hd, G, H)
                    b += _M1
                elif n >= _M2:
                    _B2(dn, G, w, K, sa + hp, da + gq, ga + gq, ca + hp, ca + hc, dca + hd, G, H)
                    b += _M2
                else:
                    _B3(dn, G, w, K, sa + hp, da + gq, ga + gq, ca + hp, ca + hc, dca + hd, G, H)
                    b += _M3


def pack_forward(w_hh: np.ndarray) -> np.ndarray:
    """(H/U, H, 4U) panels of W_hh^T whose columns are i, f, g, o of U consecutive hidden units."""
    G, H = w_hh.shape
    out = np.empty((H // U, H, NR), np.float32)
    _pack_gates(out, np.ascontiguousarray(w_hh, dtype=np.float32))
    return out


@kernel
def _pack_gates(out, w_hh):
    P, H, nr = out.shape
    u_ = nr // 4
    for p in range(P):
        for k in range(H):
            for q in range(4):
                for u in range(u_):
                    out[p, k, q * u_ + u] = w_hh[q * H + p * u_ + u, k]

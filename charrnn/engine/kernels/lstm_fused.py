"""LSTM over a chunk with the gate arithmetic fused into the recurrent micro-kernel (float32, packed path).

Forward, per time step, per panel of U hidden units and block of rows (streams): the micro-kernel
computes h_t W_hh^T for the 4U gate columns of those units, then, while the accumulators are still in
registers, adds the input projection, applies the non-linearities to all four gates at once (sigmoid(x) =
0.5 + 0.5 tanh(x/2): one vector tanh with a per-lane scale), and writes the gates, c_t+1 and h_t+1.

Backward, per step and panel of NR hidden units: dh_t = dhs_t + dgates_t+1 W_hh for those units (the
product), then the gate gradients of those units from it, again in registers, written straight into
dgates_t (which the next product reads) and dc.

Gate layout. Everything this file reads or writes with 4H columns (xproj, gates, dgates) is in the
*interleaved* order of `interleaved_order(H)`: column block p (4U wide) holds i, f, g, o of units
pU..pU+U-1, so the forward epilogue of one row reads and writes one contiguous 4U-float piece (128 bytes
with AVX-512) instead of four pieces a whole H apart. The model permutes W_ih's rows, the biases and the
input table once per pass to produce xproj in this order, and permutes the weight gradients back; the
parameters, checkpoints and everything outside the fused passes keep PyTorch's i, f, g, o blocks.

Sizes: T steps, B streams, H hidden, G = 4H, U = NR/4 units per forward panel, NR units per backward panel.
"""
import numpy as np

from .gemm import MR, NR, n_row_blocks, row_block
from .jit import kernel
from .team import step as team_step
from .vir import emit_product, row_block_intrinsic

U = NR // 4  # hidden units per forward panel (its 4U columns: i, f, g, o of those units)


def _forward_block(v, args, rows: int):
    """The body of blk(rows, h, lda, w, K, xp, gate, cprev, cnew, hnew, G, H): one block of `rows`
    streams, one panel of U units u0. h: h_t[b0, 0] (rows lda apart); w: the panel; xp, gate: xproj_t
    and gates_t at [b0, 4*u0] (interleaved: i, f, g, o of the U units, contiguous; rows G apart); cprev,
    cnew, hnew: c_t, c_t+1, h_t+1 at [b0, u0] (rows H apart)."""
    scale = [0.5] * (2 * U) + [1.0] * U + [0.5] * U   # tanh argument: x/2 for sigmoids, x for g
    shift = [0.5] * (2 * U) + [0.0] * U + [0.5] * U   # sigmoid = 0.5 + 0.5 tanh(x/2); g = tanh(x)
    h, lda, w, K, xp, gate, cprev, cnew, hnew, G, H = args
    b = v.b
    # The epilogue's rows of xproj, gates and c lie G or H floats apart and move one panel on: no
    # hardware prefetcher follows that, so ask for them now and let the product's K loop hide the wait.
    v.prefetch_rows(rows, [(xp, G, NR, False), (gate, G, NR, True), (cprev, H, U, False), (cnew, H, U, True)])
    accs = emit_product(v, rows, NR, h, lda, w, K)
    for r, acc in enumerate(accs):
        rg = b.mul(G, v.i64(r))
        rh = b.mul(H, v.i64(r))
        pre = v.add(acc, v.load(v.ptr(xp, rg), NR))
        t = v.tanh(v.mul(pre, v.const(scale)))
        act = v.fma(t, v.const(scale), v.const(shift))  # the tanh's scale doubles as the output's
        v.store(act, v.ptr(gate, rg))
        i, f, g, o = (v.part(act, q * U, U) for q in range(4))
        c = v.fma(f, v.load(v.ptr(cprev, rh), U), v.mul(i, g))
        v.store(c, v.ptr(cnew, rh))
        v.store(v.mul(o, v.tanh(c)), v.ptr(hnew, rh))


def _backward_block(v, args, rows: int):
    """The body of blk(rows, dgn, lda, w, K, dhs, dgate, gate, cprev, ccur, dc, G, H): one block of
    `rows` streams, one panel of NR units u0... dgn: dgates_t+1[b0, 0] (rows lda apart; K = 0 at the
    last step: no product); dhs: dhs_t[b0, u0] (rows H apart; holds the carried dh at the last step);
    dgate, gate: dgates_t, gates_t at [b0, 4*u0] (interleaved: 4 column blocks of 4U, each i, f, g, o
    of U units; rows G apart); cprev, ccur: c_t, c_t+1 at [b0, u0]; dc: the carried dc at [b0, u0]
    (rows H apart), read and overwritten with the one for step t-1."""
    dgn, lda, w, K, dhs, dgate, gate, cprev, ccur, dc, G, H = args
    b = v.b
    one = v.splat(1.0, NR)
    v.prefetch_rows(rows, [(gate, G, 4 * NR, False), (dgate, G, 4 * NR, True), (dhs, H, NR, False),  # as in
                           (cprev, H, NR, False), (ccur, H, NR, False), (dc, H, NR, True)])      # the forward
    accs = emit_product(v, rows, NR, dgn, lda, w, K)
    for r, acc in enumerate(accs):
        rg = b.mul(G, v.i64(r))
        rh = b.mul(H, v.i64(r))
        # Gate q of the panel's NR units: U floats from each of its 4 column blocks (one 4*NR-float piece).
        offs = [[b.add(rg, v.i64(j * NR + q * U)) for j in range(4)] for q in range(4)]
        i, f, g, o = (v.concat([v.load(v.ptr(gate, x), U) for x in offs[q]]) for q in range(4))
        dh = v.add(acc, v.load(v.ptr(dhs, rh), NR))
        tc = v.tanh(v.load(v.ptr(ccur, rh), NR))
        dcp = v.ptr(dc, rh)
        dcv = v.fma(v.mul(dh, o), v.sub(one, v.mul(tc, tc)), v.load(dcp, NR))
        d = [v.mul(v.mul(dcv, g), v.mul(i, v.sub(one, i))),
             v.mul(v.mul(dcv, v.load(v.ptr(cprev, rh), NR)), v.mul(f, v.sub(one, f))),
             v.mul(v.mul(dcv, i), v.sub(one, v.mul(g, g))),
             v.mul(v.mul(dh, tc), v.mul(o, v.sub(one, o)))]
        for q in range(4):
            for j in range(4):
                v.store(v.part(d[q], j * U, U), v.ptr(dgate, offs[q][j]))
        v.store(v.mul(dcv, f), dcp)


_F = row_block_intrinsic(11, _forward_block, MR)   # _F(rows, h, lda, w, K, xp, gate, cprev, cnew, hnew, G, H)
_B = row_block_intrinsic(12, _backward_block, MR)  # _B(rows, dgn, lda, w, K, dhs, dgate, gate, cprev, ccur, dc,
#                                                       G, H)


def interleaved_order(H: int) -> np.ndarray:
    """perm (G,): column j of the interleaved layout is column perm[j] of PyTorch's i, f, g, o blocks
    (x_il = x[:, perm], and x = x_il[:, argsort(perm)])."""
    p, q, u = np.meshgrid(np.arange(H // U), np.arange(4), np.arange(U), indexing="ij")
    return (q * H + p * U + u).reshape(-1)


def fused_ok(H: int) -> bool:
    """The fused passes need whole panels of NR hidden units (the backward's panel width)."""
    return H % NR == 0


@kernel
def lstm_forward_fused(hs, cs, gates, xproj, wp, p0, p1, flags, me, nthreads):
    """hs, cs (T+1, B, H): [0] holds h0/c0 on entry. gates (T, B, G): out, activated gates, interleaved.
    xproj (T, B, G): input projection with both biases, interleaved. wp = gemm.pack(W_hh[perm].T)
    (H/U, H, 4U) for perm = interleaved_order(H).

    Run by each of a team of nthreads threads (kernels/team.py's flags), thread me computing panels
    p0..p1-1 of every step and passing the team's barrier after each step (step t+1 reads all of h_t+1).
    Each panel's numbers are the same whichever thread computes it. One thread: 0, P, make_flags(1), 0, 1."""
    for t in range(gates.shape[0]):
        _forward_step(hs, cs, gates, xproj, wp, t, p0, p1)
        team_step(flags, me, nthreads)


@kernel
def lstm_backward_fused(dgates, dc, dhs, cs, gates, wp, p0, p1, flags, me, nthreads):
    """dgates (T, B, G): out, gradient w.r.t. the gate pre-activations. dc (B, H): in, gradient reaching
    the final c; out, w.r.t. c0. dhs (T, B, H): gradient w.r.t. each output; dhs[T-1] must already hold
    the gradient reaching the final h added in (it is overwritten as a workspace). cs, gates: the forward
    cache; gates and dgates interleaved. wp = gemm.pack(W_hh[perm]) (H/NR, G, NR). The gradient w.r.t.
    h0 is dgates[0] @ W_hh[perm] (the caller's). Team arguments as in the forward (panels of NR units);
    step t reads all of dgates[t+1], hence the barrier after each step."""
    for t in range(gates.shape[0] - 1, -1, -1):
        _backward_step(dgates, dc, dhs, cs, gates, wp, t, p0, p1)
        team_step(flags, me, nthreads)


@kernel
def _forward_step(hs, cs, gates, xproj, wp, t, p0, p1):
    """Step t of the forward: panels p0..p1-1 (U units each), every row block."""
    _, B, G = gates.shape
    H = G // 4
    ha, ca, ga, xa, wa = hs.ctypes.data, cs.ctypes.data, gates.ctypes.data, xproj.ctypes.data, wp.ctypes.data
    for p in range(p0, p1):
        w = wa + p * H * NR * 4
        for j in range(n_row_blocks(B, MR)):
            b, rows = row_block(B, j, MR)
            a = ha + (t * B + b) * H * 4
            xg = ((t * B + b) * G + p * NR) * 4
            cp = ((t * B + b) * H + p * U) * 4
            cn = (((t + 1) * B + b) * H + p * U) * 4
            _F(rows, a, H, w, H, xa + xg, ga + xg, ca + cp, ca + cn, ha + cn, G, H)


@kernel
def _backward_step(dgates, dc, dhs, cs, gates, wp, t, p0, p1):
    """Step t of the backward: panels p0..p1-1 (NR units each), every row block."""
    T, B, G = gates.shape
    H = G // 4
    da, ca, ga, sa, wa, dca = (dgates.ctypes.data, cs.ctypes.data, gates.ctypes.data, dhs.ctypes.data,
                               wp.ctypes.data, dc.ctypes.data)
    K = G if t < T - 1 else 0
    for p in range(p0, p1):
        w = wa + p * G * NR * 4
        for j in range(n_row_blocks(B, MR)):
            b, rows = row_block(B, j, MR)
            dn = da + ((t + 1) * B + b) * G * 4  # not read when K == 0
            gq = ((t * B + b) * G + p * 4 * NR) * 4
            hp = ((t * B + b) * H + p * NR) * 4
            hc = (((t + 1) * B + b) * H + p * NR) * 4
            hd = (b * H + p * NR) * 4
            _B(rows, dn, G, w, K, sa + hp, da + gq, ga + gq, ca + hp, ca + hc, dca + hd, G, H)

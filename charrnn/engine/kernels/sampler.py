"""The whole sampling loop inside Numba: recurrent step, decoder, softmax, filtering, draw.

Sizes: N = independent streams, n = characters per call, L = layers, H = hidden, G = gates*H,
V = vocabulary, E = embedding (0 = one-hot input).

Weights: the recurrent layers are read from a per-part packed copy (see "the recurrent step, split
into parts" below), the decoder from its own panels (decp, decb); charrnn.sampling.multistream.Sampler
copies both from the model at pack(). Every product runs gemm.panel_product (see "the products").
Layer 0's input projection is a (V, G) table (Model.input_table + bias_ih_l0, from the current weights),
so a step's layer-0 input is one contiguous row and training and sampling share one definition of it.

Speed: one stream's step is bound by streaming the weights, not by arithmetic. LSTM 2x256 reads
~3.1 MB of float32 weights per character, more than one core's L2 (0.5-2 MB), so on one thread the
products run at L3 bandwidth. Split over T threads each core reads only its parts' 3.1/T MB, which
stays in its own L2 once it fits (benchmarks/README.md, "Sampling on N threads"). With many streams
a panel read once serves every stream, and the step becomes arithmetic: the register-blocked
micro-kernel (MR streams x NR outputs of accumulators) is what makes 32 streams cost far less than 32
times one (README, the figures under `charrnn serve`'s load table).

Cells (PyTorch convention), cell_code 0 = LSTM (i, f, g, o), 1 = GRU (r, z, n), 2 = tanh RNN.

Random numbers: xoroshiro128++ with one (2,) uint64 state per stream (`rng` (N, 2)), advanced in
place; `uniform` maps the top 53 bits to a float64 in [0, 1). Seeding is done by the caller
(charrnn.sampling.seeds.seed_streams).
"""
import math

import numba
import numpy as np

from .activations import sigmoid, tanh
from .gemm import NR, panel_product
from .jit import kernel
from .sync import arrive, wait

LSTM, GRU, RNN = 0, 1, 2
CELL_CODES = {"lstm": LSTM, "gru": GRU, "rnn": RNN}

_U17 = np.uint64(17)
_U49 = np.uint64(49)
_U21 = np.uint64(21)
_U28 = np.uint64(28)
_U11 = np.uint64(11)
_U64 = np.uint64(64)
_TWO_M53 = 1.0 / 9007199254740992.0  # 2**-53


@kernel
def _rotl(x, k):
    return (x << k) | (x >> (_U64 - k))


@kernel
def next_u64(rng, s):
    """One xoroshiro128++ output of stream s, advancing rng[s] (uint64 (2,)) in place."""
    s0 = rng[s, 0]
    s1 = rng[s, 1]
    result = _rotl(s0 + s1, _U17) + s0
    s1 ^= s0
    rng[s, 0] = _rotl(s0, _U49) ^ s1 ^ (s1 << _U21)
    rng[s, 1] = _rotl(s1, _U28)
    return result


@kernel
def uniform(rng, s):
    """A float64 uniform in [0, 1) from stream s (53 random bits)."""
    return np.float64(next_u64(rng, s) >> _U11) * _TWO_M53


@kernel
def _argmax(lg):
    V = lg.shape[0]
    best = 0
    m = lg[0]
    for v in range(1, V):
        if lg[v] > m:
            m = lg[v]
            best = v
    return best


@kernel
def _top(lg, kk, order, keys):
    """order[:kk] = ids of the kk largest logits, descending, ties by lower id."""
    V = lg.shape[0]
    if kk <= 32 or V <= 128:
        # bounded insertion sort, scanning ids in increasing order (so equal logits keep id order)
        cnt = 0
        for v in range(V):
            x = lg[v]
            if cnt == kk:
                if not x > lg[order[kk - 1]]:
                    continue
                i = kk - 1
            else:
                i = cnt
                cnt += 1
            while i > 0 and lg[order[i - 1]] < x:
                order[i] = order[i - 1]
                i -= 1
            order[i] = v
    else:
        for v in range(V):
            keys[v] = -np.float64(lg[v])
        srt = np.argsort(keys, kind="mergesort")  # stable: ties by lower index
        for v in range(kk):
            order[v] = srt[v]


@kernel
def _nucleus(p, order, kk, top_p):
    """How many of order[:kk] make the smallest most-probable set of cumulative probability >= top_p
    (of what top-k left; at least one)."""
    if top_p >= 1.0:
        return kk
    total_k = 0.0
    for i in range(kk):
        total_k += p[order[i]]
    thresh = top_p * total_k
    cum = 0.0
    mm = 0
    while mm < kk:
        cum += p[order[mm]]
        mm += 1
        if cum >= thresh:
            break
    return mm


@kernel
def _draw(lg, p, order, keys, temperature, top_k, top_p, greedy, rng, s):
    """The next id from logits lg (V) float32: argmax when greedy, else a draw from
    softmax(lg / temperature) restricted to the top_k largest (0 = all; ties by lower index) and then
    to the smallest most-probable set of cumulative probability >= top_p of what is left (at least one
    character), renormalised; inverse CDF with float64 accumulation. p, keys (V) float64 and
    order (V) int64 are workspaces."""
    V = lg.shape[0]
    best = _argmax(lg)
    if greedy or top_k == 1:
        return best
    mf = np.float64(lg[best])
    inv_t = 1.0 / temperature
    for v in range(V):
        d = mf - np.float64(lg[v])
        # d > 0 guard: exact 1 for the maximum even if inv_t overflowed to inf
        p[v] = math.exp(-(d * inv_t)) if d > 0.0 else 1.0
    kk = V if (top_k <= 0 or top_k > V) else top_k
    if kk == V and top_p >= 1.0:
        total = 0.0
        for v in range(V):
            total += p[v]
        u = uniform(rng, s) * total
        cum = 0.0
        for v in range(V):
            cum += p[v]
            if u < cum:
                return v
        for v in range(V - 1, -1, -1):  # u rounded up to the total: last positive entry
            if p[v] > 0.0:
                return v
        return best
    _top(lg, kk, order, keys)
    mm = _nucleus(p, order, kk, top_p)
    total = 0.0
    for i in range(mm):
        total += p[order[i]]
    u = uniform(rng, s) * total
    cum = 0.0
    for i in range(mm):
        cum += p[order[i]]
        if u < cum:
            return order[i]
    return order[mm - 1] if p[order[mm - 1]] > 0.0 else best


# -- the products ------------------------------------------------------------------------------------
#
# Every product is x (ns, H) times a weight matrix's rows, run by gemm.panel_product, the project's
# register-blocked micro-kernel, over the rows packed as panels (npan, H, NR) (gemm.pack of the rows'
# transpose; columns past the rows are zero). Each result is one chain of fused multiply-adds over the
# H inputs in order, whichever streams, rows and panels share the call, so a stream's numbers never
# depend on the other streams, on N, on the part boundaries or on the panel width. With many streams a
# panel (16 KB at H = 256) is fetched once per step and reused from L1 by every block of MR streams:
# the step becomes arithmetic instead of weight streaming.


# The micro-kernel is float32 LLVM IR; float64 models (gradient checks) and NUMBA_DISABLE_JIT runs
# (where no IR runs) take _panels_ref, the same chains of multiply-adds written with numpy.
_MICRO = not numba.config.DISABLE_JIT


@kernel
def _panels_ref(x, wp, out):
    """panel_product's result without the micro-kernel: out[s, p*nr + j] = sum_k x[s, k] * wp[p, k, j],
    accumulated over k in order for each element (so still independent of the other rows)."""
    P, K, nr = wp.shape
    for p in range(P):
        acc = np.zeros((x.shape[0], nr), out.dtype)
        for k in range(K):
            acc += x[:, k:k + 1] * wp[p, k]
        out[:, p * nr:(p + 1) * nr] = acc


@kernel
def _panels(x, wp, out):
    if _MICRO and out.itemsize == 4:
        panel_product(x, wp, out)
    else:
        _panels_ref(x, wp, out)


@kernel
def _product(out, buf, off, x, boff, rows):
    """out[s, r] = sum_j x[s, j] * W[r, j] + b[r] for every row s of x and r < rows, where W's rows are
    panels at buf[off:] and b = buf[boff:boff + rows]. out (ns, >= npan * NR) C-contiguous."""
    H = x.shape[1]
    npan = (rows + NR - 1) // NR
    _panels(x, buf[off:off + npan * H * NR].reshape((npan, H, NR)), out)
    b = buf[boff:boff + rows]
    for s in range(x.shape[0]):
        o = out[s]
        for r in range(rows):
            o[r] += b[r]


# -- the recurrent step, split into parts ----------------------------------------------------------
#
# The hidden units are split into P parts (sampling/multistream.parts_for: by the shape alone; a thread
# owns a range of parts, or none, or all). Part p owns units lo[p]:hi[p] of every layer and keeps, packed
# contiguously in pk[p], the weight rows of its units for every gate (gate-major: rows g*Hp + u,
# Hp = hi[p] - lo[p], Gp = gates * Hp rows per matrix), as panels (see "the products"):
#   per layer k, at poff[p, k]: [W_ih panels, k > 0 only] [W_hh panels] [b_ih (Gp)] [b_hh (Gp)]
# and tab[p] (V, Gp) is its columns of layer 0's input table (Model.input_table + bias_ih_l0).
# A thread's parts are consecutive rows of pk, so its weights are one contiguous stretch that its own L2
# keeps when small enough.
#
# The state is double-buffered, hb (2, L, N, H): a step reads hb[q] and writes hb[1 - q], so every
# thread can still read the whole previous h while the others write their units of the new one.


@kernel
def _part_recurrent(p, k, gh, pk, poff, hsrc, Gp):
    """gh[p, s] = W_hh_k rows of part p @ hsrc[k, s] + b_hh for every stream s."""
    _product(gh[p], pk[p], poff[p, k, 1], hsrc[k], poff[p, k, 3], Gp)


@kernel
def _part_input(p, k, gx, pk, poff, tab, ids, hnew, Gp):
    """gx[p, s] = layer k's input pre-activation (with b_ih) for part p: a row of tab[p] for k == 0,
    else W_ih_k rows @ hnew[k - 1, s]."""
    if k == 0:
        for s in range(ids.shape[0]):
            row = tab[p, ids[s]]
            g_s = gx[p, s]
            for r in range(Gp):
                g_s[r] = row[r]
    else:
        _product(gx[p], pk[p], poff[p, k, 0], hnew[k - 1], poff[p, k, 2], Gp)


@kernel
def _part_update(p, k, cell_code, gx, gh, hprev, hnew, c, lo, hi, t, first):
    """The cell's gate arithmetic for part p's units of layer k: hnew[k, s, lo:hi] (and c in place).
    A stream s before its first step (t < first[s]) keeps a zero state instead."""
    Hp = hi - lo
    one = gx.dtype.type(1.0)
    for s in range(hnew.shape[1]):
        if t < first[s]:
            hnew[k, s, lo:hi] = 0
            if cell_code == 0:
                c[k, s, lo:hi] = 0
            continue
        xs = gx[p, s]
        hs = gh[p, s]
        hn = hnew[k, s, lo:hi]
        if cell_code == 0:
            ck = c[k, s, lo:hi]
            for j in range(Hp):
                i = sigmoid(xs[j] + hs[j])
                f = sigmoid(xs[Hp + j] + hs[Hp + j])
                g = tanh(xs[2 * Hp + j] + hs[2 * Hp + j])
                o = sigmoid(xs[3 * Hp + j] + hs[3 * Hp + j])
                cj = f * ck[j] + i * g
                ck[j] = cj
                hn[j] = o * tanh(cj)
        elif cell_code == 1:
            hp = hprev[k, s, lo:hi]
            for j in range(Hp):
                r_ = sigmoid(xs[j] + hs[j])
                z = sigmoid(xs[Hp + j] + hs[Hp + j])
                n = tanh(xs[2 * Hp + j] + r_ * hs[2 * Hp + j])
                hn[j] = (one - z) * n + z * hp[j]
        else:
            for j in range(Hp):
                hn[j] = tanh(xs[j] + hs[j])


@kernel
def _layer_recurrent(k, plo, phi, gh, pk, poff, hsrc, rows):
    for pp in range(plo, phi):
        _part_recurrent(pp, k, gh, pk, poff, hsrc, rows[pp])


@kernel
def _decode_draw(me, t, out, prev, rng, h_top, decp, decb, temperature, top_k, top_p, greedy, logits, p,
                 order, keys):
    """Every stream's logits from the top layer's h_top (ns, H), then its next id (into prev, and into
    out[:, t] by thread 0)."""
    V = decb.shape[0]
    _panels(h_top, decp, logits)
    for s in range(h_top.shape[0]):
        lg = logits[s, :V]
        for v in range(V):
            lg[v] += decb[v]
        nxt = _draw(lg, p, order, keys, temperature[s], top_k[s], top_p[s], greedy[s], rng, s)
        prev[s] = nxt
        if me == 0:
            out[s, t] = nxt


@kernel
def run_steps(me, nthreads, plo, phi, flags, out, forced, first, hb, q, c, prev, rng, pk, poff, tab, lo, hi,
              gates, decp, decb, cell_code, temperature, top_k, top_p, greedy, gx, gh, logits, p, order, keys):
    """Feed forced (nf, N) ids to the streams (stream s takes forced[t, s] at steps t >= first[s] and
    holds a zero state before: primes of different lengths, right-aligned, in one call), then generate
    n = out.shape[1] ids per stream.

    Runs as thread `me` of the `nthreads` threads sharing these streams; this thread owns parts
    plo:phi (possibly none). Every thread of the team is started with the same arguments except me,
    plo, phi, prev, rng and the draw workspaces; the spin barriers in `flags` (int64, zeroed,
    sync.STRIDE * nthreads) keep them in step. Whoever owns a part, its arithmetic is the same code on
    the same data in the same order, so the numbers never depend on nthreads or on the part ranges.

    hb (2, L, N, H): state, step 0 reads hb[q]; after nf + n steps the state is in hb[q ^ ((nf+n) & 1)].
    c (L, N, H) (LSTM; units are owned by parts). prev (N) int32: the id fed next, updated with each
    draw (generation steps feed prev, forced steps feed forced[t] and leave prev alone). out (N, n) int32, written by
    thread 0. rng (N, 2), logits (N, >= npan * NR), p, keys (V) float64, order (V) int64: this thread's
    own copies (every thread makes the same draws, so no barrier is needed before the next step's input).
    lo, hi (P) int64 part units; gates: gates per unit. pk, poff, tab: the packed parts (see above).
    decp (npan, H, NR), decb (V): the decoder's weight as panels and its bias. Per stream s:
    temperature, top_p (N) float64, top_k (N) int64, greedy (N) bool, as in _draw.

    Per step each thread does its parts of layer 0, arrives at a barrier, computes the next layer's
    recurrent product (which needs only the previous state) while the others finish, waits, and so on
    up the layers; then every thread decodes and draws the same characters."""
    nf = forced.shape[0]
    L = hb.shape[1]
    cnt = 0
    total = nf + out.shape[1]
    if total == 0:
        return
    rows = gates * (hi - lo)  # weight rows of each part per matrix
    _layer_recurrent(0, plo, phi, gh, pk, poff, hb[q], rows)
    for t in range(total):
        hp = hb[q]
        hn = hb[1 - q]
        ids = forced[t] if t < nf else prev
        for k in range(L):
            for pp in range(plo, phi):
                _part_input(pp, k, gx, pk, poff, tab, ids, hn, rows[pp])
                _part_update(pp, k, cell_code, gx, gh, hp, hn, c, lo[pp], hi[pp], t, first)
            if nthreads > 1:
                cnt += 1
                arrive(flags, me, cnt)
            # overlap the wait with a product that needs only state already complete
            if k + 1 < L:
                _layer_recurrent(k + 1, plo, phi, gh, pk, poff, hp, rows)
            elif L > 1 and t + 1 < total:  # hn[0] is complete: we passed the barrier after layer 0
                _layer_recurrent(0, plo, phi, gh, pk, poff, hn, rows)
            if nthreads > 1:
                wait(flags, me, nthreads, cnt)
        if L == 1 and t + 1 < total:
            _layer_recurrent(0, plo, phi, gh, pk, poff, hn, rows)
        if t >= nf:
            _decode_draw(me, t - nf, out, prev, rng, hn[L - 1], decp, decb, temperature, top_k, top_p, greedy,
                         logits, p, order, keys)
        q = 1 - q

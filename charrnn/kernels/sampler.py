"""The whole sampling loop inside Numba: recurrent step, decoder, softmax, filtering, draw.

Sizes: N = independent streams, n = characters per call, L = layers, H = hidden, G = gates*H,
V = vocabulary, E = embedding (0 = one-hot input).

Weights are read straight from the model's flat float32 buffer: `offsets` (int64) holds the start of
every entry of `Shape.layout()` in layout order, so one compiled kernel serves any depth and width:
  [encoder.weight (V, E) if E > 0], then per layer k: weight_ih (G, in), weight_hh (G, H),
  bias_ih (G), bias_hh (G); then decoder.weight (V, H), decoder.bias (V).
Every matrix-vector product is a loop over contiguous weight rows with float32 accumulation (it
vectorizes under the project's fastmath policy); the row loop is outermost so each weight row is
read once per step for all N streams. Layer 0's input projection is a (V, G) table passed in by the
caller (Model.input_table + bias_ih_l0, from the current weights), so a step's layer-0 input is one
contiguous row and training and sampling share one definition of it.

Speed: the step is bound by streaming the weights, not by arithmetic. LSTM 2x256 reads ~3.1 MB of
float32 weights per character, more than this machine's 2 MB L2, so three 1 MB matrix-vector products
run at L3 bandwidth (~90 us per character, ~10k chars/s single-threaded); BLAS sgemv and a
transposed axpy layout measured no faster.

Cells (PyTorch convention), cell_code 0 = LSTM (i, f, g, o), 1 = GRU (r, z, n), 2 = tanh RNN.

Random numbers: xoroshiro128++ with one (2,) uint64 state per stream (`rng` (N, 2)), advanced in
place; `uniform` maps the top 53 bits to a float64 in [0, 1). Seeding is done by the caller
(charrnn.generate.seed_streams).
"""
import math

import numpy as np

from .activations import sigmoid, tanh
from .jit import kernel

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
def _matvec(out, flat, off, rows, cols, x, ns, boff):
    """out[s, r] = sum_j W[r, j] * x[s, j] + b[r] for s < ns, W = flat[off:off + rows*cols] viewed as
    (rows, cols), b = flat[boff:boff + rows]. Four rows at a time share each load of x; slices of
    flat (not flat[off + ...] indexing) let LLVM vectorize the reductions."""
    zero = flat.dtype.type(0.0)
    r = 0
    while r + 4 <= rows:
        r0 = flat[off + r * cols: off + (r + 1) * cols]
        r1 = flat[off + (r + 1) * cols: off + (r + 2) * cols]
        r2 = flat[off + (r + 2) * cols: off + (r + 3) * cols]
        r3 = flat[off + (r + 3) * cols: off + (r + 4) * cols]
        for s in range(ns):
            xs = x[s]
            a0 = zero
            a1 = zero
            a2 = zero
            a3 = zero
            for j in range(cols):
                xj = xs[j]
                a0 += r0[j] * xj
                a1 += r1[j] * xj
                a2 += r2[j] * xj
                a3 += r3[j] * xj
            o = out[s]
            o[r] = a0 + flat[boff + r]
            o[r + 1] = a1 + flat[boff + r + 1]
            o[r + 2] = a2 + flat[boff + r + 2]
            o[r + 3] = a3 + flat[boff + r + 3]
        r += 4
    while r < rows:
        row = flat[off + r * cols: off + (r + 1) * cols]
        for s in range(ns):
            xs = x[s]
            acc = zero
            for j in range(cols):
                acc += row[j] * xs[j]
            out[s, r] = acc + flat[boff + r]
        r += 1


@kernel
def _layers_step(h, c, prev, flat, offsets, cell_code, E, table, gx, gh, ns):
    """Feed prev[s] (one id per stream) through all layers for streams s < ns; h, c updated in place.
    table (V, G): see sample_chunk. gx, gh (N, G): workspaces for the input and recurrent
    pre-activations (with bias_ih and bias_hh)."""
    L, N, H = h.shape
    G = gx.shape[1]
    base = 1 if E > 0 else 0
    one = flat.dtype.type(1.0)
    for k in range(L):
        o_ih = offsets[base + 4 * k]
        o_hh = offsets[base + 4 * k + 1]
        o_bih = offsets[base + 4 * k + 2]
        o_bhh = offsets[base + 4 * k + 3]
        if k == 0:
            for s in range(ns):
                row = table[prev[s]]
                g_s = gx[s]
                for r in range(G):
                    g_s[r] = row[r]
        else:
            _matvec(gx, flat, o_ih, G, H, h[k - 1], ns, o_bih)
        _matvec(gh, flat, o_hh, G, H, h[k], ns, o_bhh)
        for s in range(ns):
            xs = gx[s]
            hs = gh[s]
            hk = h[k, s]
            if cell_code == 0:
                ck = c[k, s]
                for j in range(H):
                    i = sigmoid(xs[j] + hs[j])
                    f = sigmoid(xs[H + j] + hs[H + j])
                    g = tanh(xs[2 * H + j] + hs[2 * H + j])
                    o = sigmoid(xs[3 * H + j] + hs[3 * H + j])
                    cj = f * ck[j] + i * g
                    ck[j] = cj
                    hk[j] = o * tanh(cj)
            elif cell_code == 1:
                for j in range(H):
                    r_ = sigmoid(xs[j] + hs[j])
                    z = sigmoid(xs[H + j] + hs[H + j])
                    n = tanh(xs[2 * H + j] + r_ * hs[2 * H + j])
                    hk[j] = (one - z) * n + z * hk[j]
            else:
                for j in range(H):
                    hk[j] = tanh(xs[j] + hs[j])


@kernel
def _draw(lg, p, order, keys, temperature, top_k, top_p, greedy, rng, s):
    """The next id from logits lg (V) float32: argmax when greedy, else a draw from
    softmax(lg / temperature) restricted to the top_k largest (0 = all; ties by lower index) and then
    to the smallest most-probable set of cumulative probability >= top_p of what is left (at least one
    character), renormalised; inverse CDF with float64 accumulation. p, keys (V) float64 and
    order (V) int64 are workspaces."""
    V = lg.shape[0]
    best = 0
    m = lg[0]
    for v in range(1, V):
        if lg[v] > m:
            m = lg[v]
            best = v
    if greedy or top_k == 1:
        return best
    mf = np.float64(m)
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
    # order[:kk] = the kk largest logits, descending, ties by lower index
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
    mm = kk
    if top_p < 1.0:
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


@kernel
def sample_chunk(out, h, c, prev, flat, offsets, cell_code, E, temperature, top_k, top_p, greedy, rng,
                 table, gx, gh, logits, p, order, keys):
    """Generate n = out.shape[1] characters for each of N = out.shape[0] streams.

    Per step and stream: feed prev[s] through the layers (h, c (L, N, H) updated in place; c unused
    unless LSTM), decoder logits, then draw (see _draw) into out[s, t] and prev[s].
    out (N, n) int32. prev (N) int32. flat: parameters. offsets (int64): layout starts.
    cell_code: 0 lstm, 1 gru, 2 rnn. E: embedding size (0 = one-hot). temperature > 0 unless greedy.
    top_k (0 = off), top_p (1 = off), greedy (bool). rng (N, 2) uint64 xoroshiro128++ states.
    table (V, G): layer 0's input projection of each character plus bias_ih_l0 (Model.input_table).
    Workspaces: gx, gh (N, G), logits (N, V), all of flat's dtype; p, keys (V) float64; order (V) int64."""
    N, n = out.shape
    L, _, H = h.shape
    V = logits.shape[1]
    base = 1 if E > 0 else 0
    o_dw = offsets[base + 4 * L]
    o_db = offsets[base + 4 * L + 1]
    for t in range(n):
        _layers_step(h, c, prev, flat, offsets, cell_code, E, table, gx, gh, N)
        _matvec(logits, flat, o_dw, V, H, h[L - 1], N, o_db)
        for s in range(N):
            lg = logits[s]
            nxt = _draw(lg, p, order, keys, temperature, top_k, top_p, greedy, rng, s)
            out[s, t] = nxt
            prev[s] = nxt


@kernel
def feed_prime(h, c, ids, flat, offsets, cell_code, E, table, gx, gh, tmp):
    """Teacher forcing: feed ids (T) int32 through stream 0's state, then copy stream 0's h (and c)
    to every stream (all streams share the prime). table and workspaces as in sample_chunk; tmp (1) int32."""
    L, N, H = h.shape
    for t in range(ids.shape[0]):
        tmp[0] = ids[t]
        _layers_step(h, c, tmp, flat, offsets, cell_code, E, table, gx, gh, 1)
    for k in range(L):
        for s in range(1, N):
            for j in range(H):
                h[k, s, j] = h[k, 0, j]
                if cell_code == 0:
                    c[k, s, j] = c[k, 0, j]

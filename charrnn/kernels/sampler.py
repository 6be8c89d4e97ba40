"""The whole sampling loop inside Numba: recurrent step, decoder, softmax, filtering, draw.

Sizes: N = independent streams, n = characters per call, L = layers, H = hidden, G = gates*H,
V = vocabulary, E = embedding (0 = one-hot input).

Weights are read straight from the model's flat float32 buffer: `offsets` (int64) holds the start of
every entry of `Shape.layout()` in layout order, so one compiled kernel serves any depth and width:
  [encoder.weight (V, E) if E > 0], then per layer k: weight_ih (G, in), weight_hh (G, H),
  bias_ih (G), bias_hh (G); then decoder.weight (V, H), decoder.bias (V).
Every matrix-vector product is a loop over contiguous weight rows with float32 accumulation (it
vectorizes under the project's fastmath policy); the row loop is outermost so each weight row is
read once per step for all N streams.

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
def _matvec(out, flat, off, rows, cols, x, ns):
    """out[s, r] = sum_j W[r, j] * x[s, j] for s < ns, W = flat[off:off + rows*cols] as (rows, cols)."""
    for r in range(rows):
        base = off + r * cols
        for s in range(ns):
            xs = x[s]
            acc = flat.dtype.type(0.0)
            for j in range(cols):
                acc += flat[base + j] * xs[j]
            out[s, r] = acc


@kernel
def _layers_step(h, c, prev, flat, offsets, cell_code, E, gx, gh, emb, ns):
    """Feed prev[s] (one id per stream) through all layers for streams s < ns; h, c updated in place.
    gx, gh (N, G): workspaces for the input and recurrent pre-activations; emb (N, max(E, 1))."""
    L, N, H = h.shape
    G = gx.shape[1]
    base = 1 if E > 0 else 0
    one = flat.dtype.type(1.0)
    for k in range(L):
        o_ih = offsets[base + 4 * k]
        o_hh = offsets[base + 4 * k + 1]
        o_bih = offsets[base + 4 * k + 2]
        o_bhh = offsets[base + 4 * k + 3]
        # input projection (without bias)
        if k == 0:
            if E > 0:
                o_enc = offsets[0]
                for s in range(ns):
                    row = o_enc + prev[s] * E
                    e = emb[s]
                    for j in range(E):
                        e[j] = flat[row + j]
                _matvec(gx, flat, o_ih, G, E, emb, ns)
            else:
                V = (o_hh - o_ih) // G  # weight_ih_l0 is (G, V): gather column prev[s]
                for s in range(ns):
                    x = prev[s]
                    g_s = gx[s]
                    for r in range(G):
                        g_s[r] = flat[o_ih + r * V + x]
        else:
            _matvec(gx, flat, o_ih, G, H, h[k - 1], ns)
        _matvec(gh, flat, o_hh, G, H, h[k], ns)
        for s in range(ns):
            xs = gx[s]
            hs = gh[s]
            for r in range(G):
                xs[r] += flat[o_bih + r]
                hs[r] += flat[o_bhh + r]
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
    # sort by logit descending, ties by lower index (stable sort of the negated logits)
    for v in range(V):
        keys[v] = -np.float64(lg[v])
    srt = np.argsort(keys, kind="mergesort")
    for v in range(V):
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
                 gx, gh, emb, logits, p, order, keys):
    """Generate n = out.shape[1] characters for each of N = out.shape[0] streams.

    Per step and stream: feed prev[s] through the layers (h, c (L, N, H) updated in place; c unused
    unless LSTM), decoder logits, then draw (see _draw) into out[s, t] and prev[s].
    out (N, n) int32. prev (N) int32. flat: parameters. offsets (int64): layout starts.
    cell_code: 0 lstm, 1 gru, 2 rnn. E: embedding size (0 = one-hot). temperature > 0 unless greedy.
    top_k (0 = off), top_p (1 = off), greedy (bool). rng (N, 2) uint64 xoroshiro128++ states.
    Workspaces: gx, gh (N, G), emb (N, max(E, 1)) all of flat's dtype; logits (N, V) of flat's dtype;
    p, keys (V) float64; order (V) int64."""
    N, n = out.shape
    L, _, H = h.shape
    V = logits.shape[1]
    base = 1 if E > 0 else 0
    o_dw = offsets[base + 4 * L]
    o_db = offsets[base + 4 * L + 1]
    for t in range(n):
        _layers_step(h, c, prev, flat, offsets, cell_code, E, gx, gh, emb, N)
        _matvec(logits, flat, o_dw, V, H, h[L - 1], N)
        for s in range(N):
            lg = logits[s]
            for v in range(V):
                lg[v] += flat[o_db + v]
            nxt = _draw(lg, p, order, keys, temperature, top_k, top_p, greedy, rng, s)
            out[s, t] = nxt
            prev[s] = nxt


@kernel
def feed_prime(h, c, ids, flat, offsets, cell_code, E, gx, gh, emb, tmp):
    """Teacher forcing: feed ids (T) int32 through stream 0's state, then copy stream 0's h (and c)
    to every stream (all streams share the prime). tmp (1) int32 workspace."""
    L, N, H = h.shape
    for t in range(ids.shape[0]):
        tmp[0] = ids[t]
        _layers_step(h, c, tmp, flat, offsets, cell_code, E, gx, gh, emb, 1)
    for k in range(L):
        for s in range(1, N):
            for j in range(H):
                h[k, s, j] = h[k, 0, j]
                if cell_code == 0:
                    c[k, s, j] = c[k, 0, j]

"""Row kernels around the GEMMs: the one-hot/embedding gather at the input and the fused
softmax cross-entropy at the output.

Sizes: N = rows (T*B), V = vocabulary, G = gate width of layer 0.
"""
import math

from .jit import kernel


@kernel
def gather_rows(out, table, ids, bias):
    """out (T, B, G) = table[ids] + bias. table (V, G): W_ih^T for one-hot input, or
    encoder.weight @ W_ih^T with an embedding. ids (T, B) int. bias (G): b_ih + folded b_hh."""
    T, B, G = out.shape
    for t in range(T):
        for b in range(B):
            row = table[ids[t, b]]
            o = out[t, b]
            for j in range(G):
                o[j] = row[j] + bias[j]


@kernel
def scatter_add_rows(dtable, grads, ids):
    """dtable (V, G) += sum of grads (T, B, G) rows into the row of their id (the gather's backward).
    A plain loop: np.add.at is ~10x slower here."""
    T, B, G = grads.shape
    for t in range(T):
        for b in range(B):
            row = dtable[ids[t, b]]
            g = grads[t, b]
            for j in range(G):
                row[j] += g[j]


@kernel
def softmax_xent_backward(logits, targets, scale):
    """Mean softmax cross-entropy over N rows, fused with its gradient.

    logits (N, V): in, the decoder output; out, overwritten with its gradient (softmax - onehot) * scale.
    targets (N) int. scale: 1/N for a mean. Returns the SUM of the per-row losses in float64 (the caller divides), so chunked evaluation adds exactly."""
    N, V = logits.shape
    total = 0.0
    for n in range(N):
        row = logits[n]
        m = row[0]
        for v in range(1, V):
            if row[v] > m:
                m = row[v]
        y = targets[n]
        shifted_y = row[y] - m
        s = 0.0
        for v in range(V):
            e = math.exp(row[v] - m)
            row[v] = e
            s += e
        total += math.log(s) - shifted_y
        inv = scale / s
        for v in range(V):
            row[v] = row[v] * inv
        row[y] -= scale
    return total


@kernel
def softmax_xent_loss(logits, targets):
    """Sum over N rows of the softmax cross-entropy (float64), logits (N, V) left untouched."""
    N, V = logits.shape
    total = 0.0
    for n in range(N):
        row = logits[n]
        m = row[0]
        for v in range(1, V):
            if row[v] > m:
                m = row[v]
        s = 0.0
        for v in range(V):
            s += math.exp(row[v] - m)
        total += math.log(s) + m - row[targets[n]]
    return total


@kernel
def column_sums(out, a):
    """out (M) = the sum of a's (N, M) rows, added in row order (a bias gradient; a may be a column
    slice: numpy's strided sum over a slice ran 4-14x slower)."""
    N, M = a.shape
    for j in range(M):
        out[j] = 0
    for i in range(N):
        row = a[i]
        for j in range(M):
            out[j] += row[j]

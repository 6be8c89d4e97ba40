"""The sampler's own copy of a model's weights, laid out for kernels/sampler.py: the hidden units cut
into parts (by the model's shape alone), each part's rows of every matrix packed contiguously as the
products' panels, its columns of layer 0's input table, and the decoder's panels.

Why a copy: a sampler draws from the weights of its last pack(), so a trainer's samples use its current
weights and a server's streams are not disturbed by a model changing under them (`--watch` builds a new
sampler on the new model instead).
"""
from __future__ import annotations

import numpy as np

from ..engine.kernels.gemm import NR, padded
from ..engine.model import Model
from ..engine.params import GATES, Shape

__all__ = ["UNITS_PER_PART", "Weights", "parts_for"]

# Hidden units per part (about): parts_for cuts H into max(2, ceil(H / UNITS_PER_PART)) parts, by the
# model's shape alone, so the text never depends on the thread count. Two parts up to H = 16 (as before
# the N-thread sampler); 32 parts at H = 256, 64 at H = 512: at most that many threads share one stream.
UNITS_PER_PART = 8


def parts_for(hidden: int) -> np.ndarray:
    """(P + 1) int64 cuts of the hidden units into P parts whose sizes differ by at most one."""
    P = max(2, -(-hidden // UNITS_PER_PART))
    return np.array([(hidden * i + P - 1) // P for i in range(P + 1)], np.int64)


def _panels(w: np.ndarray) -> np.ndarray:
    """w (K, N) as the products' panels (ceil(N / NR), K, NR), K-major, zero columns past N, in w's
    dtype (gemm.pack's layout; it converts to float32, and float64 models sample in float64)."""
    K, N = w.shape
    out = np.zeros((K, padded(N)), w.dtype)
    out[:, :N] = w
    return np.ascontiguousarray(out.reshape(K, -1, NR).transpose(1, 0, 2))


def _page_aligned_rows(rows: int, cols: int, dtype) -> np.ndarray:
    """A zeroed C-contiguous (rows, cols') array, cols' >= cols, whose rows each start on a 2 MB
    boundary when a row is big (>= 256 KB). Such an allocation is >= 4 MB, which numpy marks for
    transparent huge pages on Linux: each part's weights then sit in physically contiguous memory
    and spread evenly over the L2 cache's sets (measured +5-10 % sampling speed at 2x256 with two
    parts, within the run-to-run noise)."""
    item = np.dtype(dtype).itemsize
    if cols * item < (256 << 10):
        return np.zeros((rows, cols), dtype)
    huge = (2 << 20) // item
    stride = -(-cols // huge) * huge
    buf = np.zeros(rows * stride + huge, dtype)
    start = (-buf.ctypes.data % (2 << 20)) // item
    return buf[start:start + rows * stride].reshape(rows, stride)  # a view: keeps buf alive


class Weights:
    """The packed layout (see kernels/sampler.py, "the recurrent step, split into parts"): part p owns
    hidden units lo[p]:hi[p]; its rows of every matrix start at poff[p, k, j] in pk[p] (j: W_ih, W_hh,
    b_ih, b_hh of layer k); tab[p] (V, Gp) its columns of the input table; decp, decb the decoder."""

    def __init__(self, shape: Shape, dtype):
        H, L, V = shape.hidden_size, shape.num_layers, shape.vocab_size
        self.shape, self.dtype = shape, np.dtype(dtype)
        self.gates = g = GATES[shape.cell]
        cuts = parts_for(H)
        self.num_parts = P = cuts.size - 1
        self.lo, self.hi = cuts[:-1].copy(), cuts[1:].copy()
        self._rows = [(np.arange(g)[:, None] * H + np.arange(a, b)[None, :]).reshape(-1)
                      for a, b in zip(cuts[:-1], cuts[1:])]
        gmax = max(r.size for r in self._rows)
        self.gpad = padded(gmax)  # the products write whole panels
        self.poff = np.full((P, L, 4), -1, np.int64)
        size = 0
        for p, rows in enumerate(self._rows):
            off = 0
            mat = padded(rows.size) * H  # one matrix's rows of this part, as panels
            for k in range(L):
                for j, n in enumerate((mat if k else 0, mat, rows.size, rows.size)):
                    self.poff[p, k, j] = off
                    off += n
            size = max(size, off)
        self.pk = _page_aligned_rows(P, size, self.dtype)
        self.tab = np.zeros((P, V, gmax), self.dtype)
        self.decp = np.zeros((padded(V) // NR, H, NR), self.dtype)  # decoder.weight (V, H) as panels
        self.decb = np.zeros(V, self.dtype)
        self.packed = False
        # weight bytes one character reads (the padding of the panels aside)
        self.step_bytes = (sum(r.size for r in self._rows) * (2 * L - 1) * H + V * H) * self.dtype.itemsize

    def pack(self, model: Model) -> None:
        """Copy each part's weight rows (and its columns of layer 0's input table) and the decoder from
        the model."""
        params = model.params
        if params.shape != self.shape or params.dtype != self.dtype:
            raise ValueError("the model's parameter layout changed under the sampler")
        table = model.input_table() + params["rnn.bias_ih_l0"]
        for p, rows in enumerate(self._rows):
            self.tab[p, :, :rows.size] = table[:, rows]
            for k in range(self.shape.num_layers):
                names = (f"rnn.weight_ih_l{k}", f"rnn.weight_hh_l{k}", f"rnn.bias_ih_l{k}", f"rnn.bias_hh_l{k}")
                for j, name in enumerate(names):
                    if k == 0 and j in (0, 2):
                        continue  # layer 0's input side lives in the table
                    w = params[name][rows]
                    part = (_panels(w.T) if w.ndim == 2 else w).reshape(-1)
                    o = self.poff[p, k, j]
                    self.pk[p, o:o + part.size] = part
        self.decp[:] = _panels(params["decoder.weight"].T)
        self.decb[:] = params["decoder.bias"]
        self.packed = True

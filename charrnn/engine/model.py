"""The model: L stacked cells of one kind, dropout between layers and before the decoder, a linear
decoder to vocabulary logits, softmax cross-entropy averaged per character.

This file validates shapes and dtypes once, owns preallocated workspaces, and calls the private kernels.
Big GEMMs (input projections of layers > 0, all weight gradients, the decoder) run once per chunk
over all T*B rows through numpy; only the recurrent product runs per time step, inside one jitted T loop
per layer and direction over W_hh packed once per pass, with the gate arithmetic fused in (kernels/gemm.py,
lstm_fused.py, gru_fused.py, rnn.py; float64, trace and NUMBA_DISABLE_JIT runs take the per-step numpy
loops of kernels/lstm.py, gru.py, rnn.py). Every array the
kernels get is made here, C-contiguous float32: they read it through raw addresses (docs/architecture.md).

Sizes: B = streams, T = time steps, N = T*B rows, H = hidden, G = gates*H, V = vocab, E = embedding, L = layers.
"""
from dataclasses import dataclass

import numpy as np

import numba

from .kernels import blas, dropout, gemm, gru, gru_fused, head, lstm, lstm_fused, rnn
from .kernels.blas import matmul, single_threaded_blas
from .params import GATES, Params, Shape
from .threads import pool, usable_cores


@dataclass
class State:
    """Hidden state carried between chunks: h (L, B, H) and, for LSTM, c (L, B, H)."""

    h: np.ndarray
    c: np.ndarray | None = None

    def copy(self) -> "State":
        return State(self.h.copy(), None if self.c is None else self.c.copy())


@dataclass
class _Prepared:
    table: np.ndarray          # (V, G) layer 0 input projection per character
    bias: list[np.ndarray]     # (G) per layer, folded biases
    w_ih: list[np.ndarray]     # (G, H) per layer > 0 (None for layer 0), W_ih in the pass's gate order
    w_hh_t: list[np.ndarray] | None  # (H, G) per layer, W_hh^T for the per-step GEMM (unfused paths)
    fwd: list[np.ndarray] | None = None  # per layer gemm.pack(W_hh^T) (P, H, NR): the packed path
    bwd: list[np.ndarray] | None = None  # per layer gemm.pack(W_hh) (P, G, NR), for training passes
    # The fused LSTM and GRU passes keep gate-wide arrays in the interleaved gate order of
    # lstm_fused / gru_fused: x_il = x[:, perm], x = x_il[:, inv]. table, bias, w_ih, fwd and bwd are
    # then already permuted.
    perm: np.ndarray | None = None
    inv: np.ndarray | None = None


def packed_path(dtype) -> bool:
    """Whether passes use the jitted T loops over packed weights (float32 with the JIT on), or the
    per-step numpy GEMM loops (float64 gradient checks, NUMBA_DISABLE_JIT=1 runs, the trace option)."""
    return np.dtype(dtype) == np.float32 and not numba.config.DISABLE_JIT


class _LayerWork:
    """Per-layer buffers for one (B, T): forward cache, backward outputs, step workspaces."""

    def __init__(self, cell: str, B: int, T: int, H: int, G: int, dtype, dropout: bool):
        z = lambda *s: np.zeros(s, dtype=dtype)  # noqa: E731
        self.xproj = z(T, B, G)
        self.hs = z(T + 1, B, H)          # hs[0] = h0, hs[t+1] = output of step t
        self.gates = z(T, B, G)
        self.hh = z(B, gemm.padded(G))    # per-step recurrent product (panel-padded for the packed path)
        self.dhh = z(B, gemm.padded(H))   # per-step dgates @ W_hh (packed path)
        self.dgates = z(T, B, G)          # d(loss)/d(xproj)
        self.dhs = z(T, B, H)             # d(loss)/d(outputs)
        self.dh = z(B, H)
        self.cs = z(T + 1, B, H) if cell == "lstm" else None
        self.dc = z(B, H) if cell == "lstm" else None
        self.hn = z(T, B, H) if cell == "gru" else None
        self.dgh = z(T, B, G) if cell == "gru" else None
        self.dtmp = z(B, H) if cell == "gru" else None
        self.dropped = z(T, B, H) if dropout else None


class _Work:
    def __init__(self, shape: Shape, B: int, T: int, dtype, dropout: bool):
        H, V = shape.hidden_size, shape.vocab_size
        G = GATES[shape.cell] * H
        self.layers = [_LayerWork(shape.cell, B, T, H, G, dtype, dropout) for _ in range(shape.num_layers)]
        self.logits = np.zeros((T * B, V), dtype=dtype)
        self.dtable = np.zeros((V, G), dtype=dtype)


class Model:
    """A character-level RNN language model over one flat parameter buffer (`self.params`)."""

    def __init__(self, shape: Shape, params: Params | None = None, dtype=np.float32):
        if shape.cell not in GATES:
            raise ValueError(f"unknown cell {shape.cell!r}")
        self.shape = shape
        self.params = params if params is not None else Params(shape, dtype)
        self.dtype = self.params.dtype
        self._work: dict[tuple[int, int, bool, int], _Work] = {}
        self._extra_grads: dict[int, Params] = {}

    # -- sizes ------------------------------------------------------------------------------------
    @property
    def cell(self) -> str:
        return self.shape.cell

    @property
    def num_layers(self) -> int:
        return self.shape.num_layers

    @property
    def hidden_size(self) -> int:
        return self.shape.hidden_size

    @property
    def vocab_size(self) -> int:
        return self.shape.vocab_size

    def zero_state(self, batch_size: int) -> State:
        s = (self.num_layers, batch_size, self.hidden_size)
        return State(np.zeros(s, self.dtype), np.zeros(s, self.dtype) if self.cell == "lstm" else None)

    def dropout_masks(self, rng: np.random.Generator, p: float, B: int, T: int) -> list[np.ndarray] | None:
        """Inverted-dropout masks (0 or 1/(1-p)), one (T, B, H) per layer output; None when p == 0.
        One 64-bit key per layer from rng, then a hash fills the mask (kernels/dropout.py: faster)."""
        if p <= 0:
            return None
        masks = []
        for _ in range(self.num_layers):
            mk = np.empty((T, B, self.hidden_size), self.dtype)
            dropout.fill_masks(mk, int(rng.integers(0, 2 ** 64, dtype=np.uint64)), p)
            masks.append(mk)
        return masks

    # -- public passes ----------------------------------------------------------------------------
    def forward_backward(self, x, y, state: State, grads: Params, masks=None, *,
                         loss_weights=None, trace=None) -> tuple[float, State]:
        """Mean cross-entropy of predicting y from x (both (B, T) ints) starting from `state`, and its
        gradient written into `grads` (overwritten, not accumulated: every parameter receives exactly
        one contribution per chunk). Returns (loss, state after the chunk).

        For looking inside (charrnn diagnose): `loss_weights` (B, T) scales each position's share of
        the gradient (e.g. 1 at the last step and 0 elsewhere: the gradient of the last step's loss
        alone, times 1/(B*T)); the returned loss stays the plain mean. `trace`, one (T, B, H) float
        array per layer, receives d(loss)/d(h_t) of that layer's output at every step, as the
        backward kernels carry it through time."""
        if grads.flat.dtype != self.dtype or grads.shape != self.shape:
            raise ValueError("grads must have the model's layout and dtype")
        B, T = np.shape(x)
        if loss_weights is not None:
            loss_weights = np.asarray(loss_weights, dtype=self.dtype)
            if loss_weights.shape != (B, T):
                raise ValueError(f"loss_weights must be (B, T) = {(B, T)}, got {loss_weights.shape}")
        if trace is not None and (len(trace) != self.num_layers or any(
                tr.shape != (T, B, self.hidden_size) or tr.dtype != self.dtype for tr in trace)):
            raise ValueError(f"trace must be one (T, B, H) {self.dtype} array per layer")
        total, new_state = self._run("train", x, y, state, masks, grads, loss_weights, trace)
        return total / np.asarray(x).size, new_state

    def loss(self, x, y, state: State) -> tuple[float, State]:
        """Sum (not mean) of the cross-entropy over all B*T predictions, no dropout, no gradients."""
        return self._run("loss", x, y, state, None, None)

    def logits(self, x, state: State) -> tuple[np.ndarray, State]:
        """Decoder logits (B, T, V) for inputs x (B, T), no dropout."""
        return self._run("logits", x, None, state, None, None)

    # -- internals --------------------------------------------------------------------------------
    def _run(self, kind: str, x, y, state: State, masks, grads, loss_weights=None, trace=None):
        """One pass over a chunk, data-parallel over (at most) two fixed groups of streams.

        The split is fixed (first half / second half of the streams), whatever the core count, so the
        numbers never depend on the machine; with two cores the groups run at once on two threads, each
        with single-threaded BLAS. Measured side by side against one group on 2-thread BLAS (when the
        per-step GEMMs still ran inside Numba): GRU 2x256 B64 T100 197 vs 223 ms per step, LSTM 2x512
        828 vs 887 ms, LSTM 2x128 B50 T50 on par; and no idle BLAS worker spins against our threads,
        which keeps a busy machine from collapsing the step time."""
        x, y = self._check(x, y, state, masks)
        B, T = x.shape
        groups = [(0, B)] if B < 2 else [(0, (B + 1) // 2), ((B + 1) // 2, B)]
        prep = self._prepare_weights(backward=kind == "train" and trace is None, fused=trace is None)
        scale = self.dtype.type(1.0 / x.size)
        # Made here, not in the threads: the workspace cache is a dict both would write.
        works = [self._workspace(b1 - b0, T, masks is not None, gi) for gi, (b0, b1) in enumerate(groups)]
        threaded = len(groups) > 1 and usable_cores() > 1

        def job(gi: int):
            # A diverging model overflows: callers see the non-finite loss (the trainer's guard skips
            # the step), so numpy's warnings are noise. errstate is per thread, hence set here.
            blas.warm_up_thread()  # see blas.py: numpy's OpenBLAS runs slow GEMMs in a cold thread
            with np.errstate(over="ignore", invalid="ignore"):
                return group_job(gi)

        def group_job(gi: int):
            b0, b1 = groups[gi]
            ids = np.ascontiguousarray(x[b0:b1].T, dtype=np.int32)
            sub = State(state.h[:, b0:b1], None if state.c is None else state.c[:, b0:b1])
            m = None if masks is None else [np.ascontiguousarray(mk[:, b0:b1]) for mk in masks]
            w = works[gi]
            top = self._forward(ids, sub, m, w, prep)
            if kind == "logits":
                return w.logits.reshape(T, b1 - b0, -1).transpose(1, 0, 2).copy(), w
            tgt = np.ascontiguousarray(y[b0:b1].T, dtype=np.int32).reshape(-1)
            if kind == "loss":
                return head.softmax_xent_loss(w.logits, tgt), w
            s = head.softmax_xent_backward(w.logits, tgt, scale)
            if loss_weights is not None:  # rows are time-major: row t*Bg + b
                w.logits *= loss_weights[b0:b1].T.reshape(-1, 1)
            tr = None if trace is None else [a[:, b0:b1] for a in trace]
            self._backward(ids, top, m, w, grads if gi == 0 else self._group_grads(gi), prep, tr)
            return s, w

        with single_threaded_blas():
            if threaded:
                results = list(pool().map(job, range(len(groups))))
            else:
                results = [job(gi) for gi in range(len(groups))]
        states = [self._final_state(w) for _, w in results]
        new_state = State(np.concatenate([s.h for s in states], axis=1),
                          None if self.cell != "lstm" else np.concatenate([s.c for s in states], axis=1))
        if kind == "logits":
            return np.concatenate([r for r, _ in results], axis=0), new_state
        if kind == "train":
            for gi in range(1, len(groups)):
                grads.flat += self._group_grads(gi).flat
        return sum(r for r, _ in results), new_state

    def _check(self, x, y, state: State, masks):
        x = np.asarray(x)
        if x.ndim != 2 or x.dtype.kind not in "iu":
            raise ValueError(f"x must be a (B, T) integer array, got {x.dtype} {x.shape}")
        B, T = x.shape
        if x.size and (x.min() < 0 or x.max() >= self.vocab_size):
            raise ValueError("x holds ids outside the vocabulary")
        if y is not None:
            y = np.asarray(y)
            if y.shape != x.shape or (y.size and (y.min() < 0 or y.max() >= self.vocab_size)):
                raise ValueError("y must match x's shape and hold vocabulary ids")
        want = (self.num_layers, B, self.hidden_size)
        if state.h.shape != want or state.h.dtype != self.dtype:
            raise ValueError(f"state.h must be {want} {self.dtype}, got {state.h.shape} {state.h.dtype}")
        if (self.cell == "lstm") != (state.c is not None) or (state.c is not None and (
                state.c.shape != want or state.c.dtype != self.dtype)):
            raise ValueError("state.c must be given (L, B, H) for LSTM and only for LSTM")
        if masks is not None and (len(masks) != self.num_layers
                                  or any(mk.shape != (T, B, self.hidden_size) for mk in masks)):
            raise ValueError("masks must be one (T, B, H) array per layer")
        return x, y

    def _workspace(self, B: int, T: int, dropout: bool, group: int) -> _Work:
        key = (B, T, dropout, group)
        w = self._work.get(key)
        if w is None:
            if len(self._work) > 8:  # training, eval and sampling shapes, two groups each; drop stale ones
                self._work.clear()
            w = self._work[key] = _Work(self.shape, B, T, self.dtype, dropout)
        return w

    def _group_grads(self, group: int) -> Params:
        """A private gradient buffer for the second group, summed into the caller's after the pass."""
        g = self._extra_grads.get(group)
        if g is None:
            g = self._extra_grads[group] = self.params.zeros_like()
        return g

    def _prepare_weights(self, backward: bool, fused: bool) -> "_Prepared":
        """Arrays derived from the weights once per pass and shared by both groups: on the packed path,
        W_hh^T (and for a training pass W_hh) cut into the panels the micro-kernel reads in order; for
        the fused LSTM and GRU passes (not with a trace: its per-step backward reads PyTorch's gate
        order) every gate-wide array permuted into the interleaved gate order."""
        P, L = self.params, self.num_layers
        w_hh = [P[f"rnn.weight_hh_l{k}"] for k in range(L)]
        prep = _Prepared(table=self.input_table(), bias=[self._layer_bias(k) for k in range(L)],
                         w_ih=[None] + [P[f"rnn.weight_ih_l{k}"] for k in range(1, L)], w_hh_t=None)
        fused_kernels = {"lstm": lstm_fused, "gru": gru_fused}.get(self.cell)
        if not packed_path(self.dtype):
            prep.w_hh_t = [np.ascontiguousarray(w.T) for w in w_hh]
            return prep
        if fused and fused_kernels is not None and fused_kernels.fused_ok(self.hidden_size):
            perm = prep.perm = fused_kernels.interleaved_order(self.hidden_size)
            prep.inv = np.argsort(perm)
            prep.table = np.ascontiguousarray(prep.table[:, perm])
            prep.bias = [b[perm] for b in prep.bias]
            prep.w_ih = [None] + [w[perm] for w in prep.w_ih[1:]]
            w_hh = [w[perm] for w in w_hh]
            prep.fwd = [gemm.pack(w.T) if self.cell == "lstm" else gru_fused.pack_forward(w) for w in w_hh]
        else:
            prep.fwd = [gemm.pack(w.T) for w in w_hh]
        prep.bwd = [gemm.pack(w) for w in w_hh] if backward else None
        return prep

    def _layer_bias(self, k: int) -> np.ndarray:
        """Both biases folded into the input projection; GRU keeps b_hn apart (r scales it)."""
        P, H = self.params, self.hidden_size
        bias = P[f"rnn.bias_ih_l{k}"] + P[f"rnn.bias_hh_l{k}"]
        if self.cell == "gru":
            bias[2 * H:] = P[f"rnn.bias_ih_l{k}"][2 * H:]
        return bias

    def input_table(self) -> np.ndarray:
        """(V, G): row c is layer 0's input projection of character c, without biases (a one-hot input
        makes the input GEMM a row gather; an embedding folds into the same table). The training passes
        and the sampler both read layer 0 through this table."""
        w_ih = self.params["rnn.weight_ih_l0"]
        if self.shape.embedding_size > 0:
            table = np.empty((self.vocab_size, w_ih.shape[0]), self.dtype)
            matmul(self.params["encoder.weight"], w_ih.T, table)
            return table
        return np.ascontiguousarray(w_ih.T)

    def _forward(self, ids, state: State, masks, w: _Work, prep: "_Prepared") -> np.ndarray:
        """Runs all layers and the decoder into w.logits; returns the decoder's input (T, B, H)."""
        P, T, B = self.params, ids.shape[0], ids.shape[1]
        inp = None
        for k, lw in enumerate(w.layers):
            bias = prep.bias[k]
            if k == 0:
                head.gather_rows(lw.xproj, prep.table, ids, bias)
            else:
                xp = lw.xproj.reshape(T * B, -1)
                matmul(inp.reshape(T * B, -1), prep.w_ih[k].T, xp)
                xp += bias
            lw.hs[0] = state.h[k]
            w_hh_t = None if prep.w_hh_t is None else prep.w_hh_t[k]
            packed = prep.fwd is not None
            if self.cell == "lstm":
                lw.cs[0] = state.c[k]
                if prep.perm is not None:
                    lstm_fused.lstm_forward_fused(lw.hs, lw.cs, lw.gates, lw.xproj, prep.fwd[k])
                elif packed:
                    lstm.lstm_forward_packed(lw.hs, lw.cs, lw.gates, lw.hh, lw.xproj, prep.fwd[k])
                else:
                    lstm.lstm_forward(lw.hs, lw.cs, lw.gates, lw.hh[:, :w_hh_t.shape[1]], lw.xproj, w_hh_t)
            elif self.cell == "gru":
                H = self.hidden_size
                b_hn = P[f"rnn.bias_hh_l{k}"][2 * H:]
                if prep.perm is not None:
                    gru_fused.gru_forward_fused(lw.hs, lw.gates, lw.hn, lw.xproj, prep.fwd[k], b_hn)
                elif packed:
                    gru.gru_forward_packed(lw.hs, lw.gates, lw.hn, lw.hh, lw.xproj, prep.fwd[k], b_hn)
                else:
                    gru.gru_forward(lw.hs, lw.gates, lw.hn, lw.hh[:, :w_hh_t.shape[1]], lw.xproj, w_hh_t, b_hn)
            elif packed and rnn.fused_ok(self.hidden_size):
                rnn.rnn_forward_fused(lw.hs, lw.xproj, prep.fwd[k])
            elif packed:
                rnn.rnn_forward_packed(lw.hs, lw.hh, lw.xproj, prep.fwd[k])
            else:
                rnn.rnn_forward(lw.hs, lw.hh[:, :w_hh_t.shape[1]], lw.xproj, w_hh_t)
            inp = lw.hs[1:]
            if masks is not None:
                np.multiply(inp, masks[k], out=lw.dropped)
                inp = lw.dropped
        matmul(inp.reshape(T * B, -1), P["decoder.weight"].T, w.logits)
        w.logits += P["decoder.bias"]
        return inp

    def _backward(self, ids, top, masks, w: _Work, g: Params, prep: "_Prepared", trace=None) -> None:
        """Reverse of _forward; w.logits holds d(loss)/d(logits) on entry. trace: see forward_backward."""
        P, T, B = self.params, ids.shape[0], ids.shape[1]
        N = T * B
        dlogits = w.logits
        matmul(dlogits.T, top.reshape(N, -1), g["decoder.weight"])
        np.sum(dlogits, axis=0, out=g["decoder.bias"])
        matmul(dlogits, P["decoder.weight"], w.layers[-1].dhs.reshape(N, -1))
        for k in range(self.num_layers - 1, -1, -1):
            lw = w.layers[k]
            if masks is not None:
                lw.dhs *= masks[k]
            lw.dh[:] = 0
            w_hh = P[f"rnn.weight_hh_l{k}"]
            tr = None if trace is None else trace[k]
            wp = None if prep.bwd is None else prep.bwd[k]  # None: per-step numpy loop (trace, float64)
            if self.cell == "lstm":
                lw.dc[:] = 0
                # Fused: the carried dh is zero here (truncated BPTT), so dhs[T-1] needs nothing added,
                # and the gradient w.r.t. h0 (dgates[0] @ W_hh) is not wanted.
                if wp is not None and prep.perm is not None:
                    lstm_fused.lstm_backward_fused(lw.dgates, lw.dc, lw.dhs, lw.cs, lw.gates, wp)
                elif wp is not None:
                    lstm.lstm_backward_packed(lw.dgates, lw.dh, lw.dc, lw.dhs, lw.cs, lw.gates, wp, lw.dhh)
                else:
                    lstm.lstm_backward(lw.dgates, lw.dh, lw.dc, lw.dhs, lw.hs, lw.cs, lw.gates, w_hh, tr)
                dgh = lw.dgates
            elif self.cell == "gru":
                if wp is not None and prep.perm is not None:
                    gru_fused.gru_backward_fused(lw.dgates, lw.dgh, lw.dh, lw.dhs, lw.hs, lw.gates, lw.hn, wp)
                elif wp is not None:
                    gru.gru_backward_packed(lw.dgates, lw.dgh, lw.dh, lw.dhs, lw.hs, lw.gates, lw.hn, wp, lw.dhh)
                else:
                    gru.gru_backward(lw.dgates, lw.dgh, lw.dh, lw.dtmp, lw.dhs, lw.hs, lw.gates, lw.hn, w_hh, tr)
                dgh = lw.dgh
            else:
                if wp is not None and rnn.fused_ok(self.hidden_size):
                    rnn.rnn_backward_fused(lw.dgates, lw.dhs, lw.hs, wp)  # carried dh: zero, as for the LSTM
                elif wp is not None:
                    rnn.rnn_backward_packed(lw.dgates, lw.dh, lw.dhs, lw.hs, wp, lw.dhh)
                else:
                    rnn.rnn_backward(lw.dgates, lw.dh, lw.dhs, lw.hs, w_hh, tr)
                dgh = lw.dgates
            dgx = lw.dgates.reshape(N, -1)
            dgh = dgh.reshape(N, -1)
            hs = lw.hs[:T].reshape(N, -1)
            _gate_rows(g[f"rnn.weight_hh_l{k}"], prep.inv, lambda out: matmul(dgh.T, hs, out))
            _gate_rows(g[f"rnn.bias_hh_l{k}"], prep.inv, lambda out: np.sum(dgh, axis=0, out=out))
            if self.cell == "gru":  # elsewhere the two gradients are the same sum (dgh is dgx)
                _gate_rows(g[f"rnn.bias_ih_l{k}"], prep.inv, lambda out: np.sum(dgx, axis=0, out=out))
            else:
                g[f"rnn.bias_ih_l{k}"][:] = g[f"rnn.bias_hh_l{k}"]
            if k > 0:
                below = w.layers[k - 1]
                inp = (below.dropped if masks is not None else below.hs[1:]).reshape(N, -1)
                _gate_rows(g[f"rnn.weight_ih_l{k}"], prep.inv, lambda out: matmul(dgx.T, inp, out))
                matmul(dgx, prep.w_ih[k], below.dhs.reshape(N, -1))
            else:
                w.dtable[:] = 0
                head.scatter_add_rows(w.dtable, lw.dgates, ids)
                dtable = w.dtable if prep.inv is None else w.dtable[:, prep.inv]
                if self.shape.embedding_size > 0:
                    matmul(dtable.T, P["encoder.weight"], g["rnn.weight_ih_l0"])
                    matmul(dtable, P["rnn.weight_ih_l0"], g["encoder.weight"])
                else:
                    g["rnn.weight_ih_l0"][:] = dtable.T

    def _final_state(self, w: _Work) -> State:
        h = np.stack([lw.hs[-1] for lw in w.layers])
        c = np.stack([lw.cs[-1] for lw in w.layers]) if self.cell == "lstm" else None
        return State(h, c)


def _gate_rows(dst: np.ndarray, inv: np.ndarray | None, fill) -> None:
    """fill(out) computes a gradient whose first axis runs over the pass's gate columns; with the
    interleaved order (inv given) it goes to a scratch array whose rows are put back into PyTorch's
    order in dst (G x H floats: cheaper than reordering the N x G dgates)."""
    if inv is None:
        fill(dst)
        return
    tmp = np.empty_like(dst)
    fill(tmp)
    np.take(tmp, inv, axis=0, out=dst)

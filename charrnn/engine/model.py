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

import numba
import numpy as np

from .kernels import dropout, gemm, gru_fused, lstm_fused
from .kernels.blas import matmul, single_threaded_blas
from .params import GATES, Params, Shape
from .passes import Pass
from .team import Team, chunks, run_shared, run_threads
from .threads import threads


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


SUM_PIECE = 1 << 16  # elements per piece of the groups' gradient sum (at least)


def stream_groups(B: int) -> list[tuple[int, int]]:
    """The fixed groups of streams a pass runs as separate passes (first half, second half): their
    gradients are summed in this order, so they fix the numbers; B alone decides them. Two groups let
    two threads work without any barrier between them (measured: docs/architecture.md, "Cores")."""
    return [(0, B)] if B < 2 else [(0, (B + 1) // 2), ((B + 1) // 2, B)]


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
        # weight and bias gradients in the pass's gate order (passes.py puts them into PyTorch's)
        self.gw_hh, self.gw_ih = z(G, H), z(G, H)
        self.parts = None  # the gradient tasks' partial bias sums (passes.py, made on first use)


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
        self._team_cache: list[Team] = []
        # True: one team of every thread runs the groups in turn even when they could run side by side
        # (benchmarks/scaling.py measures a team's barriers with it; the numbers are the same either way).
        self.one_team = False

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
    def gate_width(self) -> int:
        return GATES[self.cell] * self.hidden_size

    @property
    def vocab_size(self) -> int:
        return self.shape.vocab_size

    def zero_state(self, batch_size: int) -> State:
        s = (self.num_layers, batch_size, self.hidden_size)
        return State(np.zeros(s, self.dtype), np.zeros(s, self.dtype) if self.cell == "lstm" else None)

    def dropout_masks(self, rng: np.random.Generator, p: float, B: int, T: int,
                      streams: tuple[int, int] | None = None) -> list[np.ndarray] | None:
        """Inverted-dropout masks (0 or 1/(1-p)), one (T, B, H) per layer output; None when p == 0.
        One 64-bit key per layer from rng, then a hash fills the mask (kernels/dropout.py: faster).
        streams (b0, b1): only those streams' rows, (T, b1-b0, H), the same numbers as rows b0:b1 of the
        whole mask (a rank of a distributed run draws the same keys and fills its share)."""
        if p <= 0:
            return None
        masks, H = [], self.hidden_size
        for _ in range(self.num_layers):
            key = int(rng.integers(0, 2 ** 64, dtype=np.uint64))
            if streams is None:
                mk = np.empty((T, B, H), self.dtype)
                dropout.fill_masks(mk, key, p)
            else:
                b0, b1 = streams
                mk = np.empty((T, b1 - b0, H), self.dtype)
                dropout.fill_mask_columns(mk.reshape(T, -1), key, p, B * H, b0 * H)
            masks.append(mk)
        return masks

    # -- public passes ----------------------------------------------------------------------------
    def forward_backward(self, x, y, state: State, grads: Params, masks=None, *,
                         loss_weights=None, trace=None, mean_over: int | None = None) -> tuple[float, State]:
        """Mean cross-entropy of predicting y from x (both (B, T) ints) starting from `state`, and its
        gradient written into `grads` (overwritten, not accumulated: every parameter receives exactly
        one contribution per chunk). Returns (loss, state after the chunk).

        For looking inside (charrnn diagnose): `loss_weights` (B, T) scales each position's share of
        the gradient (e.g. 1 at the last step and 0 elsewhere: the gradient of the last step's loss
        alone, times 1/(B*T)); the returned loss stays the plain mean. `trace`, one (T, B, H) float
        array per layer, receives d(loss)/d(h_t) of that layer's output at every step, as the
        backward kernels carry it through time. mean_over: the count the loss and gradient are averaged
        over (default x.size); a rank of a distributed run passes the whole batch's B*T, so the ranks'
        losses and gradients add up to the batch's."""
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
        count = np.asarray(x).size if mean_over is None else mean_over
        total, new_state = self._run("train", x, y, state, masks, grads, loss_weights, trace, count)
        return total / count, new_state

    def loss(self, x, y, state: State) -> tuple[float, State]:
        """Sum (not mean) of the cross-entropy over all B*T predictions, no dropout, no gradients."""
        return self._run("loss", x, y, state, None, None)

    def logits(self, x, state: State) -> tuple[np.ndarray, State]:
        """Decoder logits (B, T, V) for inputs x (B, T), no dropout."""
        return self._run("logits", x, None, state, None, None)

    # -- internals --------------------------------------------------------------------------------
    def _run(self, kind: str, x, y, state: State, masks, grads, loss_weights=None, trace=None, count=None):
        """One pass over a chunk: the streams cut into fixed groups (`stream_groups`: B decides, never the
        machine), each group's pass (passes.py) run by a team of threads, the groups' gradients summed
        in group order. Teams are only scheduling: with n threads and g groups, g teams of n/g threads
        run the groups at once when g divides n (two threads: one group each, no barrier at all, as
        robust as it gets on a busy machine), else one team of n runs them in turn. Every number is
        the same for any n. BLAS runs single-threaded inside: our threads share the work out, and an
        idle BLAS pool would spin against them."""
        x, y = self._check(x, y, state, masks)
        B, T = x.shape
        groups = stream_groups(B)
        prep = self._prepare_weights(backward=kind == "train" and trace is None, fused=trace is None)
        scale = self.dtype.type(1.0 / (x.size if count is None else count))
        passes = []
        for gi, (b0, b1) in enumerate(groups):
            ids = np.ascontiguousarray(x[b0:b1].T, dtype=np.int32)
            tgt = None if y is None else np.ascontiguousarray(y[b0:b1].T, dtype=np.int32).reshape(-1)
            sub = State(state.h[:, b0:b1], None if state.c is None else state.c[:, b0:b1])
            m = None if masks is None else [np.ascontiguousarray(mk[:, b0:b1]) for mk in masks]
            lw = None if loss_weights is None else loss_weights[b0:b1]
            tr = None if trace is None else [a[:, b0:b1] for a in trace]
            g = None if kind != "train" else grads if gi == 0 else self._group_grads(gi)
            passes.append(Pass(self, kind, ids, tgt, sub, m, g, self._workspace(b1 - b0, T, m is not None, gi),
                               prep, scale, lw, tr))
        n = threads()
        concurrent = len(groups) if n % len(groups) == 0 and not self.one_team else 1
        teams = self._teams(concurrent, n // concurrent)

        def slot(j: int) -> None:
            ti, me = divmod(j, teams[0].n)
            for gi in range(ti, len(groups), concurrent):
                passes[gi].run(me, teams[ti])

        with single_threaded_blas():
            run_threads(n, slot, teams)
        states = [self._final_state(p.w) for p in passes]
        new_state = State(np.concatenate([s.h for s in states], axis=1),
                          None if self.cell != "lstm" else np.concatenate([s.c for s in states], axis=1))
        if kind == "logits":
            return np.concatenate([p.w.logits.reshape(T, p.B, -1).transpose(1, 0, 2) for p in passes]), new_state
        if kind == "train" and len(groups) > 1:
            self._sum_groups(grads, len(groups), n)
        return sum(p.loss() for p in passes), new_state

    def _sum_groups(self, grads: Params, count: int, n: int) -> None:
        """grads += each later group's gradients, in group order, element by element: in fixed pieces
        (the size alone decides them) shared out over n threads, so no thread waits for a serial sum."""
        flat, extra = grads.flat, [self._group_grads(gi).flat for gi in range(1, count)]
        pieces = chunks(flat.size, SUM_PIECE)

        def piece(i: int) -> None:
            a, b = pieces[i]
            for e in extra:
                flat[a:b] += e[a:b]

        run_shared(n, len(pieces), piece)

    def _teams(self, count: int, size: int) -> list[Team]:
        if len(self._team_cache) != count or self._team_cache[0].n != size:
            self._team_cache = [Team(size) for _ in range(count)]
        return self._team_cache

    def _group_grads(self, group: int) -> Params:
        """A private gradient buffer for a group after the first, summed into the caller's after the pass."""
        g = self._extra_grads.get(group)
        if g is None:
            g = self._extra_grads[group] = self.params.zeros_like()
        return g

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
        perm = None
        if fused and fused_kernels is not None and fused_kernels.fused_ok(self.hidden_size):
            perm = prep.perm = fused_kernels.interleaved_order(self.hidden_size)
            prep.inv = np.argsort(perm)
            prep.table = np.ascontiguousarray(prep.table[:, perm])
            prep.bias = [b[perm] for b in prep.bias]
        prep.fwd = [None] * L
        prep.bwd = [None] * L if backward else None
        gru_forward = perm is not None and self.cell == "gru"

        def layer(k: int) -> None:
            """Layer k's permuted W_ih and packed W_hh (pure copies: any thread gives the same arrays)."""
            w = w_hh[k] if perm is None else w_hh[k][perm]
            if perm is not None and k > 0:
                prep.w_ih[k] = prep.w_ih[k][perm]
            prep.fwd[k] = gru_fused.pack_forward(w) if gru_forward else gemm.pack(w.T)
            if backward:
                prep.bwd[k] = gemm.pack(w)

        # One job per layer, shared out over the pass's threads: on one thread this copying is a serial
        # part of the step (12 ms of a 2 s LSTM 2x512 step, benchmarks/scaling.py) while the others wait.
        run_shared(threads(), L, layer)
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

    def _final_state(self, w: _Work) -> State:
        h = np.stack([lw.hs[-1] for lw in w.layers])
        c = np.stack([lw.cs[-1] for lw in w.layers]) if self.cell == "lstm" else None
        return State(h, c)


"""One pass over a chunk (forward, and for training backward), run by every thread of a team at once.

Model._run validates, prepares the weights and the workspace, then runs `Pass.run(me, team)` on
threads() threads (team.py). The phases, each ended by the team's barrier:
  per layer: the input projection in row tasks (layer 0 a table gather; above it the dropout of the
  layer below and a GEMM); the recurrent T loop, each thread its panels of hidden units, a barrier a step;
  the head in row tasks: decoder GEMM, fused softmax cross-entropy (one partial loss per task, added in
  task order), d(logits) @ W_dec and the top layer's dropout;
  per layer backward: the recurrent T loop as above; then the weight gradients in tasks over gate rows
  (each a whole-K GEMM), the bias sums, and the gradient reaching the layer below in row tasks.
Task boundaries follow the shapes only (team.chunks), so every number is the same for any thread count.
The non-fused recurrent paths (float64, trace, NUMBA_DISABLE_JIT, odd H) run on thread 0 alone.

Sizes: T steps, B streams, N = T*B rows (time-major: row t*B + b), H hidden, G gate width, V vocabulary.
"""
import time

import numpy as np

from .kernels import blas, gru, gru_fused, head, lstm, lstm_fused, rnn
from .kernels.blas import matmul
from .team import Team, chunks, split

# Each phase has the same fixed number of tasks (a power of two: teams are often 2^k threads), as many as
# keep each task's GEMM at speed: every task packs the whole weight (a row task) or the whole hs (a
# gate-row task) once. Measured (benchmarks/gemm_split.py, Zen 3, one thread, dW = dgates^T hs over
# 3200 rows): G x H 1024x256 in tasks of 128 gate rows +15 % over one GEMM, of 256 rows +0-1 %;
# 2048x512: 256 rows +9 %, 512 rows +7 %. At least two tasks, so a team of two shares every phase.
ROW_TASK = 384   # rows per task at least
GATE_TASK = 256  # gate rows per weight-gradient task at least


def task_count(N: int, G: int) -> int:
    """The number of tasks of every task phase, for N rows and gate width G (the shapes alone)."""
    return len(chunks(N, ROW_TASK, limit=max(2, G // GATE_TASK)))
RECORD: list | None = None  # benchmarks/scaling.py sets a list: (pass, thread, layer, phase, start, end)
CLOCK = time.perf_counter   # ... and may read time.thread_time instead (CPU time: robust to a busy machine)


def _now() -> float:
    return CLOCK()


class Pass:
    def __init__(self, model, kind, ids, tgt, state, masks, grads, w, prep, scale, loss_weights, trace):
        self.m, self.kind, self.ids, self.tgt = model, kind, ids, tgt
        self.state, self.masks, self.g, self.w, self.prep = state, masks, grads, w, prep
        self.scale, self.trace = scale, trace
        T, B = ids.shape
        self.T, self.B, self.N = T, B, T * B
        self.lw = None if loss_weights is None else np.ascontiguousarray(loss_weights.T).reshape(-1, 1)
        self.rows = split(self.N, task_count(self.N, model.gate_width))
        self.partial = np.zeros(len(self.rows), np.float64)  # per row task: summed in task order

    def run(self, me: int, team: Team) -> None:
        blas.warm_up_thread()  # see blas.py: numpy's OpenBLAS runs slow GEMMs in a cold thread
        # A diverging model overflows: callers see the non-finite loss (the trainer's guard skips the
        # step), so numpy's warnings are noise. errstate is per thread, hence set here.
        with np.errstate(over="ignore", invalid="ignore"):
            top = self.forward(me, team)
            if self.kind == "train":
                self.backward(me, team, top)

    def loss(self) -> float:
        return float(np.sum(self.partial))

    # -- forward ----------------------------------------------------------------------------------
    def _input(self, k: int):
        """Layer k's output as the next layer (or the decoder) reads it: dropped or not, (N, H)."""
        lw = self.w.layers[k]
        return (lw.dropped if self.masks is not None else lw.hs[1:]).reshape(self.N, -1)

    def _dropout_rows(self, k: int, r0: int, r1: int) -> None:
        if self.masks is not None:
            H = self.m.hidden_size
            np.multiply(self.w.layers[k].hs[1:].reshape(-1, H)[r0:r1], self.masks[k].reshape(-1, H)[r0:r1],
                        out=self.w.layers[k].dropped.reshape(-1, H)[r0:r1])

    def forward(self, me: int, team: Team) -> np.ndarray:
        m, w, prep, N = self.m, self.w, self.prep, self.N
        if me == 0:
            for k, lw in enumerate(w.layers):
                lw.hs[0] = self.state.h[k]
                if lw.cs is not None:
                    lw.cs[0] = self.state.c[k]
                lw.dh[:] = 0
                if lw.dc is not None:
                    lw.dc[:] = 0
        for k, lw in enumerate(w.layers):
            t0 = _now()
            xp = lw.xproj.reshape(N, -1)
            for r0, r1 in team.mine(me, self.rows):
                if k == 0:
                    head.gather_rows(lw.xproj.reshape(N, 1, -1)[r0:r1], prep.table,
                                     self.ids.reshape(N, 1)[r0:r1], prep.bias[0])
                else:
                    self._dropout_rows(k - 1, r0, r1)
                    matmul(self._input(k - 1)[r0:r1], prep.w_ih[k].T, xp[r0:r1])
                    xp[r0:r1] += prep.bias[k]
            t1 = _now()
            team.sync(me)
            t2 = _now()
            self._recurrent_forward(k, me, team)
            if RECORD is not None:
                RECORD.append((id(self), me, k, "input tasks", t0, t1))
                RECORD.append((id(self), me, k, "wait", t1, t2))
                RECORD.append((id(self), me, k, "forward T loop", t2, _now()))
        t0 = _now()
        P, L = m.params, m.num_layers
        top = self._input(L - 1)
        logits = w.logits
        for c, (r0, r1) in enumerate(self.rows):
            if c % team.n != me:
                continue
            self._dropout_rows(L - 1, r0, r1)
            matmul(top[r0:r1], P["decoder.weight"].T, logits[r0:r1])
            logits[r0:r1] += P["decoder.bias"]
            if self.kind == "loss":
                self.partial[c] = head.softmax_xent_loss(logits[r0:r1], self.tgt[r0:r1])
            elif self.kind == "train":
                self.partial[c] = head.softmax_xent_backward(logits[r0:r1], self.tgt[r0:r1], self.scale)
                if self.lw is not None:
                    logits[r0:r1] *= self.lw[r0:r1]
                dhs = w.layers[-1].dhs.reshape(N, -1)[r0:r1]
                matmul(logits[r0:r1], P["decoder.weight"], dhs)
                if self.masks is not None:
                    dhs *= self.masks[-1].reshape(N, -1)[r0:r1]
        t1 = _now()
        team.sync(me)
        if RECORD is not None:
            RECORD.append((id(self), me, L, "head tasks", t0, t1))
            RECORD.append((id(self), me, L, "wait", t1, _now()))
        return top

    def _recurrent_forward(self, k: int, me: int, team: Team) -> None:
        m, lw, prep = self.m, self.w.layers[k], self.prep
        fl, n = team.flags, team.n
        if prep.fwd is not None and (prep.perm is not None or (m.cell == "rnn" and rnn.fused_ok(m.hidden_size))):
            p0, p1 = team.panels(me, prep.fwd[k].shape[0])
            if m.cell == "lstm":
                lstm_fused.lstm_forward_fused(lw.hs, lw.cs, lw.gates, lw.xproj, prep.fwd[k], p0, p1, fl, me, n)
            elif m.cell == "gru":
                b_hn = m.params[f"rnn.bias_hh_l{k}"][2 * m.hidden_size:]
                gru_fused.gru_forward_fused(lw.hs, lw.gates, lw.hn, lw.xproj, prep.fwd[k], b_hn, p0, p1, fl, me, n)
            else:
                rnn.rnn_forward_fused(lw.hs, lw.xproj, prep.fwd[k], p0, p1, fl, me, n)
            return
        if me == 0:
            self._recurrent_forward_alone(k)
        team.sync(me)

    def _recurrent_forward_alone(self, k: int) -> None:
        """The packed-unfused and per-step numpy paths, on one thread."""
        m, lw, prep = self.m, self.w.layers[k], self.prep
        w_hh_t = None if prep.w_hh_t is None else prep.w_hh_t[k]
        if m.cell == "lstm":
            if prep.fwd is not None:
                lstm.lstm_forward_packed(lw.hs, lw.cs, lw.gates, lw.hh, lw.xproj, prep.fwd[k])
            else:
                lstm.lstm_forward(lw.hs, lw.cs, lw.gates, lw.hh[:, :w_hh_t.shape[1]], lw.xproj, w_hh_t)
        elif m.cell == "gru":
            b_hn = m.params[f"rnn.bias_hh_l{k}"][2 * m.hidden_size:]
            if prep.fwd is not None:
                gru.gru_forward_packed(lw.hs, lw.gates, lw.hn, lw.hh, lw.xproj, prep.fwd[k], b_hn)
            else:
                gru.gru_forward(lw.hs, lw.gates, lw.hn, lw.hh[:, :w_hh_t.shape[1]], lw.xproj, w_hh_t, b_hn)
        elif prep.fwd is not None:
            rnn.rnn_forward_packed(lw.hs, lw.hh, lw.xproj, prep.fwd[k])
        else:
            rnn.rnn_forward(lw.hs, lw.hh[:, :w_hh_t.shape[1]], lw.xproj, w_hh_t)

    # -- backward ---------------------------------------------------------------------------------
    def backward(self, me: int, team: Team, top: np.ndarray) -> None:
        L = self.m.num_layers
        for k in range(L - 1, -1, -1):
            t0 = _now()
            self._recurrent_backward(k, me, team)
            t1 = _now()
            tasks = self._gradient_tasks(k, top if k == L - 1 else None)
            for j in range(me, len(tasks), team.n):
                tasks[j]()
            t2 = _now()
            team.sync(me)
            t3 = _now()
            self._finish_layer(k, me, team)
            if RECORD is not None:
                RECORD.append((id(self), me, k, "backward T loop", t0, t1))
                RECORD.append((id(self), me, k, "gradient tasks", t1, t2))
                RECORD.append((id(self), me, k, "wait", t2, t3))
                RECORD.append((id(self), me, k, "gate order tasks", t3, _now()))

    def _recurrent_backward(self, k: int, me: int, team: Team) -> None:
        m, lw, prep = self.m, self.w.layers[k], self.prep
        wp = None if prep.bwd is None else prep.bwd[k]
        fl, n = team.flags, team.n
        if wp is not None and (prep.perm is not None or (m.cell == "rnn" and rnn.fused_ok(m.hidden_size))):
            p0, p1 = team.panels(me, wp.shape[0])
            # The carried dh is zero here (truncated BPTT), so dhs[T-1] needs nothing added, and the
            # gradient w.r.t. h0 (dgates[0] @ W_hh) is not wanted.
            if m.cell == "lstm":
                lstm_fused.lstm_backward_fused(lw.dgates, lw.dc, lw.dhs, lw.cs, lw.gates, wp, p0, p1, fl, me, n)
            elif m.cell == "gru":
                gru_fused.gru_backward_fused(lw.dgates, lw.dgh, lw.dh, lw.dhs, lw.hs, lw.gates, lw.hn, wp,
                                             p0, p1, fl, me, n)
            else:
                rnn.rnn_backward_fused(lw.dgates, lw.dhs, lw.hs, wp, p0, p1, fl, me, n)
            return
        if me == 0:
            self._recurrent_backward_alone(k, wp)
        team.sync(me)

    def _recurrent_backward_alone(self, k: int, wp) -> None:
        m, lw = self.m, self.w.layers[k]
        w_hh = m.params[f"rnn.weight_hh_l{k}"]
        tr = None if self.trace is None else self.trace[k]
        if m.cell == "lstm":
            if wp is not None:
                lstm.lstm_backward_packed(lw.dgates, lw.dh, lw.dc, lw.dhs, lw.cs, lw.gates, wp, lw.dhh)
            else:
                lstm.lstm_backward(lw.dgates, lw.dh, lw.dc, lw.dhs, lw.hs, lw.cs, lw.gates, w_hh, tr)
        elif m.cell == "gru":
            if wp is not None:
                gru.gru_backward_packed(lw.dgates, lw.dgh, lw.dh, lw.dhs, lw.hs, lw.gates, lw.hn, wp, lw.dhh)
            else:
                gru.gru_backward(lw.dgates, lw.dgh, lw.dh, lw.dtmp, lw.dhs, lw.hs, lw.gates, lw.hn, w_hh, tr)
        elif wp is not None:
            rnn.rnn_backward_packed(lw.dgates, lw.dh, lw.dhs, lw.hs, wp, lw.dhh)
        else:
            rnn.rnn_backward(lw.dgates, lw.dh, lw.dhs, lw.hs, w_hh, tr)

    def _gradient_tasks(self, k: int, top) -> list:
        """Layer k's weight gradients with their bias sums, the gradient reaching layer k-1 (or the
        input table's), and for the top layer the decoder's: task j does piece j of each, so every
        task costs about the same. The weight gradients go by gate rows (whole-K GEMMs); the bias sums
        by time rows (contiguous memory: column slices of the N x G dgates ran 4-8x slower), one
        partial sum per task, added in task order by _finish_layer; the input table's scatter is one
        task over all rows (one pass over contiguous memory: 1.2 ms against 5.3 ms in 8 column slices,
        2x256 B64 T100). Gate-wide gradients go to the layer's scratch (lw.gw_hh, gw_ih, parts) in the
        pass's gate order; _finish_layer puts them into PyTorch's order."""
        m, lw, N = self.m, self.w.layers[k], self.N
        dgx = lw.dgates.reshape(N, -1)
        dgh = (lw.dgh if m.cell == "gru" else lw.dgates).reshape(N, -1)
        hs = lw.hs[:self.T].reshape(N, -1)
        count = len(self.rows)
        gate_rows = split(dgx.shape[1], count, align=16)
        dec_cols = split(m.hidden_size, count) if top is not None else []
        inp = self._input(k - 1) if k > 0 else None
        parts_hh, parts_ih = self._bias_parts(k)

        def task(j: int) -> None:
            if j < len(gate_rows):
                a, b = gate_rows[j]
                matmul(dgh[:, a:b].T, hs, lw.gw_hh[a:b])
                if k > 0:
                    matmul(dgx[:, a:b].T, inp, lw.gw_ih[a:b])
            r0, r1 = self.rows[j]
            head.column_sums(parts_hh[j], dgh[r0:r1])
            if parts_ih is not None:
                head.column_sums(parts_ih[j], dgx[r0:r1])
            if k > 0:
                self._grad_below(k, r0, r1)
            elif j == count - 1:
                self._scatter(self.w.dtable, lw.dgates)
            if j < len(dec_cols):
                a, b = dec_cols[j]
                matmul(self.w.logits.T, top[:, a:b], self.g["decoder.weight"][:, a:b])
                if j == 0:
                    head.column_sums(self.g["decoder.bias"], self.w.logits)

        return [lambda j=j: task(j) for j in range(count)]

    def _bias_parts(self, k: int):
        """Per task partial bias sums (tasks, G) of layer k: of dgh, and for GRU also of dgates (its
        two biases differ); made once per workspace and task count."""
        lw, count = self.w.layers[k], len(self.rows)
        if lw.parts is None or lw.parts[0].shape[0] != count:
            z = lambda: np.zeros((count, lw.dgates.shape[2]), lw.dgates.dtype)  # noqa: E731
            lw.parts = (z(), z() if self.m.cell == "gru" else None)
        return lw.parts

    def _scatter(self, dtable, dgates) -> None:
        dtable[:] = 0
        head.scatter_add_rows(dtable, dgates, self.ids)

    def _grad_below(self, k: int, r0: int, r1: int) -> None:
        N = self.N
        below = self.w.layers[k - 1].dhs.reshape(N, -1)[r0:r1]
        matmul(self.w.layers[k].dgates.reshape(N, -1)[r0:r1], self.prep.w_ih[k], below)
        if self.masks is not None:
            below *= self.masks[k - 1].reshape(N, -1)[r0:r1]

    def _finish_layer(self, k: int, me: int, team: Team) -> None:
        """After layer k's gradient phase, thread me of the team: its share of the gate rows of the
        gate-wide gradients, put into PyTorch's gate order, with the bias sums of those rows (the tasks'
        partial sums added in task order, element by element). Pure copies and adds, so any split gives
        the same bits; on thread 0 alone they were a serial part of every layer (G x H floats a matrix).
        Thread 0 also makes layer 0's input gradients from the input table's (V x G)."""
        m, lw, g, prep = self.m, self.w.layers[k], self.g, self.prep
        a, b = team.panels(me, lw.gw_hh.shape[0])  # this thread's gate rows (none when G < team size)
        rows = slice(a, b) if prep.inv is None else prep.inv[a:b]  # the pass's rows behind rows a:b

        def summed(parts):  # a sum fixed by the shapes: task order
            out = np.array(parts[0][rows])
            for p in parts[1:]:
                out += p[rows]
            return out

        parts_hh, parts_ih = lw.parts
        bias_hh = summed(parts_hh)
        g[f"rnn.weight_hh_l{k}"][a:b] = lw.gw_hh[rows]
        g[f"rnn.bias_hh_l{k}"][a:b] = bias_hh
        g[f"rnn.bias_ih_l{k}"][a:b] = summed(parts_ih) if m.cell == "gru" else bias_hh
        if k > 0:
            g[f"rnn.weight_ih_l{k}"][a:b] = lw.gw_ih[rows]
            return
        if me != 0:
            return
        P = m.params
        dtable = self.w.dtable if prep.inv is None else self.w.dtable[:, prep.inv]
        if m.shape.embedding_size > 0:
            matmul(dtable.T, P["encoder.weight"], g["rnn.weight_ih_l0"])
            matmul(dtable, P["rnn.weight_ih_l0"], g["encoder.weight"])
        else:
            g["rnn.weight_ih_l0"][:] = dtable.T

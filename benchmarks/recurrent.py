"""Where one training step spends its time, per stream group on one core: the recurrent T loops (fused
with the gate arithmetic, and the unfused packed loops: panel product, then the gate kernel) against the
whole forward_backward of that group, for the bench.py training rows.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/recurrent.py [--reps 20]

Each group runs on its own core during training (model._run), so one core with single-threaded BLAS is
what one group sees. GFLOP/s counts the recurrent product only (2*B*H*G per step, G = gates*H). Run it
alone on the machine.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

from _common import machine_header, print_header  # also puts charrnn on the path

from charrnn.engine.kernels import gemm, gru, gru_fused, lstm, lstm_fused, rnn
from charrnn.engine.kernels.blas import single_threaded_blas
from charrnn.engine.model import Model
from charrnn.engine.params import Shape

# (cell, H, rows per group, T): bench.py's training rows, each group holding half of B
SIZES = [("lstm", 128, 25, 50), ("lstm", 256, 32, 100), ("lstm", 512, 32, 100), ("gru", 256, 32, 100),
         ("rnn", 256, 32, 100)]


def _solo(wp):
    """The team arguments of a fused T loop run by one thread: every panel, no barrier to wait at."""
    from charrnn.engine.kernels.team import make_flags
    return 0, wp.shape[0], make_flags(1), 0, 1


def best_of(fn, reps: int, reset=()) -> float:
    """Fastest of reps calls, after one untimed call (compiles, warms caches). `reset` arrays (the carried
    gradients a backward loop reads and overwrites) are zeroed, untimed, before each call."""
    fn()
    times = []
    for _ in range(reps):
        for a in reset:
            a[...] = 0
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def loops(cell: str, H: int, B: int, T: int, reps: int) -> dict:
    """Seconds of each recurrent T loop (one layer) on random data, best of reps."""
    G = {"lstm": 4, "gru": 3, "rnn": 1}[cell] * H
    rng = np.random.default_rng(0)
    w_hh = (rng.uniform(-0.08, 0.08, (G, H))).astype(np.float32)
    f32 = lambda *s: np.zeros(s, np.float32)  # noqa: E731
    xproj = rng.standard_normal((T, B, G)).astype(np.float32)
    hs, gates, hh, dgates = f32(T + 1, B, H), f32(T, B, G), f32(B, gemm.padded(G)), f32(T, B, G)
    dh, dhh = f32(B, H), f32(B, gemm.padded(H))
    dhs = rng.standard_normal((T, B, H)).astype(np.float32) * 0.01
    carried = (dh,)
    fwd, bwd = gemm.pack(np.ascontiguousarray(w_hh.T)), gemm.pack(w_hh)
    if cell == "gru":
        hn, dgh, b_hn = f32(T, B, H), f32(T, B, G), f32(H)
        perm = gru_fused.interleaved_order(H)
        fwd_il, bwd_il = gru_fused.pack_forward(w_hh[perm]), gemm.pack(w_hh[perm])
        runs = {"fwd fused": lambda: gru_fused.gru_forward_fused(hs, gates, hn, xproj, fwd_il, b_hn, *_solo(fwd_il)),
                "bwd fused": lambda: gru_fused.gru_backward_fused(dgates, dgh, dh, dhs, hs, gates, hn, bwd_il, *_solo(bwd_il)),
                "fwd unfused": lambda: gru.gru_forward_packed(hs, gates, hn, hh, xproj, fwd, b_hn),
                "bwd unfused": lambda: gru.gru_backward_packed(dgates, dgh, dh, dhs, hs, gates, hn, bwd, dhh)}
    elif cell == "rnn":
        runs = {"fwd fused": lambda: rnn.rnn_forward_fused(hs, xproj, fwd, *_solo(fwd)),
                "bwd fused": lambda: rnn.rnn_backward_fused(dgates, dhs, hs, bwd, *_solo(bwd)),
                "fwd unfused": lambda: rnn.rnn_forward_packed(hs, hh, xproj, fwd),
                "bwd unfused": lambda: rnn.rnn_backward_packed(dgates, dh, dhs, hs, bwd, dhh)}
    else:
        cs, dc = f32(T + 1, B, H), f32(B, H)
        carried = (dh, dc)
        perm = lstm_fused.interleaved_order(H)
        fwd_il, bwd_il = gemm.pack(np.ascontiguousarray(w_hh[perm].T)), gemm.pack(w_hh[perm])
        runs = {"fwd fused": lambda: lstm_fused.lstm_forward_fused(hs, cs, gates, xproj, fwd_il, *_solo(fwd_il)),
                "bwd fused": lambda: lstm_fused.lstm_backward_fused(dgates, dc, dhs, cs, gates, bwd_il, *_solo(bwd_il)),
                "fwd unfused": lambda: lstm.lstm_forward_packed(hs, cs, gates, hh, xproj, fwd),
                "bwd unfused": lambda: lstm.lstm_backward_packed(dgates, dh, dc, dhs, cs, gates, bwd, dhh)}
    return {name: best_of(fn, reps, carried) for name, fn in runs.items()}


def group_step(cell: str, H: int, B: int, T: int, reps: int) -> float:
    """One group's whole forward_backward (2 layers, vocab 65, dropout 0), one core: a pass over 2B
    streams (two groups of B) with CHARRNN_THREADS=1 runs both groups one after the other; half of it."""
    os.environ["CHARRNN_THREADS"] = "1"
    m = Model(Shape(cell, 65, H, 2))
    rng = np.random.default_rng(0)
    m.params.flat[:] = rng.uniform(-0.08, 0.08, m.params.flat.size)
    x, y = rng.integers(0, 65, (2 * B, T)), rng.integers(0, 65, (2 * B, T))
    g = m.params.zeros_like()
    state = m.zero_state(2 * B)
    return best_of(lambda: m.forward_backward(x, y, state, g), reps) / 2


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=20)
    args = ap.parse_args(argv)
    print_header(machine_header(), f"recurrent loops, one group on one core (block {gemm.MR}x{gemm.NR})")
    print(f"{'cell':<5} {'H':>4} {'rows':>4} {'T':>4} | {'loop':<12} {'ms':>8} {'GFLOP/s':>8}")
    with single_threaded_blas():
        for cell, H, B, T in SIZES:
            label = f"{cell:<5} {H:>4} {B:>4} {T:>4}"
            flops = 2.0 * B * H * {"lstm": 4, "gru": 3, "rnn": 1}[cell] * H * T
            t = loops(cell, H, B, T, args.reps)
            step = group_step(cell, H, B, T, max(3, args.reps // 4))
            for name, sec in t.items():
                print(f"{label} | {name:<12} {sec * 1e3:8.2f} {flops / sec / 1e9:8.1f}")
            # one group's step runs one forward and one backward loop per layer (2 layers); the model
            # takes the first pair of loops listed (the fused ones where there are)
            rec = 2 * sum(list(t.values())[:2])
            print(f"{label} | whole group step (2 layers) {step * 1e3:.1f} ms; its recurrent loops "
                  f"{rec * 1e3:.1f} ms = {rec / step:.0%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

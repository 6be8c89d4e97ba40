"""Where one LSTM training step spends its time, per stream group on one core: the recurrent T loops
(fused with the gate arithmetic, and the unfused packed loops: panel product, then the gate kernel)
against the whole forward_backward of that group, for the bench.py row sizes.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/recurrent.py [--reps 20]

Each group runs on its own core during training (model._run), so one core with single-threaded BLAS is
what one group sees. GFLOP/s counts the recurrent product only (2*B*H*4H per step); "share" is the
fused loops' part of the whole group step. Run it alone on the machine.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

from _common import machine_header, print_header  # also puts charrnn on the path

from charrnn.kernels import gemm, lstm, lstm_fused
from charrnn.kernels.blas import single_threaded_blas
from charrnn.model import Model
from charrnn.params import Shape

SIZES = [(128, 25, 50), (256, 32, 100), (512, 32, 100)]  # (H, rows per group, T): bench.py's rows


def best_of(fn, reps: int) -> float:
    fn()  # compile / warm caches
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def loops(H: int, B: int, T: int, reps: int) -> dict:
    G = 4 * H
    rng = np.random.default_rng(0)
    w_hh = (rng.uniform(-0.08, 0.08, (G, H))).astype(np.float32)
    perm = lstm_fused.interleaved_order(H)
    f32 = lambda *s: np.zeros(s, np.float32)  # noqa: E731
    xproj = rng.standard_normal((T, B, G)).astype(np.float32)
    hs, cs, gates, hh = f32(T + 1, B, H), f32(T + 1, B, H), f32(T, B, G), f32(B, gemm.padded(G))
    dgates, dc, dh, dhh = f32(T, B, G), f32(B, H), f32(B, H), f32(B, gemm.padded(H))
    dhs = rng.standard_normal((T, B, H)).astype(np.float32) * 0.01
    fwd_il, bwd_il = gemm.pack(np.ascontiguousarray(w_hh[perm].T)), gemm.pack(w_hh[perm])
    fwd, bwd = gemm.pack(np.ascontiguousarray(w_hh.T)), gemm.pack(w_hh)
    out = {
        "fwd fused": best_of(lambda: lstm_fused.lstm_forward_fused(hs, cs, gates, xproj, fwd_il), reps),
        "bwd fused": best_of(lambda: lstm_fused.lstm_backward_fused(dgates, dc, dhs.copy(), cs, gates, bwd_il), reps),
        "fwd unfused": best_of(lambda: lstm.lstm_forward_packed(hs, cs, gates, hh, xproj, fwd), reps),
        "bwd unfused": best_of(lambda: lstm.lstm_backward_packed(dgates, dh, dc, dhs.copy(), cs, gates, bwd, dhh), reps),
    }
    return out


def group_step(H: int, B: int, T: int, reps: int) -> float:
    """One group's whole forward_backward (2 layers, vocab 65, dropout 0), one core: a pass over 2B
    streams (two groups of B) with CHARRNN_THREADS=1 runs both groups one after the other; half of it."""
    os.environ["CHARRNN_THREADS"] = "1"
    m = Model(Shape("lstm", 65, H, 2))
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
    print(f"{'H':>4} {'rows':>4} {'T':>4} | {'loop':<12} {'ms':>8} {'GFLOP/s':>8} | step of 2 layers")
    with single_threaded_blas():
        for H, B, T in SIZES:
            flops = 2.0 * B * H * 4 * H * T
            t = loops(H, B, T, args.reps)
            # one group's step holds one forward and one backward loop per layer (2 layers)
            step = group_step(H, B, T, max(3, args.reps // 4))
            fused = 2 * (t["fwd fused"] + t["bwd fused"])
            for name, sec in t.items():
                print(f"{H:>4} {B:>4} {T:>4} | {name:<12} {sec * 1e3:8.2f} {flops / sec / 1e9:8.1f} |")
            print(f"{H:>4} {B:>4} {T:>4} | whole group step {step * 1e3:.1f} ms; fused recurrent loops "
                  f"{fused * 1e3:.1f} ms = {fused / step:.0%} of it")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

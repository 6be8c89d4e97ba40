#!/usr/bin/env python
"""What a fixed split of the weight-gradient GEMM costs on one thread (single-threaded OpenBLAS).

dW (G, H) = dgates^T (G, N) @ hs (N, H), N = T*B/2 rows of one stream group. A thread-count-independent
decomposition cuts it into C tasks fixed by the shapes, either
  gate rows: task j computes dW[rows_j] = dgates[:, rows_j]^T @ hs (OpenBLAS packs all of hs again
             in every task), or
  time rows: task j computes P_j = dgates[rows_j]^T @ hs[rows_j] over its own N/C rows (each operand
             packed once in all), and the C partial products are then added in task order (a sum fixed
             by the shapes, split over output rows).
Printed: ms per GEMM (best of --reps) for one call and for each split, on this thread. Both splits give
the same bits for any thread count; neither gives the bits of one call.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402
from _common import machine_header, print_header, print_table  # noqa: E402


def interleaved(fns, reps: int) -> list[float]:
    """Best time of each function over `reps` rounds, each round running every function once in turn
    (so a slow spell of the machine hits them all)."""
    best = [float("inf")] * len(fns)
    for fn in fns:
        fn()
    for _ in range(reps):
        for i, fn in enumerate(fns):
            t = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - t)
    return best


def _gate_rows(dg, hs, out, gr):
    def run():
        for r0, r1 in gr:
            np.matmul(dg[:, r0:r1].T, hs, out=out[r0:r1])
    return run


def _time_rows(dg, hs, out, tr, gr):
    parts = np.empty((len(tr), out.shape[0], out.shape[1]), np.float32)

    def run():
        for j, (r0, r1) in enumerate(tr):
            np.matmul(dg[r0:r1].T, hs[r0:r1], out=parts[j])
        for r0, r1 in gr:  # the fixed-order sum, in output-row tasks
            np.copyto(out[r0:r1], parts[0, r0:r1])
            for p in parts[1:]:
                out[r0:r1] += p[r0:r1]
    return run


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shapes", default="3200x1024x256,3200x2048x512", help="NxGxH, comma-separated")
    p.add_argument("--tasks", default="2,4,8")
    p.add_argument("--reps", type=int, default=7)
    a = p.parse_args(argv)
    from charrnn.engine.kernels.blas import single_threaded_blas, warm_up_thread
    from charrnn.engine.team import split
    print_header(machine_header(None), "gemm_split: the weight-gradient GEMM cut into fixed tasks, one thread")
    warm_up_thread()  # blas.py: OpenBLAS runs some GEMMs slowly in a thread that has not made a wide one
    rng = np.random.default_rng(0)
    rows = []
    with single_threaded_blas():
        for shape in a.shapes.split(","):
            N, G, H = map(int, shape.split("x"))
            dg = rng.standard_normal((N, G)).astype(np.float32)
            hs = rng.standard_normal((N, H)).astype(np.float32)
            out = np.empty((G, H), np.float32)
            variants = [("one call", 1, lambda dg=dg, hs=hs, out=out: np.matmul(dg.T, hs, out=out))]
            for c in map(int, a.tasks.split(",")):
                variants += [("gate rows", c, _gate_rows(dg, hs, out, split(G, c, 16))),
                             ("time rows + sum", c, _time_rows(dg, hs, out, split(N, c), split(G, c, 16)))]
            times = interleaved([fn for _, _, fn in variants], a.reps)
            flop = 2.0 * N * G * H
            for (name, c, _), t in zip(variants, times):
                rows.append([shape, name, str(c), f"{t * 1e3:.1f}", f"{flop / t / 1e9:.1f}", f"{t / times[0]:.3f}"])
    print_table(["N x G x H", "split", "tasks", "ms", "GFLOP/s", "vs one call"], rows, right={2, 3, 4, 5})
    return 0


if __name__ == "__main__":
    sys.exit(main())

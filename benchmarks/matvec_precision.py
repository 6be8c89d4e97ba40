"""Would a float16/bfloat16 copy of the weights make sampling faster? A side-by-side measurement.

Sampling is bound by the matrix-vector products over the recurrent weights (charrnn.engine.kernels.sampler).
Halving the bytes read per character is the one lever left once the products run from L2, so this
times the sampler's 4-row product (float32 accumulation, the project's fastmath policy) over float32,
float16 and bfloat16 copies of the same rows, alternating the three in every round, one thread:

    python benchmarks/matvec_precision.py            # rows of an LSTM part, 2x256: 1024, 1536, 2048, 3072
    python benchmarks/matvec_precision.py --rounds 15

float16 -> float32 goes through LLVM's fpext (vcvtph2ps with F16C); bfloat16 -> float32 is a 16-bit
shift. Relative error is max |y - y64| / max |y64| against a float64 product of the float32 rows.
Measured here (2026-11-24, 11 rounds): 1536 rows (one part of an LSTM 2x256) 18.4 us in float16
(768 KB) vs 23.0 us in float32 (1.5 MB), 1024 rows 13.2 vs 15.0 us: ~1.25x at best, because the
conversion, not the memory, becomes the bound. Not built into the sampler: too little gain for
sampling from a rounded model.
"""
from __future__ import annotations

import argparse
import time

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from _common import ROOT  # (importing it puts the checkout on sys.path when run as a script)
from charrnn.engine.kernels.jit import FASTMATH


@intrinsic
def _f16(typingctx, u):
    if u != types.uint16:
        return None

    def codegen(context, builder, sig, args):
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())
    return types.float32(u), codegen


@intrinsic
def _bf16(typingctx, u):
    if u != types.uint16:
        return None

    def codegen(context, builder, sig, args):
        wide = builder.shl(builder.zext(args[0], ir.IntType(32)), ir.Constant(ir.IntType(32), 16))
        return builder.bitcast(wide, ir.FloatType())
    return types.float32(u), codegen


@numba.njit(fastmath=set(FASTMATH))
def _as_f32(w):
    return w


def _make(conv):
    @numba.njit(fastmath=set(FASTMATH))
    def matvec(out, W, x, reps):
        """out = W @ x, reps times; 4 rows share each load of x (as charrnn.engine.kernels.sampler._matvec)."""
        rows, cols = W.shape
        for _ in range(reps):
            r = 0
            while r + 4 <= rows:
                r0, r1, r2, r3 = W[r], W[r + 1], W[r + 2], W[r + 3]
                a0 = a1 = a2 = a3 = np.float32(0.0)
                for j in range(cols):
                    xj = x[j]
                    a0 += conv(r0[j]) * xj
                    a1 += conv(r1[j]) * xj
                    a2 += conv(r2[j]) * xj
                    a3 += conv(r3[j]) * xj
                out[r], out[r + 1], out[r + 2], out[r + 3] = a0, a1, a2, a3
                r += 4
    return matvec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", default="1024,1536,2048,3072", help="row counts (256 columns each)")
    ap.add_argument("--rounds", type=int, default=9)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    x = rng.standard_normal(256).astype(np.float32)
    kinds = {"float32": _make(_as_f32), "float16": _make(_f16), "bfloat16": _make(_bf16)}
    print(f"charrnn at {ROOT}; 4-row matrix-vector product, 256 columns, one thread, median of {args.rounds} rounds")
    print(f"{'rows':>5}  {'kind':8}  {'KB':>5}  {'us (median)':>11}  {'rel. error':>10}")
    for rows in (int(r) for r in args.rows.split(",")):
        w32 = (rng.standard_normal((rows, 256)) * 0.1).astype(np.float32)
        bits = w32.view(np.uint32).astype(np.uint64)
        copies = {"float32": w32, "float16": w32.astype(np.float16).view(np.uint16),
                  # bfloat16: round to nearest even on the top 16 bits
                  "bfloat16": ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)}
        exact = w32.astype(np.float64) @ x.astype(np.float64)
        out = np.zeros(rows, np.float32)
        reps = max(1, 60_000_000 // w32.nbytes)
        times: dict[str, list[float]] = {k: [] for k in kinds}
        err = {}
        for k, f in kinds.items():
            f(out, copies[k], x, 1)
            err[k] = float(np.abs(out - exact).max() / np.abs(exact).max())
        for _ in range(args.rounds):
            for k, f in kinds.items():
                t = time.perf_counter()
                f(out, copies[k], x, reps)
                times[k].append((time.perf_counter() - t) / reps)
        for k in kinds:
            print(f"{rows:5d}  {k:8}  {copies[k].nbytes // 1024:5d}  {np.median(times[k]) * 1e6:11.1f}  "
                  f"{err[k]:10.1e}")


if __name__ == "__main__":
    main()

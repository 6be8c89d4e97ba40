#!/usr/bin/env python
"""What this machine gives N cores of work that shares nothing: the same one-thread job run alone, then as
N independent processes at once, alternating rounds. The bar for any "1 -> N threads" figure measured here.

    python benchmarks/host_pair.py                    # 1 and 2 cores, 6 rounds
    python benchmarks/host_pair.py --cores 1,2,4 --rounds 4 --seconds 2

Two jobs, each about --seconds long:
- `fma`: a chain of fused multiply-adds on 16 floats that never leave the core (registers or L1): it
  slows with N only when the cores themselves run slower together (a lower all-core clock, a hypervisor
  taking time from a vCPU, SMT siblings sold as cores).
- `sgemm`: numpy's OpenBLAS on one thread at the shape of a LSTM 2x256 B64 T100 stream group's input GEMM
  (3200 x 256 . 256 x 1024, charrnn's own matmul as a pass calls it): adds the caches and memory the cores
  share.
The copies are separate processes started together (each warms up, then waits for the word to go), not
pinned to cores (charrnn's threads are not either). The rate of N copies is the sum of their rates; the
ratio printed is that over one copy's, per round, and its median. `versus.py --independent` does the same
with charrnn's whole training step. Nothing is asserted; run it on a quiet machine (on a shared one through
the benchmark lock, see benchmarks/README.md).
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import queue
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_header, note_load_at_end, print_header, print_table, save_json  # noqa: E402

GEMM = (3200, 256, 1024)  # LSTM 2x256 B64 T100, one group of 32 streams: (T * B/2) x H . H x 4H
LANES = 16


def _fma_job():
    """rate(reps): GFLOP/s of reps million steps of the chain (a dependent FMA per lane: latency-bound)."""
    import numpy as np

    from charrnn.engine.kernels.jit import kernel

    @kernel
    def chain(n, a, b):
        for _ in range(n):
            for j in range(LANES):
                a[j] = a[j] * b[j] + np.float32(1e-7)
        return a[0]

    a, b = np.ones(LANES, np.float32), np.full(LANES, 0.999999, np.float32)
    chain(10, a, b)

    def rate(reps: int) -> float:
        t = time.perf_counter()
        chain(reps * 1_000_000, a, b)
        return reps * FLOPS_PER_REP["fma"] / (time.perf_counter() - t) / 1e9
    return rate


def _sgemm_job():
    """rate(reps): bench.py's one-thread rate of charrnn's matmul, at GEMM."""
    from bench import charrnn_blas_rate
    return lambda reps: charrnn_blas_rate(*GEMM, reps)


JOBS = {"fma": _fma_job, "sgemm": _sgemm_job}
FLOPS_PER_REP = {"fma": 2 * LANES * 1_000_000, "sgemm": 2 * GEMM[0] * GEMM[1] * GEMM[2]}


def _copy(job: str, reps: int, ready, go, out) -> None:
    rate = JOBS[job]()
    rate(max(1, reps // 10))  # warm caches and clocks before the timed part
    ready.put(1)
    go.wait()
    out.put(rate(reps))


def measure(ctx, job: str, copies: int, reps: int) -> float:
    """GFLOP/s summed over `copies` processes running `reps` of the job at once."""
    ready, out, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=_copy, args=(job, reps, ready, go, out)) for _ in range(copies)]
    for p in procs:
        p.start()
    for _ in procs:
        _get(ready, procs, job)
    go.set()
    rates = [_get(out, procs, job) for _ in procs]
    for p in procs:
        p.join()
    return sum(rates)


def _get(q, procs, job: str):
    """The next item a copy puts on q; if a copy dies first, the others are stopped and the run ends."""
    while True:
        try:
            return q.get(timeout=1)
        except queue.Empty:
            dead = [p.exitcode for p in procs if p.exitcode]
            if dead:
                for p in procs:
                    p.kill()
                raise SystemExit(f"a {job} copy failed (exit {dead[0]})") from None


def calibrate(ctx, job: str, seconds: float) -> int:
    """Reps of the job that take one copy about `seconds`, from a short run of it alone."""
    rate = measure(ctx, job, 1, 5 if job == "fma" else 10)  # GFLOP/s
    return max(1, round(seconds * rate * 1e9 / FLOPS_PER_REP[job]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cores", default="1,2", help="comma list of copy counts, the first the baseline (default 1,2)")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--seconds", type=float, default=1.0, help="length of one copy's timed job")
    p.add_argument("--jobs", default="fma,sgemm")
    p.add_argument("--json", metavar="FILE")
    a = p.parse_args(argv)
    try:
        counts = [int(c) for c in a.cores.split(",")]
        jobs = a.jobs.split(",")
    except ValueError:
        p.error("--cores takes a comma list of positive integers")
    if min(counts) < 1 or len(counts) < 2 or any(j not in JOBS for j in jobs):
        p.error(f"--cores needs two or more positive counts; --jobs is a comma list of {','.join(JOBS)}")
    os.environ["OPENBLAS_NUM_THREADS"] = "1"  # the copies' numpy starts with one BLAS thread
    ctx = mp.get_context("spawn")
    header = machine_header()
    header.update({"copies": counts, "rounds": a.rounds, "gemm": GEMM})
    print_header(header, "host_pair: one-thread jobs alone and as independent processes at once")
    rows, results = [], {}
    for job in jobs:
        reps = calibrate(ctx, job, a.seconds)
        got = {c: [] for c in counts}
        for r in range(a.rounds):
            for c in (counts if r % 2 == 0 else counts[::-1]):
                got[c].append(measure(ctx, job, c, reps))
            print(f"  {job} round {r}: " + "  ".join(f"{c} x {got[c][-1]:.1f}" for c in counts) + " GFLOP/s",
                  flush=True)
        base = counts[0]
        for c in counts[1:]:
            ratios = [x / y for x, y in zip(got[c], got[base])]
            rows.append([job, f"{c}/{base}", f"{statistics.median(ratios):.3f}", " ".join(f"{x:.2f}" for x in ratios),
                         f"{max(got[c]) / max(got[base]):.3f}", f"{statistics.median(got[base]):.1f}",
                         f"{statistics.median(got[c]):.1f}"])
        results[job] = {"reps": reps, "gflops": got}
    print()
    print_table(["job", "copies", "ratio (median)", "per round", "best/best", "GFLOP/s base", "GFLOP/s copies"], rows)
    print("ratio: the copies' summed rate over the baseline's, per round; an ideal machine gives the copy count.")
    note_load_at_end(header)
    save_json({"header": header, "results": results}, a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Sampling on N threads: what the thread-count-independent decomposition costs, and a projection.

Measures, in one process, alternating the sides round by round (the order rotates):
  * one stream, LSTM 2x256 and 2x512, charrnn on 1 and 2 threads (hidden units split) beside PyTorch's
    one-stream Python loop (shared/bench/torch_sample_bench.py's loop) on 1 and 2 threads;
  * -N 8 and -N 32 streams at 2x256: charrnn on 1 thread, 2 threads splitting streams, 2 threads
    splitting units, beside PyTorch's loop over a batch of N streams on 1 and 2 threads;
  * the inputs of the projection: one thread's weight-streaming rate with the weights in L2, in L3 and
    in DRAM (bytes per character / time per character), the serial part of a step (decoder + draw,
    every thread does it), and the per-step barrier cost (a model with almost no work per step on 1 and 2
    threads; 3, 4 and 8 threads oversubscribe this machine and measure its scheduler, shown as such).
Then prints a projection for 4-64 cores (labelled a projection; the model is written out in the output and
in benchmarks/README.md). Asserts nothing. Run it on a quiet machine; unset OPENBLAS_CORETYPE/L2_SIZE.

    python benchmarks/sample_scaling.py [--rounds 3] [--quick] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from charrnn.model import Model  # noqa: E402
from charrnn.multistream import Sampler  # noqa: E402
from charrnn.params import Shape, init_params  # noqa: E402

V = 65
TEMPERATURE = 0.8
L2_BYTES = 512 << 10  # Zen 3: 512 KB L2 per core (lscpu: 1 MiB over 2 instances)


def make_model(cell: str, hidden: int, layers: int) -> Model:
    m = Model(Shape(cell, V, hidden, layers))
    init_params(m.params, np.random.default_rng(0))
    return m


def charrnn_rate(model, streams: int, threads: int, split: str | None, n: int, seed: int) -> float:
    """Characters per second over all streams of one run(n) call after a reset (sampler built before)."""
    sm = Sampler(model, streams, threads=threads, split=split)
    sm.reset(None, seed=seed)
    sm.run(20, temperature=TEMPERATURE)  # warm the caches and the pool threads
    t = time.perf_counter()
    sm.run(n, temperature=TEMPERATURE)
    return streams * n / (time.perf_counter() - t)


class TorchSide:
    """PyTorch's sampling loop (torch_sample_bench.py) over a batch of N streams."""

    def __init__(self, torch, hidden: int, layers: int):
        nn = torch.nn
        torch.manual_seed(0)
        self.torch = torch
        self.mods = (nn.Embedding(V, V), nn.LSTM(V, hidden, layers), nn.Linear(hidden, V))

    def rate(self, streams: int, threads: int, n: int) -> float:
        torch = self.torch
        torch.set_num_threads(threads)
        emb, rnn, out = self.mods
        with torch.inference_mode():
            x = torch.zeros((1, streams), dtype=torch.long)
            h = None
            for i in range(n + 5):
                if i == 5:
                    t = time.perf_counter()
                y, h = rnn(emb(x), h)
                p = torch.softmax(out(y[0]) / TEMPERATURE, -1)
                x = torch.multinomial(p, 1).view(1, streams)
        return streams * n / (time.perf_counter() - t)


def rounds_of(sides: dict, rounds: int, settle: float) -> dict:
    """{name: [rate per round]}: every side once per round, the order rotating."""
    names = list(sides)
    got = {k: [] for k in names}
    for r in range(rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            time.sleep(settle)
            got[name].append(sides[name](r))
    return got


def med(xs):
    return float(np.median(xs)) if xs else None


def measure_rows(torch, args) -> list[dict]:
    rows = []
    configs = [(256, 1, 2000, 300), (512, 1, 600, 100), (256, 8, 400, 100), (256, 32, 200, 60)]
    if args.quick:
        configs = [(256, 1, 300, 30), (256, 8, 60, 20)]
    for hidden, N, n, n_t in configs:
        model = make_model("lstm", hidden, 2)
        sides = {"charrnn 1 thr": lambda r: charrnn_rate(model, N, 1, "units", n, r)}
        if N == 1:
            sides["charrnn 2 thr"] = lambda r: charrnn_rate(model, N, 2, "units", n, r)
        else:
            sides["charrnn 2 thr streams"] = lambda r: charrnn_rate(model, N, 2, "streams", n, r)
            sides["charrnn 2 thr units"] = lambda r: charrnn_rate(model, N, 2, "units", n, r)
            sides["charrnn auto"] = lambda r: charrnn_rate(model, N, None, None, n, r)
        if torch is not None:
            ts = TorchSide(torch, hidden, 2)
            ts.rate(N, 2, 5)
            sides["torch 1 thr"] = lambda r: ts.rate(N, 1, n_t)
            sides["torch 2 thr"] = lambda r: ts.rate(N, 2, n_t)
        got = rounds_of(sides, args.rounds, args.settle)
        row = {"model": f"LSTM 2x{hidden}", "streams": N, "rounds": got,
               "median": {k: med(v) for k, v in got.items()},
               "auto_plan": Sampler(model, N).plan(n, N)}
        rows.append(row)
        print(f"  LSTM 2x{hidden} N={N}: " + ", ".join(f"{k} {v:,.0f}" for k, v in row["median"].items())
              + f" chars/s (auto plan {row['auto_plan']})", flush=True)
    return rows


def step_time(model, threads: int, n: int, reps: int) -> float:
    """Best seconds per character of one stream on `threads` threads (units split)."""
    sm = Sampler(model, 1, threads=threads, split="units")
    sm.reset(None, seed=1)
    sm.run(20)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        sm.run(n)
        best = min(best, (time.perf_counter() - t) / n)
    return best


def measure_inputs(args) -> dict:
    """Per-thread streaming rate by where the weights live, the serial part, the barrier cost."""
    reps = 2 if args.quick else 5
    res = {}
    # weights read per character on one thread: L2-resident, L3-resident, DRAM-resident (> 32 MB L3)
    for name, (cell, H, L, n) in {"L2": ("lstm", 96, 1, 4000), "L3": ("lstm", 256, 2, 1500),
                                  "DRAM": ("lstm", 1280, 2, 100)}.items():
        if args.quick and name == "DRAM":
            continue
        m = make_model(cell, H, L)
        sm = Sampler(m, 1)
        t = step_time(m, 1, n, reps)
        res[f"bytes_{name}"] = sm.step_bytes
        res[f"rate_{name}_GBps"] = sm.step_bytes / t / 1e9
        print(f"  one thread, {cell} {L}x{H} ({sm.step_bytes / 2**20:.2f} MB/char, {name}): "
              f"{t * 1e6:.1f} us/char = {sm.step_bytes / t / 1e9:.1f} GB/s", flush=True)
    # the serial part: a 1x8 model (parts of 4 units, nothing to stream): decoder (65x8) + draw + loop
    tiny = make_model("lstm", 8, 1)
    res["serial_tiny_us"] = step_time(tiny, 1, 20000, reps) * 1e6
    # the barrier: 2 layers of 8 units, per character 2 barriers; T threads minus 1 thread
    tiny2 = make_model("lstm", 8, 2)
    t1 = step_time(tiny2, 1, 20000, reps)
    res["tiny2_us"] = {1: t1 * 1e6}
    for T in (2, 3, 4, 8):
        if args.quick and T > 2:
            break
        tT = step_time(tiny2, T, 20000 if T <= 2 else 300, reps)
        res["tiny2_us"][T] = tT * 1e6
    res["barrier_us"] = {T: (res["tiny2_us"][T] - res["tiny2_us"][1]) / 2 for T in res["tiny2_us"] if T > 1}
    print(f"  serial part (LSTM 1x8, decoder + draw + loop): {res['serial_tiny_us']:.2f} us/char; "
          + "per-barrier cost (2 per char at 2x8): "
          + ", ".join(f"{T} thr {b:.2f} us" + (" (oversubscribed: the scheduler)" if T > 2 else "")
                      for T, b in res["barrier_us"].items()), flush=True)
    return res


def project(inputs: dict, hidden: int, layers: int) -> list[dict]:
    """Projected chars/s for one stream at T cores (the model of benchmarks/README.md)."""
    H, L, G = hidden, layers, 4 * hidden
    w_rec = G * H * (2 * L - 1) * 4  # recurrent weight bytes per character, split over the team
    w_dec = V * H * 4  # the decoder, read by every thread
    b2 = inputs["barrier_us"][2]
    out = []
    for T in (1, 2, 4, 8, 16, 32, 64):
        parts = max(2, -(-H // 8))
        Te = min(T, parts)
        w = w_rec / Te + w_dec
        rate = inputs["rate_L2_GBps"] if w <= 0.8 * L2_BYTES else inputs["rate_L3_GBps"]
        t_stream = w / (rate * 1e9) * 1e6
        barrier = 0.0 if Te == 1 else L * b2 * max(1.0, (Te - 1) / 1)
        t = t_stream + inputs["serial_tiny_us"] + barrier
        out.append({"cores": T, "team": Te, "bytes_per_thread": w, "stream_us": t_stream, "barrier_us": barrier,
                    "step_us": t, "chars_per_s": 1e6 / t})
    base = out[0]["step_us"]
    for o in out:
        o["efficiency"] = base / (o["step_us"] * o["cores"])
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--settle", type=float, default=0.2)
    p.add_argument("--quick", action="store_true", help="smoke test: small rows, 1 round")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args(argv)
    if args.quick:
        args.rounds = 1
    torch = None
    if not args.no_torch:
        try:
            import torch
        except ImportError:
            print("torch not installed: charrnn side only (pip install -e '.[bench]')")
    blas_env = {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    print(f"# sample_scaling.py  {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  "
          f"{platform.processor() or platform.machine()}  cores usable {len(os.sched_getaffinity(0))}  "
          f"load {os.getloadavg()[0]:.2f}  OPENBLAS_* {blas_env}", flush=True)
    res = {"load_before": os.getloadavg(), "rows": measure_rows(torch, args), "inputs": measure_inputs(args)}
    res["projection"] = {f"LSTM 2x{H}": project(res["inputs"], H, 2) for H in (256, 512)}
    for name, proj in res["projection"].items():
        print(f"  PROJECTION (a model, not a measurement), {name}, one stream:")
        for o in proj:
            print(f"    {o['cores']:>2} cores: team {o['team']:>2}, {o['bytes_per_thread'] / 1024:7.0f} KB/thread, "
                  f"stream {o['stream_us']:6.1f} us + serial {res['inputs']['serial_tiny_us']:.1f} + barriers "
                  f"{o['barrier_us']:5.1f} = {o['step_us']:6.1f} us/char, {o['chars_per_s']:8,.0f} chars/s, "
                  f"efficiency {o['efficiency'] * 100:5.1f} %")
    res["load_after"] = os.getloadavg()
    print(f"# load after {res['load_after'][0]:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())

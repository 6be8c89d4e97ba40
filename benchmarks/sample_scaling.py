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

from charrnn.engine.model import Model  # noqa: E402
from charrnn.engine.params import Shape, init_params  # noqa: E402
from charrnn.sampling.multistream import Sampler  # noqa: E402

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
    # the serial part: a 1x8 model (nothing to stream): decoder (65x8) + draw + the loop, per character
    tiny = make_model("lstm", 8, 1)
    serial = step_time(tiny, 1, 20000, reps)
    res["serial_us"] = serial * 1e6
    # one thread's weight-streaming rate: bytes per character / (time per character - the serial part),
    # with the weights in L2 (0.3 MB), in L3 (3.1 MB) and in DRAM (50 MB, more than the 32 MB L3)
    for name, (H, L, n) in {"L2": (128, 1, 4000), "L3": (256, 2, 1500), "DRAM": (1280, 2, 100)}.items():
        if args.quick and name == "DRAM":
            continue
        m = make_model("lstm", H, L)
        b = Sampler(m, 1).step_bytes
        t = step_time(m, 1, n, reps)
        res[f"bytes_{name}"] = b
        res[f"rate_{name}_GBps"] = b / max(t - serial, 1e-9) / 1e9
        print(f"  one thread, LSTM {L}x{H} ({b / 2**20:.2f} MB/char, {name}): {t * 1e6:.1f} us/char "
              f"= {res[f'rate_{name}_GBps']:.1f} GB/s beyond the serial part", flush=True)
    # the barrier: LSTM 2x8, two barriers per character: (T threads - 1 thread) / 2
    tiny2 = make_model("lstm", 8, 2)
    res["tiny2_us"] = {1: step_time(tiny2, 1, 20000, reps) * 1e6}
    for T in (2, 3, 4, 8):
        if args.quick and T > 2:
            break
        res["tiny2_us"][T] = step_time(tiny2, T, 20000 if T <= 2 else 300, reps) * 1e6
    res["barrier_us"] = {T: (res["tiny2_us"][T] - res["tiny2_us"][1]) / 2 for T in res["tiny2_us"] if T > 1}
    print(f"  serial part (LSTM 1x8: decoder + draw + loop): {res['serial_us']:.2f} us/char; per barrier: "
          + ", ".join(f"{T} threads {b:.2f} us" + (" (oversubscribed: measures the scheduler)" if T > 2 else "")
                      for T, b in res["barrier_us"].items()), flush=True)
    return res


def measure_tuning(args) -> dict:
    """The evidence for multistream's constants, one process, rounds alternating:
    THREAD_MIN_BYTES (one stream, 1 vs 2 threads, LSTM 1xH of growing size), STREAMS_PER_THREAD (S
    streams at 2x256 and 2x512: 1 thread, 2 threads splitting streams, 2 splitting units) and
    UNITS_PER_PART (the cost of finer parts on 1 and 2 threads)."""
    import charrnn.sampling.packing as packing
    out = {}
    sizes = (64, 96, 128, 160, 192, 256)
    models = {H: make_model("lstm", H, 1) for H in sizes}
    sides = {}
    for H, m in models.items():
        for T in (1, 2):
            sides[f"1x{H} {T}thr"] = (lambda m=m, T=T: 1 / step_time(m, T, 3000, 1))
    got = rounds_of({k: (lambda r, f=f: f()) for k, f in sides.items()}, args.rounds, args.settle)
    out["crossover"] = {k: med(v) for k, v in got.items()}
    for H, m in models.items():
        b = Sampler(m, 1).step_bytes
        one, two = out["crossover"][f"1x{H} 1thr"], out["crossover"][f"1x{H} 2thr"]
        print(f"  LSTM 1x{H} ({b / 1024:.0f} KB/char): 1 thread {one:,.0f}, 2 threads {two:,.0f} chars/s "
              f"({two / one:.2f}x)", flush=True)
    for H in (256, 512):
        m = make_model("lstm", H, 2)
        n = 300 if H == 256 else 80
        sides = {}
        for S in (2, 3, 4, 8):
            sides[f"2x{H} S{S} 1thr"] = (lambda r, S=S: charrnn_rate(m, S, 1, "units", n, r))
            sides[f"2x{H} S{S} streams"] = (lambda r, S=S: charrnn_rate(m, S, 2, "streams", n, r))
            sides[f"2x{H} S{S} units"] = (lambda r, S=S: charrnn_rate(m, S, 2, "units", n, r))
        got = rounds_of(sides, args.rounds, args.settle)
        out[f"streams_2x{H}"] = {k: med(v) for k, v in got.items()}
        for S in (2, 3, 4, 8):
            g = out[f"streams_2x{H}"]
            print(f"  LSTM 2x{H}, {S} streams: 1 thread {g[f'2x{H} S{S} 1thr']:,.0f}, 2 threads splitting streams "
                  f"{g[f'2x{H} S{S} streams']:,.0f}, splitting units {g[f'2x{H} S{S} units']:,.0f} chars/s",
                  flush=True)
    keep = packing.UNITS_PER_PART
    try:
        m = make_model("lstm", 256, 2)
        sides = {}
        for upp in (8, 16, 32, 128):
            packing.UNITS_PER_PART = upp
            for T in (1, 2):
                sm = Sampler(m, 1, threads=T, split="units")
                sm.reset(None, seed=1)
                sm.run(20)
                sides[f"{upp} units/part {T}thr"] = (lambda r, sm=sm: 1500 / _timed(sm, 1500))
        got = rounds_of(sides, args.rounds, args.settle)
    finally:
        packing.UNITS_PER_PART = keep
    out["parts"] = {k: med(v) for k, v in got.items()}
    print("  LSTM 2x256 one stream by part size: " + ", ".join(f"{k} {v:,.0f}" for k, v in out["parts"].items()),
          flush=True)
    return out


def _timed(sm, n: int) -> float:
    t = time.perf_counter()
    sm.run(n)
    return time.perf_counter() - t


MLP = 10  # cache-line misses one Zen 3 core keeps in flight while it polls counters (24 L2 miss buffers)
CROSS_CCX = 4.0  # core-to-core latency across CCXs / within one (published Zen 3: ~100 ns / ~25 ns)


def barrier_model(b2: float, T: int) -> float:
    """Projected cost of one barrier of T threads, from b2, the measured 2-thread cost (one cache line
    from the last thread to arrive): a waiter polls the T - 1 other counters, MLP lines in flight at a
    time, and beyond 8 threads (one CCX of a Zen 3 EPYC) each transfer crosses CCXs."""
    if T <= 1:
        return 0.0
    return b2 * (1 + (T - 2 + MLP - 1) // MLP) * (CROSS_CCX if T > 8 else 1.0)


def project(inputs: dict, hidden: int, layers: int) -> list[dict]:
    """Projected time per character for one stream at T cores, a model (benchmarks/README.md):
    step(T) = stream(T) + serial + L * barrier_model(b2, team), with
      stream(T) = (recurrent bytes / team + decoder bytes) / rate, rate = the measured one-thread L2 rate
                  while a thread's bytes fit 80 % of its 512 KB L2, else the measured L3 rate (Zen 3 has a
                  32 MB L3 per 8-core CCX, each core its own path to it; 2x512's 12.6 MB fits one CCX's L3);
      serial    = the decoder and draw every thread repeats (measured, LSTM 1x8);
      team = min(T, parts): at most one thread per 8 units."""
    H, L = hidden, layers
    w_rec = 4 * H * H * (2 * L - 1) * 4
    w_dec = V * H * 4
    b2 = inputs["barrier_us"][2]
    out = []
    for T in (1, 2, 4, 8, 16, 32, 64):
        team = min(T, max(2, -(-H // 8)))
        w = w_rec / team + w_dec
        rate = inputs["rate_L2_GBps"] if w <= 0.8 * L2_BYTES else inputs["rate_L3_GBps"]
        stream = w / (rate * 1e9) * 1e6
        barrier = L * barrier_model(b2, team)
        step = stream + inputs["serial_us"] + barrier
        out.append({"cores": T, "team": team, "bytes_per_thread": w, "stream_us": stream, "barrier_us": barrier,
                    "step_us": step, "chars_per_s": 1e6 / step})
    for o in out:
        o["speedup"] = out[0]["step_us"] / o["step_us"]
        o["efficiency"] = o["speedup"] / o["cores"]
    return out


AGAINST_CODE = r"""
import hashlib, json, sys, time
import numpy as np
try:
    from charrnn.data.corpus import Vocab
    from charrnn.engine.model import Model
    from charrnn.engine.params import Shape, init_params
    from charrnn.sampling.generate import sample
except ImportError:  # a tree from before issue 29's package moves
    from charrnn.data import Vocab
    from charrnn.model import Model
    from charrnn.params import Shape, init_params
    from charrnn.generate import sample
import charrnn
H, n, reps = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
vocab = Vocab("\n" + "".join(chr(c) for c in range(32, 96)))
m = Model(Shape("lstm", 65, H, 2))
init_params(m.params, np.random.default_rng(0))
sample(m, vocab, 300, temperature=0.8, seed=0)
best, text = 0.0, ""
for r in range(reps):
    t = time.perf_counter()
    text = sample(m, vocab, n, temperature=0.8, seed=1)[0]
    best = max(best, n / (time.perf_counter() - t))
print(json.dumps({"cps": best, "text_sha": hashlib.sha256(text.encode()).hexdigest()[:16],
                  "from": charrnn.__file__}))
"""


def measure_against(other: str, args) -> dict:
    """`charrnn sample`'s one stream (generate.sample, its own thread choice) in this tree and in the tree at
    `other` (a checkout, e.g. of main), each in a fresh process, alternating; and whether the texts agree."""
    import subprocess
    res = {}
    for H, n in ((256, 2000), (512, 500)):
        got = {"this": [], "other": []}
        shas = {}
        for r in range(args.rounds):
            for side in (["this", "other"] if r % 2 == 0 else ["other", "this"]):
                env = dict(os.environ, PYTHONPATH=ROOT if side == "this" else os.path.abspath(other))
                time.sleep(args.settle)
                p = subprocess.run([sys.executable, "-c", AGAINST_CODE, str(H), str(n), "3"], env=env,
                                   capture_output=True, text=True, timeout=600, cwd="/")
                if p.returncode:
                    raise SystemExit(f"--against {side}: {p.stderr.strip()[-500:]}")
                out = json.loads(p.stdout.strip().splitlines()[-1])
                got[side].append(out["cps"])
                shas[side] = (out["text_sha"], out["from"])
        res[f"LSTM 2x{H}"] = {"rounds": got, "this": med(got["this"]), "other": med(got["other"]),
                              "ratios": [a / b for a, b in zip(got["this"], got["other"])],
                              "same_text": shas["this"][0] == shas["other"][0], "trees": shas}
        rr = res[f"LSTM 2x{H}"]
        print(f"  one stream LSTM 2x{H}: this tree {rr['this']:,.0f}, {other} {rr['other']:,.0f} chars/s "
              f"(median {med(rr['ratios']):.2f}x, range {min(rr['ratios']):.2f}-{max(rr['ratios']):.2f}); "
              f"same text: {rr['same_text']}", flush=True)
    return res


def print_projection(projection: dict, inputs: dict) -> None:
    print(f"  (2-thread barrier {inputs['barrier_us'][2]:.2f} us, serial {inputs['serial_us']:.2f} us, one thread "
          f"{inputs['rate_L2_GBps']:.1f} GB/s from L2, {inputs['rate_L3_GBps']:.1f} GB/s from L3)")
    for name, proj in projection.items():
        print(f"  PROJECTION (a model, not a measurement), {name}, one stream:")
        for o in proj:
            print(f"    {o['cores']:>2} cores: team {o['team']:>2}, {o['bytes_per_thread'] / 1024:7.0f} KB/thread, "
                  f"stream {o['stream_us']:6.1f} us + serial {inputs['serial_us']:.1f} + barriers "
                  f"{o['barrier_us']:5.1f} = {o['step_us']:6.1f} us/char, {o['chars_per_s']:8,.0f} chars/s, "
                  f"{o['speedup']:.2f}x, efficiency {o['efficiency'] * 100:5.1f} %")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--settle", type=float, default=0.2)
    p.add_argument("--quick", action="store_true", help="smoke test: small rows, 1 round")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--json", metavar="FILE")
    p.add_argument("--tune", action="store_true", help="only the measurements behind multistream's constants")
    p.add_argument("--against", metavar="TREE", help="also time generate.sample in another checkout (e.g. main)")
    p.add_argument("--project-from", metavar="JSON", help="no measuring: the projection from a saved --json run")
    p.add_argument("--barrier-us", type=float, help="with --project-from: this 2-thread barrier cost instead")
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
    if args.project_from:
        with open(args.project_from) as f:
            inputs = json.load(f)["inputs"]
        inputs["barrier_us"] = {int(k): v for k, v in inputs["barrier_us"].items()}
        if args.barrier_us is not None:
            inputs["barrier_us"][2] = args.barrier_us
        print_projection({f"LSTM 2x{H}": project(inputs, H, 2) for H in (256, 512)}, inputs)
        return 0
    if args.tune:
        res = {"load_before": os.getloadavg(), "tuning": measure_tuning(args), "load_after": os.getloadavg()}
        print(f"# load after {res['load_after'][0]:.2f}")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(res, f, indent=1, default=str)
        return 0
    res = {"load_before": os.getloadavg()}
    if args.against:
        res["against"] = measure_against(args.against, args)
    res.update({"rows": measure_rows(torch, args), "inputs": measure_inputs(args)})
    res["projection"] = {f"LSTM 2x{H}": project(res["inputs"], H, 2) for H in (256, 512)}
    print_projection(res["projection"], res["inputs"])
    res["load_after"] = os.getloadavg()
    print(f"# load after {res['load_after'][0]:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What charrnn's thread-count-independent decomposition of a training step costs, measured on this
machine, and the step time it projects for 4, 8, 16 and 64 cores (labelled as projections).

Measured here, for one shape (default LSTM 2x512 B64 T100, V 65, Adam, clip 5):
  1. the step's work by phase on one thread, in thread CPU time (robust to other processes on the machine):
     the recurrent T loops (split over hidden-unit panels), the task phases (GEMMs, head, gradients: a
     fixed number C of tasks each), and the serial parts (weight packing, the second group's gradient
     sum, the gate-order copies, the optimizer with clipping, Python overhead);
  2. a team's barrier: round trip of kernels/team.step for 2 threads, and a real pass run as one team of
     2 (`Model.one_team`): its T loops' wall time against half the one-thread work, i.e. what the
     barriers and the panel imbalance cost per step;
  3. memory: per-thread W_hh slice against L2, the bytes the step's big arrays stream per step;
  4. charrnn 1 vs 2 threads and PyTorch 1 vs 2 threads, alternating rounds in this one process.
The projection (model written out in the output and in benchmarks/README.md):
  T(n) = S + R/2 * ceil(P/t)/P + K/2 * ceil(C/t)/C + bar(t) * nbar,  t = n/2 threads per group team
  (both stream groups run side by side), R, K = one-thread T-loop and task work of both groups, P panels,
  S serial, nbar barriers per group pass, bar(t) = bar(2) * (t - 1) (each waiter reads t - 1 counters on
  other cores), floored by DRAM: T(n) >= bytes / min(n * 20 GB/s, 204.8 GB/s) (8 x DDR4-3200 per socket).
  Efficiency E(n) = T(1) / (n T(n)).
Run it through `flock /work/notes/bench.lock` on a shared machine, with OPENBLAS_CORETYPE/L2_SIZE unset.
"""
from __future__ import annotations

import argparse
import collections
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402
from _common import import_torch, machine_header, note_load_at_end, print_header, save_json  # noqa: E402


def _cache_bytes(index: int, default: int) -> int:
    """This machine's cache size at sysfs cache index (2 = L2 per core, 3 = L3), else the default."""
    try:
        text = Path(f"/sys/devices/system/cpu/cpu0/cache/index{index}/size").read_text().strip()
        return int(text[:-1]) << {"K": 10, "M": 20}[text[-1]] if text[-1] in "KM" else int(text)
    except (OSError, ValueError, KeyError):
        return default


# Read from the machine (Zen 3: 512 KB L2 per core, 32 MB L3 per 8-core CCD; the defaults where sysfs says nothing)
L2_BYTES, L3_BYTES = _cache_bytes(2, 512 << 10), _cache_bytes(3, 32 << 20)
DRAM_GBS, CORE_GBS = 204.8, 20.0                # 8 channels DDR4-3200 per socket; ~20 GB/s one core streams


def build(cell: str, H: int, L: int, B: int, T: int):
    from bench import Row, make_trainer
    tr, run_dir = make_trainer(Row("s", "train", cell, L, H, B, T), B, T, 8)
    return tr, run_dir


def cpu_profile(tr, reps: int) -> dict:
    """Phase CPU times (thread 0, one thread) of a whole train_step, and the serial parts apart."""
    from charrnn.engine import passes, threads
    threads.set_threads(1)
    m = tr.model
    x, y = tr.batches.batch(0)
    tr.train_step(x, y)
    phases = collections.Counter()
    steps = []
    passes.CLOCK = time.thread_time
    for i in range(reps):
        passes.RECORD = []
        c = time.thread_time()
        tr.train_step(*tr.batches.batch(i + 1))
        steps.append(time.thread_time() - c)
        for (_, _me, _k, ph, a, b) in passes.RECORD:
            phases[ph] += (b - a) / reps
    passes.RECORD, passes.CLOCK = None, time.perf_counter
    g = m.params.zeros_like()
    from charrnn.engine.optim import global_norm, make_optimizer
    opt = make_optimizer("adam", len(m.params))
    p_copy = m.params.flat.copy()
    serial = {
        "pack weights": _cpu(lambda: m._prepare_weights(backward=True, fused=True), reps),
        "group gradient sum": _cpu(lambda: np.add(g.flat, g.flat, out=g.flat), reps),
        "clip (global norm)": _cpu(lambda: global_norm(tr.grads.flat), reps),
    }
    optimizer = _cpu(lambda: opt.step(p_copy, tr.grads.flat, 1e-6), reps)  # in pieces: parallel
    step = float(np.median(steps))
    in_pass = sum(phases.values())
    rec = phases.get("forward T loop", 0) + phases.get("backward T loop", 0)
    tasks = sum(v for k, v in phases.items() if "tasks" in k) + optimizer
    # What is left of the step (batch fetch, Python, the trainer's bookkeeping) runs on one thread.
    serial["data, Python (the rest of the step)"] = max(0.0, step - in_pass - optimizer - sum(serial.values()))
    phases["optimizer update (pieces)"] = optimizer
    return {"step_cpu_s": step, "phases_s": dict(phases), "recurrent_s": rec, "tasks_s": tasks,
            "serial_s": serial, "serial_total_s": sum(serial.values())}


def _cpu(fn, reps: int) -> float:
    fn()
    ts = []
    for _ in range(reps):
        c = time.thread_time()
        fn()
        ts.append(time.thread_time() - c)
    return float(np.median(ts))


def barrier_round_trip(batches: int = 300, n_iter: int = 1000) -> float:
    """Seconds per barrier for a team of 2 threads: the fastest of many short batches, i.e. the batches
    in which both threads held a core (on a busy machine most batches include a preemption)."""
    from charrnn.engine.team import Team, run_threads
    team = Team(2)
    loop = _barrier_loop()
    best = math.inf
    for _ in range(batches):
        t = time.perf_counter()
        run_threads(2, lambda me: loop(team.flags, me, 2, n_iter), [team])
        best = min(best, (time.perf_counter() - t) / n_iter)
    return best


def _barrier_loop():
    from charrnn.engine.kernels.jit import kernel
    from charrnn.engine.kernels.team import step

    @kernel(cache=False)
    def loop(flags, me, n, count):
        for _ in range(count):
            step(flags, me, n)
    return loop


def team_of_two(tr, reps: int) -> dict:
    """A real pass as one team of 2 threads (both groups in turn): T loops' wall time and waits."""
    from charrnn.engine import passes, threads
    threads.set_threads(2)
    m = tr.model
    m.one_team = True
    x, y = tr.batches.batch(0)
    g = m.params.zeros_like()
    st = m.zero_state(x.shape[0])
    m.forward_backward(x, y, st, g)
    per = collections.defaultdict(float)
    for _ in range(reps):
        passes.RECORD = []
        m.forward_backward(x, y, st, g)
        for (_, me, _k, ph, a, b) in passes.RECORD:
            per[(me, ph)] += (b - a) / reps
    passes.RECORD = None
    m.one_team = False
    return {f"{ph} (thread {me})": v for (me, ph), v in sorted(per.items())}


def step_bytes(m, B: int, T: int) -> int:
    """Bytes the step's big arrays stream (a model, stated): every workspace array written once and read
    twice, the parameters, gradients and Adam's two moments read and written once."""
    work = m._workspace((B + 1) // 2, T, False, 0)
    arrays = [a for lw in work.layers for a in vars(lw).values() if isinstance(a, np.ndarray)]
    ws = 2 * 3 * sum(a.nbytes for a in arrays + [work.logits])  # two groups
    return ws + 4 * 2 * m.params.flat.nbytes


def project(p: dict, bar2: float, nbar: int, panels: int, count: int, nbytes: int) -> list[dict]:
    R, K, S = p["recurrent_s"], p["tasks_s"], p["serial_total_s"]
    t1 = S + R + K
    out = []
    for n in (1, 2, 4, 8, 16, 64):
        t = max(1, n // 2)
        par = R / 2 * math.ceil(panels / t) / panels * (2 if n == 1 else 1) + \
            K / 2 * math.ceil(count / t) / count * (2 if n == 1 else 1)
        bar = 0.0 if t == 1 else bar2 * (t - 1) * nbar
        floor = nbytes / 1e9 / min(n * CORE_GBS, DRAM_GBS)
        tn = max(S + par + bar, floor)
        out.append({"cores": n, "team": t, "step_s": tn, "efficiency": t1 / (n * tn), "barrier_s": bar,
                    "dram_floor_s": floor, "projected": n > 2})
    return out


def alternate(tr, torch, cell, H, L, B, T, rounds: int, steps: int) -> dict:
    """charrnn at 1 and 2 threads, torch at 1 and 2 threads, alternating in rounds (median chars/s)."""
    from bench import Row, TorchTrainSide, settle

    from charrnn.engine import threads
    tside = TorchTrainSide(torch, Row("s", "train", cell, L, H, B, T), B, T, steps, 2) if torch else None
    res = collections.defaultdict(list)
    i = [0]

    def c_run(n):
        settle(0.3)  # torch's OpenMP workers, in this process too, spin for a while after its steps
        threads.set_threads(n)
        tr.train_step(*tr.batches.batch(i[0] % 8))  # settles the new team
        t = time.perf_counter()
        for _ in range(steps):
            i[0] += 1
            tr.train_step(*tr.batches.batch(i[0] % 8))
        return B * T * steps / (time.perf_counter() - t)

    def t_run(n):
        torch.set_num_threads(n)
        tside.step()
        dt, _ = tside.run(steps)
        return B * T * steps / dt

    for r in range(rounds):
        order = [("charrnn", 1), ("charrnn", 2), ("torch", 1), ("torch", 2)]
        if r % 2:
            order.reverse()
        for side, n in order:
            if side == "torch" and tside is None:
                continue
            time.sleep(0.25)
            res[f"{side} {n}"].append(c_run(n) if side == "charrnn" else t_run(n))
    return {k: float(np.median(v)) for k, v in res.items()} | {"rounds_raw": dict(res)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cell", default="lstm")
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seq", type=int, default=100)
    ap.add_argument("--reps", type=int, default=3, help="profiled steps (median)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds of the 1/2-thread comparison")
    ap.add_argument("--steps", type=int, default=2, help="steps per side and round")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--json", metavar="FILE")
    a = ap.parse_args(argv)
    torch = None if a.no_torch else import_torch()
    header = machine_header(torch)
    print_header(header, f"charrnn scaling {a.cell.upper()} {a.layers}x{a.hidden} B{a.batch} T{a.seq}")
    from charrnn.engine.kernels.gemm import NR
    from charrnn.engine.passes import task_count
    tr, _ = build(a.cell, a.hidden, a.layers, a.batch, a.seq)
    m = tr.model
    prof = cpu_profile(tr, a.reps)
    bar2 = barrier_round_trip()
    two = team_of_two(tr, a.reps)
    N = (a.batch + 1) // 2 * a.seq
    count = task_count(N, m.gate_width)
    panels = a.hidden // NR  # the backward's panels (the forward has 4x as many for an LSTM): the coarser
    nbar = 2 * a.layers * a.seq + 2 * a.layers + 1
    nbytes = step_bytes(m, a.batch, a.seq)
    wslice = m.gate_width * a.hidden * 4
    proj = project(prof, bar2, nbar, panels, count, nbytes)
    alt = alternate(tr, torch, a.cell, a.hidden, a.layers, a.batch, a.seq, a.rounds, a.steps)
    note_load_at_end(header)
    report(a, prof, bar2, two, count, panels, nbar, nbytes, wslice, proj, alt, header)
    save_json({"header": header, "profile": prof, "barrier_2_s": bar2, "team_of_two": two, "tasks": count,
               "panels": panels, "barriers_per_pass": nbar, "bytes_per_step": nbytes, "projection": proj,
               "alternating": alt}, a.json)
    return 0


def report(a, prof, bar2, two, count, panels, nbar, nbytes, wslice, proj, alt, header) -> None:
    ms = lambda s: f"{1e3 * s:9.1f} ms"  # noqa: E731
    print(f"\n1. one thread, CPU time of a train step: {ms(prof['step_cpu_s'])}")
    for k, v in sorted(prof["phases_s"].items(), key=lambda kv: -kv[1]):
        print(f"   {k:32s}{ms(v)}")
    for k, v in prof["serial_s"].items():
        print(f"   serial: {k:24s}{ms(v)}")
    s = prof["serial_total_s"] / prof["step_cpu_s"]
    print(f"   recurrent {ms(prof['recurrent_s'])}, tasks {ms(prof['tasks_s'])}, serial {ms(prof['serial_total_s'])}"
          f" = serial fraction {s:.2%} (Amdahl's bound: {1 / s:.0f}x)")
    print(f"\n2. barrier round trip, team of 2 (fastest batch of 1000, thread start included): {bar2 * 1e6:.2f} us; {nbar} barriers per group pass "
          f"({bar2 * nbar * 1e3:.2f} ms at 2 threads)")
    print("   one real pass as a team of 2 (both groups in turn), wall time per phase:")
    for k, v in two.items():
        print(f"   {k:40s}{ms(v)}")
    half = prof["recurrent_s"] / 2
    t_loops = sum(v for k, v in two.items() if "T loop" in k and "thread 0" in k)
    print(f"   T loops on thread 0: {ms(t_loops)} against half the one-thread T-loop work {ms(half)}: "
          f"barriers + imbalance + the machine's other load cost {t_loops / half - 1:+.0%}")
    print(f"\n3. memory: W_hh {wslice / 2**20:.1f} MB per layer; per-thread slice at team t: "
          + ", ".join(f"t={t}: {wslice / t / 2**10:.0f} KB{' (fits L2)' if wslice / t <= L2_BYTES * 0.75 else ''}"
                      for t in (1, 2, 4, 8, 32))
          + f"; the two groups share one copy in L3 ({L3_BYTES >> 20} MB). Streamed per step (model): "
          f"{nbytes / 2**20:.0f} MB")
    print(f"   tasks per phase C = {count}, backward panels P = {panels}")
    print("\n4. PROJECTION (not measured: the model in the docstring, inputs from 1-3):")
    print("   cores  team   step        efficiency  barriers     DRAM floor")
    for r in proj:
        print(f"   {r['cores']:5d} {r['team']:5d} {ms(r['step_s'])}  {r['efficiency']:8.0%}  {ms(r['barrier_s'])}"
              f"  {ms(r['dram_floor_s'])}{'  projected' if r['projected'] else '  (model at measured counts)'}")
    print("\n5. measured here, alternating rounds (wall clock: disturbed by the machine's load):")
    for k in ("charrnn 1", "charrnn 2", "torch 1", "torch 2"):
        if k in alt:
            print(f"   {k} thread(s): {alt[k]:,.0f} chars/s")
    if "charrnn 1" in alt:
        print(f"   charrnn 1 -> 2 threads: {alt['charrnn 2'] / alt['charrnn 1']:.2f}x"
              + (f"; torch: {alt['torch 2'] / alt['torch 1']:.2f}x" if "torch 1" in alt else ""))
    print(f"\nload avg at start {header['loadavg_1_5_15']}, at end {header.get('loadavg_at_end')}")


if __name__ == "__main__":
    sys.exit(main())

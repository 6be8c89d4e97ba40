#!/usr/bin/env python
"""What data-parallel `mpirun -n K charrnn train` costs per step: the Allreduce of the flat gradient.

For each model size of the benchmark table (and a 3x1024 LSTM), with V = 65 as in bench.py:
- the flat float32 gradient buffer's size, from charrnn's own parameter layout (engine.params.Shape.count);
- the measured time of one Allreduce of it with 2 ranks on this host (Open MPI's default transport between
  ranks of one host: shared memory) and with 2 ranks in two network namespaces joined by a veth pair (TCP only,
  btl tcp,self; the harness of tests/support/mpi.py; needs root);
- the measured one-process step time (charrnn's Trainer.train_step, as bench.py times it) at B = 64, T = 100,
  and at B = 64/K for K = 2, 4, 8, 16: the share of the batch each of K ranks computes.

Then a projection (labelled as such: computed, not measured) of the step time and scaling efficiency on K
machines linked at 1 and 10 Gbit/s, with the ring allreduce model (MODEL below) and the measured latency.
Nothing is asserted. Run it on a quiet machine (in this project: through /work/notes/bench).

    python benchmarks/mpi_allreduce.py                          # everything (a few minutes)
    python benchmarks/mpi_allreduce.py --sizes lstm128,lstm256  # some sizes
    python benchmarks/mpi_allreduce.py --quick                  # smoke test: numbers mean nothing
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402
from _common import ROOT, machine_header, note_load_at_end, print_header, print_table, save_json  # noqa: E402

V = 65
B, T = 64, 100
KS = (2, 4, 8, 16)
LINKS = {"1 Gbit/s": 1e9 / 8, "10 Gbit/s": 10e9 / 8}  # bytes per second
SIZES = {  # name: (cell, layers, hidden)
    "lstm128": ("lstm", 2, 128), "lstm256": ("lstm", 2, 256), "lstm512": ("lstm", 2, 512),
    "gru256": ("gru", 2, 256), "rnn256": ("rnn", 2, 256), "lstm3x1024": ("lstm", 3, 1024),
}
SMALL = 2  # float32 elements of the latency probe (8 bytes)
MODEL = """\
ring allreduce of S bytes over K machines, link bandwidth W bytes/s, per-message latency a:
  t_allreduce(K) = 2(K-1) a + 2(K-1)/K * S / W       (each rank sends and receives 2(K-1)/K * S)
  t_step(K)      = t_compute(B/K) + t_allreduce(K)    (no overlap: charrnn reduces after the backward pass)
  efficiency(K)  = t_step(1) / (K * t_step(K))        (fixed global batch B = 64: strong scaling)
a = the measured time of an 8-byte Allreduce between the two namespaces (one exchange over TCP on the veth);
t_compute(B/K) = the measured one-process step at B/K streams on this machine's cores, all else equal."""


def params_of(name: str) -> int:
    from charrnn.engine.params import Shape
    cell, layers, hidden = SIZES[name]
    return Shape(cell, V, hidden, layers, 0).count()


# -- the MPI side: run under mpirun, prints one JSON line from rank 0 ---------------------------------------
def worker(counts: list[int], budget: float) -> None:
    """Time one Allreduce (sum, float32) of each count: Barrier, Allreduce, the slowest rank's time; the
    median over at least 5 repetitions, more while the count's budget lasts (the same decisions on every
    rank: they depend only on the reduced times)."""
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    out = {"library": MPI.Get_library_version().strip().splitlines()[0], "size": comm.size, "times": {}}
    for n in counts:
        a = np.ones(n, np.float32)
        b = np.empty_like(a)
        for _ in range(2):  # connections, first-touch of the buffers
            comm.Allreduce(a, b, op=MPI.SUM)
        assert b[0] == comm.size and b[-1] == comm.size
        times = []
        while len(times) < 5 or (sum(times) < budget and len(times) < 500):
            comm.Barrier()
            t = time.perf_counter()
            comm.Allreduce(a, b, op=MPI.SUM)
            times.append(comm.allreduce(time.perf_counter() - t, op=MPI.MAX))
        out["times"][str(n)] = {"median": statistics.median(times), "min": min(times), "reps": len(times)}
    if comm.rank == 0:
        print(json.dumps(out), flush=True)


def launch(argv: list[str], timeout: float = 600) -> dict:
    """Run an MPI job in a session of its own; its rank 0's JSON line, or SystemExit with its output."""
    sys.path.insert(0, str(ROOT / "tests"))
    from support.mpi import env, kill_session
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(),
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_session(proc.pid)
        raise SystemExit(f"mpi_allreduce: timed out after {timeout:.0f} s: {' '.join(argv)}") from None
    finally:
        kill_session(proc.pid)
    lines = [x for x in out.splitlines() if x.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"mpi_allreduce: the MPI job failed ({proc.returncode}): {' '.join(argv)}\n{out}{err}")
    return json.loads(lines[-1])


def allreduce_times(counts: list[int], budget: float) -> dict:
    """{"shm": ..., "tcp": ... or None with a reason} for 2 ranks."""
    sys.path.insert(0, str(ROOT / "tests"))
    from support import mpi
    why = mpi.mpi_missing()
    if why:
        raise SystemExit(f"mpi_allreduce: {why}")
    job = [sys.executable, str(Path(__file__).resolve()), "--worker", ",".join(map(str, counts)),
           "--budget", str(budget)]
    res = {"shm": launch(mpi.mpirun_argv(2, job)), "shm_transport": "Open MPI's default between ranks of one host "
           "(shared memory, btl vader)"}
    why = mpi.namespaces_missing()
    if why:
        res["tcp"], res["tcp_why"] = None, why
        return res
    with tempfile.TemporaryDirectory(prefix="mpi-allreduce-") as d:
        hosts = mpi.TwoHosts(Path(d))
        try:
            hosts.up()
            before = hosts.veth_bytes()
            res["tcp"] = launch(hosts.mpirun_argv(1, job))
            after = hosts.veth_bytes()
        finally:
            hosts.down()
    a = hosts.hosts[0].netns
    res["tcp_transport"] = (f"TCP only (btl tcp,self) between two network namespaces over a veth pair "
                            f"({hosts.subnet}); {(after[a][1] - before[a][1]) / 1e6:,.0f} MB left host a's veth")
    return res


# -- the compute side: one process, charrnn's training step ------------------------------------------------
def step_time(name: str, batch: int, steps: int, budget: float) -> float:
    """Median seconds of Trainer.train_step at (batch, T) after one warm-up step: at least `steps` steps,
    more (up to 10 x steps) while `budget` seconds last, so the small models' medians are not 3 samples."""
    from bench import Row, make_trainer
    cell, layers, hidden = SIZES[name]
    trainer, run_dir = make_trainer(Row(name, "train", cell, layers, hidden), batch, T, 10 * steps + 1)
    try:
        trainer.train_step(*trainer.batches.batch(0))
        times = []
        while len(times) < steps or (sum(times) < budget and len(times) < 10 * steps):
            x, y = trainer.batches.batch(len(times) + 1)
            t = time.perf_counter()
            trainer.train_step(x, y)
            times.append(time.perf_counter() - t)
        return statistics.median(times)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def step_times(names: list[str], steps: int, budget: float, quick: bool) -> dict:
    out = {}
    for name in names:
        ks = (1,) + (() if quick else KS)
        out[name] = {B // k: step_time(name, B // k, steps, budget) for k in ks}
        print(f"  measured step {name}: " + ", ".join(f"B{b} {t:.3f} s" for b, t in out[name].items()), flush=True)
    return out


# -- the projection ---------------------------------------------------------------------------------------
def project(nbytes: int, latency: float, compute: dict[int, float], k: int, link: float) -> tuple[float, float]:
    """(projected step seconds, efficiency) on k machines: MODEL with the measured inputs."""
    t_ar = 2 * (k - 1) * latency + 2 * (k - 1) / k * nbytes / link
    t = compute[B // k] + t_ar
    return t, compute[B] / (k * t)


def report(names: list[str], counts: dict, ar: dict, steps: dict) -> dict:
    tcp = ar.get("tcp")
    latency = tcp["times"][str(SMALL)]["median"] if tcp else None
    rows = []
    for name in names:
        n, nbytes = counts[name], 4 * counts[name]
        shm = ar["shm"]["times"][str(n)]["median"]
        net = tcp["times"][str(n)]["median"] if tcp else None
        one = steps[name][B]
        rows.append([name, f"{n:,}", f"{nbytes / 1e6:.2f}", f"{shm * 1e3:.2f}",
                     f"{net * 1e3:.2f}" if net else "-", f"{one:.3f}",
                     f"{100 * net / one:.1f}" if net else "-"])
    print(f"\n== measured: one Allreduce (sum) of the flat float32 gradient, 2 ranks; one-process step B{B} T{T} ==")
    print_table(["size", "params", "MB", "shm ms", "tcp/veth ms", f"step B{B} s", "tcp % of step"], rows)
    print(f"shm: {ar['shm_transport']}")
    print(f"tcp: {ar.get('tcp_transport') or 'not measured: ' + ar.get('tcp_why', '?')}")
    print(f"latency: an {4 * SMALL}-byte Allreduce takes {ar['shm']['times'][str(SMALL)]['median'] * 1e6:.1f} us on "
          f"shm" + (f", {latency * 1e6:.1f} us over tcp/veth (the a of the model)" if tcp else ""))
    out = {"rows": rows, "latency_s": latency, "projection": {}}
    if not tcp or len(next(iter(steps.values()))) < 2:
        print("\n(no projection: needs the tcp latency and the step times at B/K)")
        return out
    print("\n== PROJECTED (computed from the measured inputs above, not measured): step time and efficiency "
          "on K machines ==")
    print(MODEL)
    for link_name, link in LINKS.items():
        prow = []
        for name in names:
            cells = [project(4 * counts[name], latency, steps[name], k, link) for k in KS]
            out["projection"].setdefault(link_name, {})[name] = cells
            prow.append([name, f"{steps[name][B]:.3f}"] + [f"{t:.3f} ({100 * e:.0f} %)" for t, e in cells])
        print(f"\n{link_name}: projected step seconds (efficiency)")
        print_table(["size", "K=1 measured"] + [f"K={k}" for k in KS], prow)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default=",".join(SIZES), help="comma-separated among: " + ", ".join(SIZES))
    p.add_argument("--steps", type=int, default=3, help="timed training steps per size and batch, at least (default 3; more "
                   "while 2 x --budget seconds last, up to 10 x)")
    p.add_argument("--budget", type=float, default=1.5, help="seconds of Allreduce timing per buffer (default 1.5)")
    p.add_argument("--quick", action="store_true", help="smoke test: small sizes, 1 step, B=64 only")
    p.add_argument("--json", metavar="FILE", help="also save every measurement as JSON")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker([int(x) for x in args.worker.split(",")], args.budget)
        return 0
    names = [x.strip() for x in args.sizes.split(",") if x.strip()]
    if bad := [x for x in names if x not in SIZES]:
        p.error(f"unknown size(s) {', '.join(bad)}; choose from {', '.join(SIZES)}")
    if args.quick:
        names, args.steps, args.budget = [x for x in names if x in ("lstm128", "rnn256")] or ["lstm128"], 1, 0.1
    header = machine_header()
    print_header(header, "MPI Allreduce cost of data-parallel charrnn train")
    mpirun = shutil.which("mpirun")
    version = subprocess.run([mpirun, "--version"], capture_output=True, text=True).stdout.splitlines()[0] \
        if mpirun else "no mpirun"
    counts = {name: params_of(name) for name in names}
    ar = allreduce_times(sorted({SMALL, *counts.values()}), args.budget)
    print(f"mpi       {version}; mpi4py loads: {ar['shm']['library']}")
    steps = step_times(names, args.steps, 2 * args.budget, args.quick)
    out = report(names, counts, ar, steps)
    note_load_at_end(header)
    print(f"\nload avg at the end {header.get('loadavg_at_end')}")
    save_json({"header": header, "mpirun": version, "counts": counts, "allreduce": ar,
               "steps": {k: {str(b): t for b, t in v.items()} for k, v in steps.items()}, **out}, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Training speed of this checkout against an older commit, or at several thread counts (with PyTorch
beside it), alternating rounds in fresh processes: the evidence behind "no regression against the old
code" and "1 -> 2 threads" in benchmarks/README.md.

Each round starts one process per side, the sides in turn (in order in even rounds, reversed in odd ones,
so slow drift of the machine cancels). A side's process builds the Trainer its own checkout's bench.py
builds (`make_trainer`: the same synthetic corpus, Adam, clip 5, dropout 0), runs `--warmup` steps, then
times `--steps` train_step calls, and reports chars/s (wall clock) and process CPU seconds per step (less
disturbed by other processes than wall clock). The thread count reaches charrnn as CHARRNN_THREADS (read by
the old code's usable_cores and the new code's threads()).

    python benchmarks/versus.py --other /work/wt-old --rows lstm256,lstm512 --threads 2 --rounds 4
    python benchmarks/versus.py --threads 1,2 --torch --rows lstm256,lstm512 --rounds 4
    python benchmarks/versus.py --other /work/wt-old --threads 1,2 --rows lstm256 --rounds 6
    python benchmarks/versus.py --threads 1,2 --independent --torch --rows lstm256,lstm512 --rounds 6

Three modes. `--other DIR`: old (DIR) against new (this checkout) at `--threads N`, or with `--threads A,B`
both at both counts in the same rounds (each checkout's B/A scaling, and new/old at B: on a machine whose
speed drifts, the old code's scaling measured beside the new's is the fair bar); the other checkout runs
on its own venv (OTHER/.venv/bin/python) when it has one, and with PYTHONPATH set to it either way, so
`import charrnn` finds its code. No `--other`: this checkout at each of `--threads A,B` (the ratio is B's
chars/s over A's, per round), and with `--torch` bench.py's PyTorch side at the same counts
(torch.set_num_threads) alternating in the same rounds. `--independent` (with `--threads 1,N`, either
mode) adds a side of N one-thread copies of this checkout's training running at once in separate
processes: their summed chars/s over one copy's is the machine's own N/1 for this work, with nothing shared
and nothing to wait for, under the same load as the threaded runs. Nothing is asserted: it prints (and with --json
saves) what it measured. Run it on a quiet machine (on a shared one through /work/notes/bench).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, import_torch, machine_header, note_load_at_end, print_header, print_table, save_json  # noqa: E402

# The child: the checkout's own bench.make_trainer (so both sides build what their bench.py builds).
CHILD = r"""
import json, os, sys, time
sys.path.insert(0, os.path.join(os.getcwd(), "benchmarks"))
import bench
cell, layers, hidden, B, T, steps, warmup = sys.argv[1:8]
layers, hidden, B, T, steps, warmup = map(int, (layers, hidden, B, T, steps, warmup))
row = bench.Row("versus", "train", cell, layers, hidden, B, T)
spent = {}
def gate():
    # independent copies (--independent) start their timed steps together: each says it is warmed up and
    # waits for the parent's word, so no copy times a step while another is still compiling or alone
    if os.environ.get("VERSUS_GATE"):
        print("ready", flush=True)
        sys.stdin.readline()
if os.environ.get("VERSUS_TORCH"):
    import torch
    torch.set_num_threads(int(os.environ["CHARRNN_THREADS"]))
    side = bench.TorchTrainSide(torch, row, B, T, steps, warmup)
    gate()
    wall, cpu = [], []
    for i in range(steps):
        w, c = time.perf_counter(), time.process_time()
        loss = side.step()
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    print(json.dumps({"file": "torch", "wall": wall, "cpu": cpu, "loss": float(loss), "spent": {}}))
    sys.exit(0)
tr, run_dir = bench.make_trainer(row, B, T, steps + warmup)
if os.environ.get("VERSUS_PROFILE"):
    # CPU time of the calling thread in each kind of work (one thread: every call runs on it). Functions
    # are wrapped where the passes look them up (module attributes), in the old layout or the new one.
    import importlib
    def wrap(mod, name, what):
        f = getattr(mod, name, None)
        if f is None:
            return
        def timed(*a, **k):
            t = time.thread_time()
            try:
                return f(*a, **k)
            finally:
                spent[what] = spent.get(what, 0.0) + time.thread_time() - t
        setattr(mod, name, timed)
    def mod(*names):
        for n in names:
            try:
                return importlib.import_module(n)
            except ImportError:
                pass
    kern = lambda k: mod("charrnn.engine.kernels." + k, "charrnn.kernels." + k)
    for k in ("lstm_fused", "gru_fused", "rnn"):
        for d in ("forward", "backward"):
            wrap(kern(k), f"{k.split('_')[0]}_{d}_fused", "T loops")
    for m in (mod("charrnn.engine.passes"), mod("charrnn.engine.model", "charrnn.model")):
        if m is not None:
            wrap(m, "matmul", "GEMMs")
    for name in ("gather_rows", "scatter_add_rows", "softmax_xent_backward", "column_sums"):
        wrap(kern("head"), name, "row kernels")
    wrap(kern("gemm"), "pack", "packing")
    M = mod("charrnn.engine.model", "charrnn.model").Model
    wrap(M, "forward_backward", "forward_backward")
for i in range(warmup):
    tr.train_step(*tr.batches.batch(i))
gate()
wall, cpu = [], []
for i in range(warmup, warmup + steps):
    x, y = tr.batches.batch(i)
    if i == warmup:
        spent.clear()
    w, c = time.perf_counter(), time.process_time()
    loss = tr.train_step(x, y)
    wall.append(time.perf_counter() - w)
    cpu.append(time.process_time() - c)
import charrnn
print(json.dumps({"file": charrnn.__file__, "wall": wall, "cpu": cpu, "loss": float(loss),
                  "spent": {k: v / steps for k, v in spent.items()}}))
"""

SHAPES = {  # bench.py's training rows
    "lstm128": ("lstm", 2, 128, 50, 50), "lstm256": ("lstm", 2, 256, 64, 100), "gru256": ("gru", 2, 256, 64, 100),
    "rnn256": ("rnn", 2, 256, 64, 100), "lstm512": ("lstm", 2, 512, 64, 100),
}
STEPS = {"lstm128": 20, "lstm256": 5, "gru256": 5, "rnn256": 8, "lstm512": 3}


def git_rev(path: Path) -> str:
    r = subprocess.run(["git", "-C", str(path), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return r.stdout.strip() or "?"


def run_side(path: Path, python: str, threads: int, torch: bool, shape, steps: int, warmup: int,
             profile: bool, copies: int = 1) -> dict:
    """One side of a round: chars/s over its timed steps, chars/s of its fastest step, median CPU s a step.
    With copies > 1, that many independent processes run the same work at once (started together after
    their warm-up); their chars/s add up, and the CPU a step is the copies' mean."""
    env = dict(os.environ, CHARRNN_THREADS=str(threads), PYTHONPATH=str(path))
    if profile:
        env["VERSUS_PROFILE"] = "1"
    if torch:
        env["VERSUS_TORCH"] = "1"
    if copies > 1:
        env["VERSUS_GATE"] = "1"
    args = [python, "-c", CHILD, *map(str, shape), str(steps), str(warmup)]
    procs = [subprocess.Popen(args, cwd=path, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(copies)]
    if copies > 1:
        for pr in procs:  # every copy warmed up before any is told to go
            if pr.stdout.readline().strip() != "ready":
                for other in procs:
                    other.kill()
                raise SystemExit(f"{path}: a copy failed before its timed steps: {pr.communicate()[1].strip()[-300:]}")
        for pr in procs:
            pr.stdin.write("go\n")
            pr.stdin.flush()
    outs = []
    for pr in procs:
        stdout, stderr = pr.communicate(timeout=900)
        if pr.returncode != 0:
            raise SystemExit(f"{path}: child failed: {(stderr.strip().splitlines() or ['?'])[-1]}")
        out = json.loads(stdout.strip().splitlines()[-1])
        if not torch and not out["file"].startswith(str(path)):
            raise SystemExit(f"{path}: the child imported charrnn from {out['file']}")
        outs.append(out)
    chars = shape[3] * shape[4]
    return {"cps": sum(chars * steps / sum(o["wall"]) for o in outs),
            "best_cps": sum(chars / min(o["wall"]) for o in outs),
            "cpu": statistics.mean(statistics.median(o["cpu"]) for o in outs), "spent": outs[0]["spent"]}


def print_profile(name: str, cpu: dict, spent: dict) -> None:
    """Median over rounds of each kind of work's CPU ms per step, old and new (one thread)."""
    def med(side, key):
        if key == "step (process CPU)":
            return statistics.median(cpu[side])
        vals = []
        for s, c in zip(spent[side], cpu[side]):
            inner = sum(v for k, v in s.items() if k != "forward_backward")
            vals.append({"forward_backward: the rest": s.get("forward_backward", 0) - inner,
                         "outside forward_backward": c - s.get("forward_backward", 0)}.get(key, s.get(key, 0)))
        return statistics.median(vals)
    keys = ["step (process CPU)", "forward_backward", "T loops", "GEMMs", "row kernels", "packing",
            "forward_backward: the rest", "outside forward_backward"]
    print_table([f"{name}, one thread", "old ms", "new ms", "new - old"],
                [[k, f"{med('old', k) * 1e3:.1f}", f"{med('new', k) * 1e3:.1f}",
                  f"{(med('new', k) - med('old', k)) * 1e3:+.1f}"] for k in keys])


def independent(a, sides: dict, one: str) -> list[tuple[str, str, str]]:
    """--independent with --threads 1,N: a side of N one-thread copies of this checkout's training at once,
    each its own process, sharing nothing but the machine. Their summed chars/s over one copy alone is what
    this machine gives N cores' worth of the same work with no barrier, no shared data and no serial part:
    the bar a threaded run's N/1 can reach here, measured under the same load (a host whose cores slow each
    other down shows it here first)."""
    if not a.independent:
        return []
    hi = a.threads[1]
    sides[f"{hi} x 1 thr"] = (ROOT, sys.executable, 1, False, hi)
    return [(f"independent {hi}/1", f"{hi} x 1 thr", one)]


def make_sides(a, p) -> tuple[dict, list[tuple[str, str, str]]]:
    """The sides, label -> (checkout, python, threads, torch?, copies at once), in round order; and the ratios to report
    (name, numerator side, denominator side)."""
    if a.other:
        if a.torch:
            p.error("--other compares the two checkouts, without --torch")
        other = Path(a.other).resolve()
        other_py = a.other_python or (str(other / ".venv/bin/python") if (other / ".venv/bin/python").exists()
                                      else sys.executable)
        if len(a.threads) == 1:
            n = a.threads[0]
            return {"old": (other, other_py, n, False, 1), "new": (ROOT, sys.executable, n, False, 1)}, [("new/old", "new", "old")]
        # --other with --threads A,B: both checkouts at both counts in the same rounds, so each one's B/A
        # scaling is measured against the other's under the same load (the old code's scaling is the bar)
        lo, hi = a.threads
        sides = {f"old {n} thr": (other, other_py, n, False, 1) for n in (lo, hi)}
        sides.update({f"new {n} thr": (ROOT, sys.executable, n, False, 1) for n in (lo, hi)})
        return sides, independent(a, sides, f"new {lo} thr") + [(f"new {hi}/{lo}", f"new {hi} thr", f"new {lo} thr"), (f"old {hi}/{lo}", f"old {hi} thr", f"old {lo} thr"),
                       (f"new/old {hi} thr", f"new {hi} thr", f"old {hi} thr")]
    if len(a.threads) != 2:
        p.error("without --other, give two thread counts: --threads 1,2")
    lo, hi = a.threads
    sides = {f"{n} thr": (ROOT, sys.executable, n, False, 1) for n in (lo, hi)}
    ratios = [(f"{hi}/{lo} thr", f"{hi} thr", f"{lo} thr")] + independent(a, sides, f"{lo} thr")
    if a.torch:
        sides.update({f"torch {n} thr": (ROOT, sys.executable, n, True, 1) for n in (lo, hi)})
        ratios.append((f"torch {hi}/{lo}", f"torch {hi} thr", f"torch {lo} thr"))
    return sides, ratios


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--other", default=None, help="the other checkout (a git worktree of an older commit)")
    p.add_argument("--other-python", default=None, help="its interpreter (default OTHER/.venv/bin/python)")
    p.add_argument("--rows", default="lstm256,lstm512", help=f"comma list of {','.join(SHAPES)}")
    p.add_argument("--threads", default="2", help="N (with --other), or A,B: this checkout (and with --other the other "
                   "one too) at A and at B threads")
    p.add_argument("--torch", action="store_true", help="without --other: PyTorch at the same thread counts too")
    p.add_argument("--independent", action="store_true",
                   help="with --threads 1,N: also N independent one-thread processes at once (the machine's own N/1)")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--steps", type=int, default=None, help="timed steps per process (default: bench.py's)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--profile", action="store_true",
                   help="with --other, on one thread: CPU ms per step in the T loops, GEMMs, row kernels, packing")
    p.add_argument("--json", metavar="FILE")
    a = p.parse_args(argv)
    try:
        a.threads = [int(x) for x in a.threads.split(",")]
    except ValueError:
        p.error("--threads takes N or A,B (positive integers)")
    if min(a.threads) < 1:
        p.error("--threads takes N or A,B (positive integers)")
    if a.independent and (len(a.threads) != 2 or a.threads[0] != 1):
        p.error("--independent needs --threads 1,N")
    if a.profile:
        if not a.other:
            p.error("--profile needs --other")
        a.threads = [1]
    sides, ratio_defs = make_sides(a, p)
    header = machine_header(import_torch() if a.torch else None)
    header.update({"threads": a.threads, "rounds": a.rounds, "sides": list(sides), "new": f"{git_rev(ROOT)} ({ROOT})"})
    if a.other:
        other = next(v[0] for k, v in sides.items() if k.startswith("old"))
        header["old"] = f"{git_rev(other)} ({other})"
    print_header(header, f"versus: {', '.join(sides)} ({header['new']})")
    results = []
    for name in a.rows.split(","):
        shape = SHAPES[name]
        steps = a.steps or STEPS[name]
        got, best, cpu, spent = ({s: [] for s in sides} for _ in range(4))
        for r in range(a.rounds):
            for side in (list(sides) if r % 2 == 0 else list(sides)[::-1]):
                path, python, threads, torch, copies = sides[side]
                out = run_side(path, python, threads, torch, shape, steps, a.warmup, a.profile, copies)
                spent[side].append(out["spent"])
                got[side].append(out["cps"])
                best[side].append(out["best_cps"])
                cpu[side].append(out["cpu"])
            print(f"  {name} round {r}: " + "  ".join(f"{s} {got[s][-1]:,.0f}" for s in sides) + " chars/s",
                  flush=True)
        ratios = {rn: [x / y for x, y in zip(got[num], got[den])] for rn, num, den in ratio_defs}
        best_ratio = {rn: max(best[num]) / max(best[den]) for rn, num, den in ratio_defs}
        results.append({"row": name, "shape": shape, "steps": steps, "cps": got, "cpu_s_per_step": cpu,
                        "best_step_cps": best, "best_step_ratio": best_ratio,
                        "ratio_rounds": ratios, "ratio": {k: statistics.median(v) for k, v in ratios.items()},
                        "spent_s_per_step": spent})
        if a.profile:
            print_profile(name, cpu, spent)
    print()
    rows = []
    for res in results:
        line = [res["row"]]
        for s in sides:
            v = res["cps"][s]
            line.append(f"{statistics.median(v):,.0f} ({min(v):,.0f}-{max(v):,.0f})")
        for rn, _, _ in ratio_defs:
            line += [f"{res['ratio'][rn]:.3f}", " ".join(f"{x:.2f}" for x in res["ratio_rounds"][rn]),
                     f"{res['best_step_ratio'][rn]:.3f}"]
        line.append(" / ".join(f"{statistics.median(res['cpu_s_per_step'][s]) * 1e3:,.0f}" for s in sides))
        rows.append(line)
    print_table(["row", *[f"{s} chars/s (range)" for s in sides],
                 *[h for rn, _, _ in ratio_defs for h in (rn, "per round", "best steps")],
                 "CPU ms/step " + " / ".join(sides)], rows)
    print("best steps: the fastest single step of each side over all its rounds, as a ratio (a step the machine's\n"
          "other load did not reach; on a shared machine it moves less than the per-round medians).")
    note_load_at_end(header)
    save_json({"header": header, "rows": results}, a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())

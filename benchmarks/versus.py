#!/usr/bin/env python
"""Training speed of this checkout against another one (an older commit), alternating rounds in fresh
processes: the evidence behind "no regression against the old code" in benchmarks/README.md.

Each round starts one process per side, old and new in turn (old first in even rounds, new first in odd
ones, so slow drift of the machine cancels). A side's process builds the Trainer its own checkout's
bench.py builds (`make_trainer`: the same synthetic corpus, Adam, clip 5, dropout 0), runs `--warmup`
steps, then times `--steps` train_step calls, and reports chars/s (wall clock) and process CPU seconds per
step (less disturbed by other processes than wall clock). The thread count reaches both sides as
CHARRNN_THREADS (read by the old code's usable_cores and the new code's threads()).

    python benchmarks/versus.py --other /work/wt-old --rows lstm256,lstm512 --threads 2 --rounds 4

The other checkout runs on its own venv (OTHER/.venv/bin/python) when it has one, and with PYTHONPATH set
to it either way, so `import charrnn` finds its code. Nothing is asserted: it prints (and with --json saves)
what it measured. Run it on a quiet machine (on a shared one through /work/notes/bench).
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
from _common import ROOT, machine_header, note_load_at_end, print_header, print_table, save_json  # noqa: E402

# The child: the checkout's own bench.make_trainer (so both sides build what their bench.py builds).
CHILD = r"""
import json, os, sys, time
sys.path.insert(0, os.path.join(os.getcwd(), "benchmarks"))
import bench
cell, layers, hidden, B, T, steps, warmup = sys.argv[1:8]
layers, hidden, B, T, steps, warmup = map(int, (layers, hidden, B, T, steps, warmup))
row = bench.Row("versus", "train", cell, layers, hidden, B, T)
tr, run_dir = bench.make_trainer(row, B, T, steps + warmup)
spent = {}
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


def run_side(path: Path, python: str, shape, steps: int, warmup: int, threads: int, profile: bool) -> dict:
    env = dict(os.environ, CHARRNN_THREADS=str(threads), PYTHONPATH=str(path))
    if profile:
        env["VERSUS_PROFILE"] = "1"
    args = [python, "-c", CHILD, *map(str, shape), str(steps), str(warmup)]
    r = subprocess.run(args, cwd=path, env=env, capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        raise SystemExit(f"{path}: child failed: {(r.stderr.strip().splitlines() or ['?'])[-1]}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    if not out["file"].startswith(str(path)):
        raise SystemExit(f"{path}: the child imported charrnn from {out['file']}")
    return out


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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--other", required=True, help="the other checkout (a git worktree of an older commit)")
    p.add_argument("--other-python", default=None, help="its interpreter (default OTHER/.venv/bin/python)")
    p.add_argument("--rows", default="lstm256,lstm512", help=f"comma list of {','.join(SHAPES)}")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--steps", type=int, default=None, help="timed steps per process (default: bench.py's)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--profile", action="store_true",
                   help="on one thread: CPU ms per step in the T loops, GEMMs, row kernels, packing, the rest")
    p.add_argument("--json", metavar="FILE")
    a = p.parse_args(argv)
    if a.profile:
        a.threads = 1
    other = Path(a.other).resolve()
    other_py = a.other_python or (str(other / ".venv/bin/python") if (other / ".venv/bin/python").exists()
                                  else sys.executable)
    sides = {"old": (other, other_py), "new": (ROOT, sys.executable)}
    header = machine_header(None)
    header.update({"threads": a.threads, "rounds": a.rounds, "old": f"{git_rev(other)} ({other})",
                   "new": f"{git_rev(ROOT)} ({ROOT})"})
    print_header(header, f"versus: new {header['new']} against old {header['old']}, {a.threads} threads")
    results = []
    for name in a.rows.split(","):
        shape = SHAPES[name]
        steps = a.steps or STEPS[name]
        chars = shape[3] * shape[4]
        got = {"old": [], "new": []}
        cpu = {"old": [], "new": []}
        spent = {"old": [], "new": []}
        for r in range(a.rounds):
            for side in (("old", "new") if r % 2 == 0 else ("new", "old")):
                out = run_side(*sides[side], shape, steps, a.warmup, a.threads, a.profile)
                spent[side].append(out["spent"])
                got[side].append(chars * steps / sum(out["wall"]))
                cpu[side].append(statistics.median(out["cpu"]))
            print(f"  {name} round {r}: old {got['old'][-1]:,.0f}  new {got['new'][-1]:,.0f} chars/s", flush=True)
        ratios = [n / o for n, o in zip(got["new"], got["old"])]
        results.append({"row": name, "shape": shape, "steps": steps, "cps": got, "cpu_s_per_step": cpu,
                        "ratio_rounds": ratios, "ratio": statistics.median(ratios), "spent_s_per_step": spent})
        if a.profile:
            print_profile(name, cpu, spent)
    print()
    rows = []
    for res in results:
        o, n = res["cps"]["old"], res["cps"]["new"]
        rows.append([res["row"], f"{statistics.median(o):,.0f}", f"{min(o):,.0f}-{max(o):,.0f}",
                     f"{statistics.median(n):,.0f}", f"{min(n):,.0f}-{max(n):,.0f}",
                     f"{res['ratio']:.3f}", " ".join(f"{x:.2f}" for x in res["ratio_rounds"]),
                     f"{statistics.median(res['cpu_s_per_step']['old']) * 1e3:,.0f} / "
                     f"{statistics.median(res['cpu_s_per_step']['new']) * 1e3:,.0f}"])
    print_table(["row", "old chars/s", "old range", "new chars/s", "new range", "new/old", "per round",
                 "CPU ms/step old / new"], rows, right={1, 2, 3, 4, 5})
    note_load_at_end(header)
    save_json({"header": header, "rows": results}, a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())

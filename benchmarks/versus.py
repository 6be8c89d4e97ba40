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
for i in range(warmup):
    tr.train_step(*tr.batches.batch(i))
wall, cpu = [], []
for i in range(warmup, warmup + steps):
    x, y = tr.batches.batch(i)
    w, c = time.perf_counter(), time.process_time()
    loss = tr.train_step(x, y)
    wall.append(time.perf_counter() - w)
    cpu.append(time.process_time() - c)
import charrnn
print(json.dumps({"file": charrnn.__file__, "wall": wall, "cpu": cpu, "loss": float(loss)}))
"""

SHAPES = {  # bench.py's training rows
    "lstm128": ("lstm", 2, 128, 50, 50), "lstm256": ("lstm", 2, 256, 64, 100), "gru256": ("gru", 2, 256, 64, 100),
    "rnn256": ("rnn", 2, 256, 64, 100), "lstm512": ("lstm", 2, 512, 64, 100),
}
STEPS = {"lstm128": 20, "lstm256": 5, "gru256": 5, "rnn256": 8, "lstm512": 3}


def git_rev(path: Path) -> str:
    r = subprocess.run(["git", "-C", str(path), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return r.stdout.strip() or "?"


def run_side(path: Path, python: str, shape, steps: int, warmup: int, threads: int) -> dict:
    env = dict(os.environ, CHARRNN_THREADS=str(threads), PYTHONPATH=str(path))
    args = [python, "-c", CHILD, *map(str, shape), str(steps), str(warmup)]
    r = subprocess.run(args, cwd=path, env=env, capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        raise SystemExit(f"{path}: child failed: {(r.stderr.strip().splitlines() or ['?'])[-1]}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    if not out["file"].startswith(str(path)):
        raise SystemExit(f"{path}: the child imported charrnn from {out['file']}")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--other", required=True, help="the other checkout (a git worktree of an older commit)")
    p.add_argument("--other-python", default=None, help="its interpreter (default OTHER/.venv/bin/python)")
    p.add_argument("--rows", default="lstm256,lstm512", help=f"comma list of {','.join(SHAPES)}")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--steps", type=int, default=None, help="timed steps per process (default: bench.py's)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--json", metavar="FILE")
    a = p.parse_args(argv)
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
        for r in range(a.rounds):
            for side in (("old", "new") if r % 2 == 0 else ("new", "old")):
                out = run_side(*sides[side], shape, steps, a.warmup, a.threads)
                got[side].append(chars * steps / sum(out["wall"]))
                cpu[side].append(statistics.median(out["cpu"]))
            print(f"  {name} round {r}: old {got['old'][-1]:,.0f}  new {got['new'][-1]:,.0f} chars/s", flush=True)
        ratios = [n / o for n, o in zip(got["new"], got["old"])]
        results.append({"row": name, "shape": shape, "steps": steps, "cps": got, "cpu_s_per_step": cpu,
                        "ratio_rounds": ratios, "ratio": statistics.median(ratios)})
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

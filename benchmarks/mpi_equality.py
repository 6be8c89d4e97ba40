"""How close a K-rank `mpirun -n K charrnn train` comes to the one-process run with the same seed and batch:
the largest difference of the training losses (every step) and validation losses over N steps.

    python benchmarks/mpi_equality.py [--steps 200] [--ranks 2 4] [--keep DIR]

Trains the bundled tiny Shakespeare, LSTM 2x128, dropout 0.2, batch 16 x 64, constant lr, on one thread per
process (the numbers do not depend on the thread count). Needs mpirun and mpi4py; as root it sets Open MPI's
run-as-root variables. Not a timing: run it under /work/notes/busy-style sharing, any load.
"""
import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

MODEL = ["--hidden", "128", "--layers", "2", "--set", "model.dropout=0.2", "--batch-size", "16", "--seq-len", "64",
         "--set", "optim.schedule=constant", "--set", "train.log_every=1", "--eval-every", "50",
         "--sample-every", "0", "--checkpoint-every", "0", "--seed", "11", "--plain"]


def losses(run: Path) -> tuple[np.ndarray, np.ndarray]:
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    recs = [r for r in recs if "event" not in r]
    train = np.array([r["train_loss"] for r in recs])
    val = np.array([r["val_loss"] for r in recs if r.get("val_loss") is not None])
    return train, val


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--ranks", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--keep", help="run directories go here (default: a temporary directory)")
    a = ap.parse_args()
    charrnn = shutil.which("charrnn", path=os.path.dirname(sys.executable)) or "charrnn"
    env = dict(os.environ, CHARRNN_THREADS="1", OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    root = Path(a.keep or tempfile.mkdtemp(prefix="mpi-equality-"))
    args = [*MODEL, "--max-steps", str(a.steps)]
    runs = {1: root / "k1"}
    subprocess.run([charrnn, "train", "--out", str(runs[1]), *args], env=env, check=True, capture_output=True)
    for k in a.ranks:
        runs[k] = root / f"k{k}"
        subprocess.run(["mpirun", "-q", "-n", str(k), "--oversubscribe", "--bind-to", "none", charrnn, "train",
                        "--out", str(runs[k]), *args], env=env, check=True, capture_output=True)
    t1, v1 = losses(runs[1])
    print(f"{platform.processor() or platform.machine()}, {a.steps} steps, LSTM 2x128 dropout 0.2, B16 T64")
    print(f"one process: train loss {t1[0]:.4f} -> {t1[-1]:.4f}, {len(v1)} evaluations")
    for k in a.ranks:
        tk, vk = losses(runs[k])
        dt, dv = np.abs(tk - t1), np.abs(vk - v1)
        print(f"{k} ranks: largest |train loss - one process's| {dt.max():.3g} (relative {(dt / t1).max():.3g}, "
              f"at step {int(dt.argmax()) + 1}); val {dv.max():.3g}; steps bit-identical: {int((dt == 0).sum())}")


if __name__ == "__main__":
    main()

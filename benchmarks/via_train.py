"""Training speed as `charrnn train` itself reports it: a subprocess on the bundled corpus, read back from
its metrics.jsonl. bench.py's rows time the Trainer's step function; this is what a user's run does,
data loading, logging, the live/plain reporter and the Python loop included.

The rate is taken over the steady steps only: from the first logged step at or after `skip` (compile or
cache loading, first-touch of the workspaces) to the last one, from the logged `elapsed_s`, so no
evaluation or checkpoint falls inside (both are switched off for the measurement).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "corpora" / "tinyshakespeare.txt"


def charrnn_train_cps(cell: str, hidden: int, layers: int, B: int, T: int, steps: int, skip: int = 10,
                      timeout: float = 1800.0) -> dict:
    """Run `charrnn train` for `steps` steps and return {"cps": chars/s over the steady steps, ...}.
    Dropout 0 (the default is 0.2): the PyTorch side it is compared with has none."""
    out = Path(tempfile.mkdtemp(prefix="charrnn-via-train-"))
    cmd = [sys.executable, "-m", "charrnn", "train", str(CORPUS), "--out", str(out / "run"), "--plain",
           "--model", cell, "--hidden", str(hidden), "--layers", str(layers), "--batch-size", str(B),
           "--seq-len", str(T), "--dropout", "0", "--max-steps", str(steps), "--eval-every", "0",
           "--sample-every", "0", "--checkpoint-every", "0", "--set", "train.log_every=1"]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                           env=dict(os.environ, PYTHONUNBUFFERED="1"))
        if r.returncode != 0:
            return {"error": (r.stderr.strip().splitlines() or ["exit %d" % r.returncode])[-1]}
        recs = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines() if line]
        recs = [x for x in recs if x.get("elapsed_s") is not None]
        steady = [x for x in recs if x["step"] >= skip]
        if len(steady) < 2:
            return {"error": f"too few logged steps after step {skip}"}
        a, b = steady[0], steady[-1]
        cps = (b["step"] - a["step"]) * B * T / (b["elapsed_s"] - a["elapsed_s"])
        return {"cps": cps, "steps": b["step"] - a["step"], "first_step_s": recs[0]["elapsed_s"]}
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f}s"}
    finally:
        shutil.rmtree(out, ignore_errors=True)

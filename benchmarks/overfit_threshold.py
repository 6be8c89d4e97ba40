"""How big a model can be for its text before it memorises it: the measurement behind the warning
`charrnn train` prints at the start (charrnn/training/sizing.py, OVERFIT_PARAMS_PER_CHAR).

    python benchmarks/overfit_threshold.py [--sizes 5000,20000,60000] [--configs tiny,default]

Trains the `tiny` and `default` configs with their own budgets (what `charrnn train my.txt [--config
tiny]` does: tiny's 1,200 steps, the default's 20 epochs) on the first N characters of the bundled tiny
Shakespeare and of this repository's Python sources, one after the other, and prints a table:
parameters, training characters, their ratio, the final smoothed train loss, the final and best
validation loss, and the gap (final validation - final train). Step and epoch budgets, so the numbers
do not depend on the machine's speed or load.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(corpus: Path, config: str, out: Path) -> dict:
    cmd = [sys.executable, "-m", "charrnn", "train", str(corpus), "--config", config, "--out", str(out), "--plain",
           "--sample-every", "0", "--eval-every", "50"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr}")
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "train_loss" in r]
    vals = [r["val_loss"] for r in steps if r.get("val_loss") is not None]
    meta = json.loads(subprocess.run([sys.executable, "-m", "charrnn", "info", str(out / "last.npz"), "--json"],
                                     check=True, capture_output=True, text=True).stdout)
    train_chars = int(meta["corpus"]["n_chars"] * 0.9)  # the default 90/5/5 split
    final_train = steps[-1]["train_loss_smooth"]
    return {"params": meta["model"]["parameters"], "train_chars": train_chars, "steps": steps[-1]["step"],
            "epochs": steps[-1]["epoch"], "train": final_train, "val": vals[-1], "best": min(vals),
            "gap": vals[-1] - final_train}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="5000,20000,60000")
    ap.add_argument("--configs", default="tiny,default")
    args = ap.parse_args()
    print(f"# {platform.machine()}, {os.cpu_count()} cores; each config with its own budget")
    print("| corpus | config | params | train chars | params/char | steps | epochs | train | val | best val | gap |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    text = (ROOT / "corpora" / "tinyshakespeare.txt").read_text(encoding="utf-8")
    code = "\n\n".join(p.read_text(encoding="utf-8") for p in sorted((ROOT / "charrnn").rglob("*.py")))
    with tempfile.TemporaryDirectory() as tmp:
        corpora = [(f"shakespeare[:{n}]", text[:int(n)]) for n in args.sizes.split(",")]
        corpora += [(f"charrnn/*.py[:{n}]", code[:int(n)]) for n in args.sizes.split(",")[:2]]
        for name, body in corpora:
            path = Path(tmp) / f"{name.split('[')[0].replace('/', '-').replace('*', 'all')}-{len(body)}.txt"
            path.write_text(body, encoding="utf-8")
            for config in args.configs.split(","):
                r = run(path, config, Path(tmp) / f"run-{path.stem}-{config}")
                print(f"| {name} | {config} | {r['params']:,} | {r['train_chars']:,} | "
                      f"{r['params'] / r['train_chars']:.1f} | {r['steps']} | {r['epochs']} | {r['train']:.3f} | "
                      f"{r['val']:.3f} | {r['best']:.3f} | {r['gap']:+.3f} |", flush=True)


if __name__ == "__main__":
    main()

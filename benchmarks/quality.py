#!/usr/bin/env python
"""Best text per minute (issue 14): validation loss that `charrnn train` and a hand-written PyTorch trainer
reach in the same wall-clock budget, both as a user runs them.

Sides, each a subprocess whose clock starts when it starts (start-up counts against the budget):
  reference   benchmarks/torch_reference.py: nn.LSTM 2x256 + Linear, B64 T100, Adam 2e-3, global-norm clip
              5, every weight and bias U(+-0.08), state carried across batches; its clock starts on the
              script's first line, before `import torch`.
  same        (a) `charrnn train` with the reference's hyperparameters spelled out (model, batch, optimizer,
              constant lr, no dropout, no evaluation or samples during the run), charrnn's default init.
  box         (b) out of the box: `charrnn train CORPUS --max-time B --out DIR`, nothing else (runs after
              the first add --seed N: two runs of one seed would differ only by timing).
Both trainers see the first 90 % of the corpus (contiguous split); one PyTorch evaluator scores every model
on the next 5 % read as one stream from a zero state: the headline number, in nats/char. Curves: weights
saved during the runs (charrnn's own checkpoints, the reference's in-memory copies) scored the same way on
the first --curve-chars characters of val.

    python benchmarks/quality.py                                  # 180 s and 600 s, 2 runs: ~90 minutes
    python benchmarks/quality.py --budgets 180 --sides same,reference
    python benchmarks/quality.py --corpus pystdlib                # or manpages-de, or a path
    python benchmarks/quality.py --quick                          # smoke test, ~2 minutes
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, import_torch, machine_header, note_load_at_end, print_header, print_table, save_json  # noqa: E402
from quality_eval import (CheckpointWatcher, Evaluator, charrnn_snapshots, charrnn_weights,  # noqa: E402
                          reference_snapshots, reference_weights, val_split)

SIDES = ("reference", "same", "box")
LABEL = {"reference": "reference (torch)", "same": "(a) charrnn, same recipe", "box": "(b) charrnn, out of the box"}
TARGET = {"same": -0.03, "box": -0.08}  # charrnn minus reference, nats/char (issue 14)
RECIPE = dict(cell="lstm", layers=2, hidden=256, batch=64, seq=100, lr=2e-3, clip=5.0)
MAX_TIME_MEANS = ("--max-time counts wall time from the moment the `charrnn train` command starts running "
                  "(before its heavy imports: numpy, Numba, the kernels, the corpus and the first step all count), "
                  "to the start of the last step; the final validation and checkpoint come after it. The "
                  "reference's budget counts from its script's first line, before `import torch`.")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budgets", default="180,600", help="comma-separated seconds (default 180,600)")
    p.add_argument("--runs", type=int, default=2, help="runs per side and budget (default 2)")
    p.add_argument("--sides", default=",".join(SIDES), help="comma-separated, from: " + ", ".join(SIDES))
    p.add_argument("--corpus", default="shakespeare", help="a text file, or shakespeare, pystdlib, manpages-de")
    p.add_argument("--curve-chars", type=int, default=20000, help="val characters per curve point (0 = all)")
    p.add_argument("--val-chars", type=int, default=0, help="val characters for the final score (0 = all)")
    p.add_argument("--curve-points", type=int, default=12, help="about this many curve points per run")
    p.add_argument("--threads", type=int, default=0, help="torch threads for reference and evaluator (0 = torch's default)")
    p.add_argument("--quick", action="store_true", help="smoke test: 10 s budget, 1 run, 3000 val chars")
    p.add_argument("--keep", metavar="DIR", help="keep the run directories here (default: a temp dir, removed)")
    p.add_argument("--png", metavar="FILE", help="curve plot (default quality_<corpus>.png; needs matplotlib)")
    p.add_argument("--no-png", action="store_true")
    p.add_argument("--json", metavar="FILE", help="also save the results as JSON")
    p.add_argument("--box-set", action="append", default=[], metavar="KEY=VALUE",
                   help="try a candidate default: pass `--set KEY=VALUE` to the (b) side only (repeatable)")
    p.add_argument("--same-set", action="append", default=[], metavar="KEY=VALUE",
                   help="try a candidate default init on the (a) side only: model.init, init_scale, forget_bias "
                        "or orthogonal_recurrent (the recipe itself is the reference's; repeatable)")
    a = p.parse_args(argv)
    if a.quick:
        a.budgets, a.runs, a.curve_chars, a.val_chars, a.curve_points = "10", 1, 3000, 3000, 3
    try:
        a.budgets = [float(x) for x in a.budgets.split(",") if x]
    except ValueError:
        p.error("--budgets must be comma-separated seconds, e.g. 180,600")
    a.sides = [x for x in a.sides.split(",") if x]
    if not a.budgets or min(a.budgets) <= 0 or a.runs < 1 or not set(a.sides) <= set(SIDES) or not a.sides:
        p.error("need budgets > 0, --runs >= 1 and sides from " + ", ".join(SIDES))
    bad = [kv for kv in a.same_set if kv.split("=", 1)[0] not in SAME_SET_KEYS]
    if bad:
        p.error(f"--same-set {bad[0]}: (a) shares the reference's recipe; only {', '.join(SAME_SET_KEYS)} may vary")
    return a


def resolve_corpus(name: str) -> Path:
    if name == "shakespeare":
        return ROOT / "corpora" / "tinyshakespeare.txt"
    path = Path(name)
    if path.is_file():
        return path
    from make_corpora import NAMES, corpus_path
    if name in NAMES:
        return corpus_path(name)
    raise SystemExit(f"error: no corpus file {name!r}; give a path or one of shakespeare, {', '.join(NAMES)}")


# What (a) may vary: charrnn's own default init. Anything else would change the recipe it shares.
SAME_SET_KEYS = ("model.init", "model.init_scale", "model.forget_bias", "model.orthogonal_recurrent")


def charrnn_cmd(side: str, corpus: Path, budget: float, run: int, out: Path, ckpt_every: int,
                box_sets: tuple[str, ...] = (), same_sets: tuple[str, ...] = ()) -> list[str]:
    exe = shutil.which("charrnn", path=str(Path(sys.executable).parent)) or shutil.which("charrnn")
    base = [exe] if exe else [sys.executable, "-m", "charrnn"]
    cmd = base + ["train", str(corpus), "--max-time", f"{budget:g}", "--out", str(out)]
    if side == "box":
        return cmd + (["--seed", str(run)] if run > 1 else []) + [x for kv in box_sets for x in ("--set", kv)]
    r = RECIPE
    return cmd + ["--seed", str(run), "--model", r["cell"], "--layers", str(r["layers"]), "--hidden", str(r["hidden"]),
                  "--batch-size", str(r["batch"]), "--seq-len", str(r["seq"]), "--optimizer", "adam", "--lr", f"{r['lr']:g}",
                  "--grad-clip", f"{r['clip']:g}", "--dropout", "0", "--embedding", "0", "--max-steps", "0",
                  "--max-epochs", "0", "--eval-every", "0", "--sample-every", "0", "--checkpoint-every", str(ckpt_every),
                  "--keep-last", "0", "--plain", "--set", "optim.schedule=constant", "--set", "optim.warmup_steps=0",
                  "--set", "optim.weight_decay=0", "--set", "optim.grad_clip_value=0", "--set", "optim.beta1=0.9",
                  "--set", "optim.beta2=0.999", "--set", "optim.eps=1e-8"] + [x for kv in same_sets for x in ("--set", kv)]


def reference_cmd(corpus: Path, budget: float, run: int, out: Path, threads: int, snap_every: float) -> list[str]:
    r = RECIPE
    return [sys.executable, str(Path(__file__).resolve().parent / "torch_reference.py"), str(corpus),
            "--seconds", f"{budget:g}", "--out", str(out), "--snapshot-every", f"{snap_every:g}", "--seed", str(run),
            "--cell", r["cell"], "--layers", str(r["layers"]), "--hidden", str(r["hidden"]), "--batch", str(r["batch"]),
            "--seq", str(r["seq"]), "--lr", f"{r['lr']:g}", "--clip", f"{r['clip']:g}", "--threads", str(threads)]


def run_side(side, corpus, budget, run, work: Path, a) -> dict:
    """One training subprocess; returns its snapshots, final weights and timing."""
    out = work / f"{side}-{budget:g}s-run{run}"
    # charrnn (a) checkpoints by steps: ~3.5 steps/s is LSTM 2x256 B64 T100 on 2 quiet cores (22k chars/s)
    ckpt_every = max(5, int(budget * 3.5 / a.curve_points))
    cmd = (reference_cmd(corpus, budget, run, out, a.threads, budget / a.curve_points) if side == "reference"
           else charrnn_cmd(side, corpus, budget, run, out / "run", ckpt_every, tuple(a.box_set), tuple(a.same_set)))
    watcher = None
    if side != "reference":
        watcher = CheckpointWatcher(out / "run", out / "captured")
        (out / "run").mkdir(parents=True)  # an empty directory is a new run for charrnn
        watcher.start()
    t = time.perf_counter()
    r = subprocess.run(cmd, cwd=work, capture_output=True, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    wall = time.perf_counter() - t
    if watcher is not None:
        watcher.stop.set()
        watcher.join()
    if r.returncode != 0:
        raise SystemExit(f"error: {side} run failed (exit {r.returncode}): {' '.join(cmd)}\n{r.stderr[-2000:]}")
    res = {"side": side, "budget": budget, "run": run, "wall_s": wall, "cmd": cmd}
    if side == "reference":
        snaps, log = reference_snapshots(out)
        res.update(steps=log["steps"], chars=log["steps"] * log["B"] * log["T"], last_step_s=log["step_elapsed_s"][-1],
                   rate=log["steps"] * log["B"] * log["T"] / log["step_elapsed_s"][-1],
                   step10_s=log["step_elapsed_s"][min(9, log["steps"] - 1)], torch_threads=log["torch_threads"])
        res["_load"] = lambda p, log=log: reference_weights(p, log)
        res["_final"] = snaps[-1]
    else:
        import json
        snaps = charrnn_snapshots(out / "captured")
        recs = [json.loads(x) for x in (out / "run" / "metrics.jsonl").read_text(encoding="utf-8").splitlines() if x]
        from charrnn.checkpoints import npz as checkpoint
        _, meta = checkpoint.load(out / "run" / "last.npz")
        steps, B, T = meta["progress"]["step"], meta["batch"]["batch_size"], meta["batch"]["seq_len"]
        first = next((m for m in recs if m["step"] >= 10), recs[0] if recs else None)
        last = recs[-1] if recs else None  # the last *logged* step (every log_every steps)
        res.update(steps=steps, chars=steps * B * T, step10_s=first["elapsed_s"] if first else None,
                   last_step_s=min(meta["progress"]["elapsed_s"], budget),  # it started before the budget ran out
                   rate=last["step"] * B * T / last["elapsed_s"] if last else None,
                   saved_elapsed_s=meta["progress"]["elapsed_s"], own_val_streams=meta["losses"]["val_loss"])
        res["_load"] = charrnn_weights
        from quality_eval import Snapshot
        # the saved elapsed_s includes the final validation: the curve puts the final model at its last step
        res["_final"] = Snapshot(steps, res["last_step_s"], out / "run" / "last.npz")
    res["_snaps"] = [s for s in snaps if s.step != res["_final"].step] + [res["_final"]]
    return res


def score(res: dict, ev: Evaluator, a) -> None:
    """Final model on val (--val-chars), every snapshot on the curve's prefix."""
    load = res.pop("_load")
    final = res.pop("_final")
    w = load(final.path)
    res["val"] = ev.one_stream(w, a.val_chars)
    res["curve"] = [(s.elapsed_s, s.step, ev.one_stream(load(s.path), a.curve_chars)) for s in res.pop("_snaps")]
    if res["side"] != "reference":  # cross-check the loading: charrnn's own kernels on the same text
        from charrnn.checkpoints import store
        from charrnn.sampling.generate import evaluate
        loaded = store.load(final.path)
        text = ev.val_text[: a.val_chars + 1] if a.val_chars else ev.val_text
        total, n = evaluate(loaded.model, loaded.vocab.encode(text))
        res["charrnn_own_val"] = total / n


def report(results: list[dict], a, corpus: Path) -> None:
    measure = "whole val split" if not a.val_chars else f"first {a.val_chars:,} val chars"
    for budget in a.budgets:
        rows = [r for r in results if r["budget"] == budget]
        print(f"\n== {budget:g} s budget on {corpus.name}: val loss in nats/char ({measure} as one stream, "
              "one torch evaluator) ==")
        print_table(["side", "run", "steps", "chars/s from start", "s to step 10", "last step at s", "wall s", "val"], [
            [LABEL[r["side"]], str(r["run"]), f"{r['steps']:,}", f"{r['rate']:,.0f}" if r["rate"] else "-",
             f"{r['step10_s']:.1f}" if r["step10_s"] is not None else "-",
             f"{r['last_step_s']:.1f}" if r["last_step_s"] else "-", f"{r['wall_s']:.1f}", f"{r['val']:.4f}"]
            for r in rows])
        mean = {s: [r["val"] for r in rows if r["side"] == s] for s in SIDES}
        for side in ("same", "box"):
            if mean[side] and mean["reference"]:
                c, t = sum(mean[side]) / len(mean[side]), sum(mean["reference"]) / len(mean["reference"])
                ok = "met" if c - t <= TARGET[side] else "NOT met"
                print(f"{LABEL[side]}: {c:.4f} (runs {', '.join(f'{x:.4f}' for x in mean[side])}) vs reference "
                      f"{t:.4f} (runs {', '.join(f'{x:.4f}' for x in mean['reference'])}): {c - t:+.4f}; "
                      f"target <= {TARGET[side]:+.2f}: {ok}")
        gaps = [abs(r["charrnn_own_val"] - r["val"]) for r in rows if r.get("charrnn_own_val") is not None]
        if gaps:
            print(f"cross-check: charrnn's own evaluation of its final weights differs from the torch evaluator's by "
                  f"at most {max(gaps):.1e}" + ("  WARNING: the weights may be loaded wrongly" if max(gaps) > 2e-3 else ""))
        curve = "val" if not a.curve_chars else f"first {a.curve_chars:,} val chars"
        print(f"\ncurves, {budget:g} s ({curve}; seconds on each run's own clock: loss)")
        for r in rows:
            pts = "  ".join(f"{t:.0f}s:{v:.3f}" for t, _, v in r["curve"])
            print(f"  {LABEL[r['side']]:<28} run {r['run']}  {pts}")


def plot(results: list[dict], a, corpus: Path) -> str | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    colours = {"reference": "tab:gray", "same": "tab:blue", "box": "tab:orange"}
    fig, axes = plt.subplots(1, len(a.budgets), figsize=(6 * len(a.budgets), 4.2), squeeze=False)
    for ax, budget in zip(axes[0], a.budgets):
        for r in (r for r in results if r["budget"] == budget):
            xs, _, ys = zip(*r["curve"])
            ax.plot(xs, ys, marker="o", ms=3, color=colours[r["side"]], ls="-" if r["run"] == 1 else "--",
                    label=f"{LABEL[r['side']]}, run {r['run']}")
        ax.set(title=f"{corpus.name}, {budget:g} s budget", xlabel="seconds on the run's clock (from its start)",
               ylabel=f"val loss, nats/char ({'all' if not a.curve_chars else f'first {a.curve_chars:,}'} chars)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    path = a.png or f"quality_{corpus.stem}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    a = parse_args(argv)
    torch = import_torch()
    if torch is None:
        raise SystemExit("error: quality.py needs torch for the reference and the evaluator: pip install -e '.[bench]'")
    if a.threads:
        torch.set_num_threads(a.threads)
    corpus = resolve_corpus(a.corpus)
    header = machine_header(torch, a.threads or None)
    print_header(header, f"charrnn vs a PyTorch reference at equal wall-clock budgets ({corpus.name})")
    print("max-time  " + MAX_TIME_MEANS)
    text = corpus.read_text(encoding="utf-8")
    val = val_split(text)
    print(f"data      {corpus} ({len(text):,} chars): train = first {len(text) - 2 * len(val):,}, val = next "
          f"{len(val):,}; vocab {len(set(text))}")
    total = sum(a.budgets) * a.runs * len(a.sides)
    print(f"plan      sides {', '.join(a.sides)}; budgets {', '.join(f'{b:g} s' for b in a.budgets)}; {a.runs} run(s) "
          f"each: {total / 60:.1f} min of training plus start-up and scoring")
    if a.box_set:
        print(f"candidate (b) runs with: {' '.join('--set ' + kv for kv in a.box_set)}")
    if a.same_set:
        print(f"candidate (a) runs with: {' '.join('--set ' + kv for kv in a.same_set)}")
    sys.stdout.flush()
    work = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="charrnn-quality-"))
    work.mkdir(parents=True, exist_ok=True)
    ev = Evaluator(torch, val)
    results = []
    try:
        for run in range(1, a.runs + 1):
            for budget in a.budgets:
                order = a.sides[run - 1:] + a.sides[:run - 1]  # rotate who goes first: drift cancels
                for side in order:
                    print(f"... run {run}, {budget:g} s: {LABEL[side]}", flush=True)
                    res = run_side(side, corpus, budget, run, work, a)
                    score(res, ev, a)
                    results.append(res)
                    print(f"    {res['steps']:,} steps, wall {res['wall_s']:.1f} s, val {res['val']:.4f}", flush=True)
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    report(results, a, corpus)
    if not a.no_png:
        path = plot(results, a, corpus)
        print(f"\ncurve plot: {path}" if path else "\n(no PNG: matplotlib is not installed)")
    note_load_at_end(header)
    print(f"load avg at start {header['loadavg_1_5_15']}, at end {header.get('loadavg_at_end')} "
          "(runs are one at a time; a busy machine skews the comparison)")
    save_json({"header": header, "args": vars(a), "corpus": str(corpus), "results": results}, a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())

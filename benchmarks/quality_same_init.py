#!/usr/bin/env python
"""Equal wall-clock quality: charrnn and an equivalent PyTorch trainer each train for the same number of
seconds on the same data, then both models are scored on the same validation text by the same code.

What is kept identical (so the only difference left is speed, i.e. steps done in the time budget):
  * model: LSTM/GRU/RNN L x H, one-hot input, linear decoder, no dropout (torch names = charrnn's names);
  * initial weights: charrnn's own init (uniform +-0.08, LSTM forget-gate bias_ih = 1, bias_hh = 0) drawn
    by charrnn.engine.params.init_params from numpy.random.default_rng(seed), exactly as charrnn's Trainer draws
    them, and loaded into the torch module;
  * data: charrnn.data.corpus.split (contiguous train/val/test, 5 % / 5 %), charrnn.data.corpus.Batches (B contiguous
    streams, windows of T, state carried across batches, reset at epoch ends), epoch 1 at offset 0 and
    later epochs at the random offset charrnn draws: the torch loop continues the same numpy Generator
    after the init draw, so it sees the same offsets in the same order;
  * optimiser: Adam lr 2e-3 (betas 0.9/0.999, eps 1e-8), global-norm clipping at 5, mean cross-entropy;
  * evaluation: one PyTorch evaluator for both models (charrnn's final weights are loaded into a torch
    module): (a) the whole val split as B contiguous streams of T from a zero state, the batches of
    charrnn.data.corpus.eval_batches, i.e. what charrnn's Trainer.evaluate does; (b) the val split as one stream.
    charrnn's own number for (a), from its checkpoint, is printed as a cross-check.

The time budget covers the training (charrnn: train.max_time, counted from the call of charrnn.train, so
its corpus loading, a few ms, is inside; torch: the loop below). Numba warm-up and the final evaluation
are outside it. The two trainers run one after the other, never together.

    python benchmarks/quality_same_init.py                  # 300 s each (about 11 minutes in all)
    python benchmarks/quality_same_init.py --seconds 20  # smoke test
"""
from __future__ import annotations

import argparse
import io
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (ROOT, fmt_num, import_torch, machine_header, note_load_at_end, print_header,  # noqa: E402
                     print_table, save_json)

import numpy as np  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=300.0, help="training time budget per trainer (default 300)")
    p.add_argument("--max-steps", type=int, default=0, help="also stop both at this many steps (0 = no limit)")
    p.add_argument("--corpus", default=str(ROOT / "corpora" / "tinyshakespeare.txt"))
    p.add_argument("--cell", default="lstm", choices=["lstm", "gru", "rnn"])
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--clip", type=float, default=5.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--order", choices=["charrnn-first", "torch-first"], default="charrnn-first")
    p.add_argument("--no-torch", action="store_true", help="charrnn side only (also the fallback without torch)")
    p.add_argument("--out", metavar="DIR", help="keep charrnn's run directory here (default: a temp dir, removed)")
    p.add_argument("--json", metavar="FILE", help="also save the results as JSON")
    a = p.parse_args(argv)
    if a.seconds <= 0:
        p.error("--seconds must be > 0")
    return a


# -- the common model/data pieces ------------------------------------------------------------------------
def charrnn_config(a) -> dict:
    return {
        "model": {"cell": a.cell, "hidden_size": a.hidden, "num_layers": a.layers, "dropout": 0.0,
                  "embedding_size": 0, "init_scale": 0.08},
        "data": {"val_fraction": 0.05, "test_fraction": 0.05},
        "optim": {"optimizer": "adam", "lr": a.lr, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8,
                  "grad_clip": a.clip, "grad_clip_value": 0.0, "schedule": "constant", "weight_decay": 0.0},
        "train": {"batch_size": a.batch, "seq_len": a.seq, "max_time": a.seconds, "max_steps": a.max_steps,
                  "max_epochs": 0, "eval_every": 0, "sample_every": 0, "checkpoint_every": 0, "log_every": 1,
                  "seed": a.seed},
    }


def torch_module(torch, cell: str, V: int, H: int, L: int):
    nn = torch.nn

    class TorchLM(nn.Module):
        """Names match charrnn's parameter layout: rnn.weight_ih_l0 ... decoder.weight/bias."""

        def __init__(self):
            super().__init__()
            R = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[cell]
            self.rnn = R(V, H, L, batch_first=True)
            self.decoder = nn.Linear(H, V)

        def forward(self, x, h=None):
            y, h = self.rnn(nn.functional.one_hot(x, V).float(), h)
            return self.decoder(y), h

    return TorchLM()


def load_into(torch, module, views: dict) -> None:
    module.load_state_dict({k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in views.items()},
                           strict=True)


def evaluate_torch(torch, module, val: np.ndarray, B: int, T: int) -> dict:
    """(a) B contiguous streams from a zero state (charrnn.data.corpus.eval_batches), (b) one stream."""
    from charrnn.data.corpus import eval_batches
    F = torch.nn.functional
    V = module.decoder.weight.shape[0]
    out = {}
    module.eval()
    with torch.no_grad():
        vb = eval_batches(val, B, T)
        total, n, h = 0.0, 0, None
        for i in range(vb.batches_per_epoch()):
            x, y = vb.batch(i)
            logits, h = module(torch.from_numpy(x).long(), h)
            total += F.cross_entropy(logits.reshape(-1, V), torch.from_numpy(y).long().reshape(-1),
                                     reduction="sum").item()
            n += x.size
        out["val_streams"] = total / n
        out["val_streams_chars"] = n
        out["val_streams_B"] = vb.batch_size
        x = torch.from_numpy(val[:-1].astype(np.int64)).view(1, -1)
        y = torch.from_numpy(val[1:].astype(np.int64)).view(1, -1)
        logits, _ = module(x)
        out["val_one_stream"] = F.cross_entropy(logits.reshape(-1, V), y.reshape(-1)).item()
        out["val_one_stream_chars"] = int(y.numel())
    module.train()
    return out


def quiet_console():
    from rich.console import Console
    return Console(file=io.StringIO(), width=120)


# -- charrnn side -------------------------------------------------------------------------------------------
def warm_up_charrnn(a, text: str, work: Path) -> float:
    """A 2-step run of a tiny model of the same cell: compiles (or loads from the on-disk Numba cache) every
    kernel the timed run needs, so compile time does not eat into its budget."""
    from charrnn import api
    t = time.perf_counter()
    small = work / "warmup.txt"
    small.write_text(text[:20000], encoding="utf-8")
    cfg = charrnn_config(a)
    cfg["model"].update(hidden_size=8)
    cfg["train"].update(max_time=0, max_steps=2, batch_size=2, seq_len=8)
    api.train(small, cfg, work / "warmup-run", live=False, console=quiet_console())
    return time.perf_counter() - t


def run_charrnn(a, run_dir: Path) -> dict:
    from charrnn import api
    from charrnn.checkpoints import store
    t = time.perf_counter()
    api.train(a.corpus, charrnn_config(a), run_dir, live=False, console=quiet_console())
    wall = time.perf_counter() - t
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines() if x]
    last = run_dir / "last.npz"
    loaded = store.load(last)
    meta = loaded.meta
    steps = int(meta["progress"]["step"])
    B, T = int(meta["batch"]["batch_size"]), int(meta["batch"]["seq_len"])
    train_s = lines[-1]["elapsed_s"] if lines else float(meta["progress"]["elapsed_s"])
    assert not lines or lines[-1]["step"] == steps, "metrics.jsonl and the checkpoint disagree"
    return {
        "steps": steps, "B": B, "T": T, "train_s": train_s, "wall_s": wall,
        "chars_per_sec": steps * B * T / train_s if train_s > 0 else None,
        "epochs_started": int(meta["progress"]["epoch"]) + 1,
        "first_loss": lines[0]["train_loss"] if lines else None,
        "last_loss": lines[-1]["train_loss"] if lines else None,
        "loss_curve": [x["train_loss"] for x in lines],
        "own_val_streams": meta["losses"]["val_loss"],  # charrnn's Trainer.evaluate on the final weights
        "checkpoint": str(last),
        "_views": {k: np.array(v) for k, v in loaded.model.params.views.items()},
        "_model": loaded.model,
    }


# -- torch side ---------------------------------------------------------------------------------------------
def run_torch(torch, a, train: np.ndarray, V: int, B: int, T: int) -> dict:
    """torch_charrnn_ref.py's loop, with charrnn's init, batches and epoch offsets (see the module doc)."""
    from charrnn.data.corpus import Batches
    from charrnn.engine.params import Params, Shape, init_params
    nn = torch.nn
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)  # the Trainer's one Generator: init first, then epoch offsets
    p = Params(Shape(a.cell, V, a.hidden, a.layers, 0), np.float32)
    init_params(p, rng, 0.08)
    m = torch_module(torch, a.cell, V, a.hidden, a.layers)
    load_into(torch, m, p.views)
    opt = torch.optim.Adam(m.parameters(), a.lr, betas=(0.9, 0.999), eps=1e-8)
    batches = Batches(train, B, T)

    def detach(h):
        return tuple(x.detach() for x in h) if isinstance(h, tuple) else h.detach()

    step = epoch = batch_index = offset = 0
    h = None
    losses = []
    t0 = time.perf_counter()
    while not (a.max_steps and step >= a.max_steps) and time.perf_counter() - t0 < a.seconds:
        if batch_index >= batches.batches_per_epoch(offset):  # as charrnn's Trainer._next_batch
            epoch += 1
            batch_index = 0
            room = batches.stream_len - T + 1
            offset = int(rng.integers(min(T, room)))
            h = None
        x, y = batches.batch(batch_index, offset)
        x, y = torch.from_numpy(x).long(), torch.from_numpy(y).long()
        opt.zero_grad()
        logits, h = m(x, h)
        h = detach(h)
        loss = nn.functional.cross_entropy(logits.reshape(-1, V), y.reshape(-1))
        loss.backward()
        if a.clip > 0:
            nn.utils.clip_grad_norm_(m.parameters(), a.clip)
        opt.step()
        step += 1
        batch_index += 1
        losses.append(loss.detach())
    train_s = time.perf_counter() - t0
    curve = [x.item() for x in losses]
    return {"steps": step, "B": B, "T": T, "train_s": train_s, "wall_s": train_s,
            "chars_per_sec": step * B * T / train_s, "epochs_started": epoch + 1,
            "first_loss": curve[0] if curve else None, "last_loss": curve[-1] if curve else None,
            "loss_curve": curve, "_module": m}


# -- main -----------------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    a = parse_args(argv)
    from charrnn.data.corpus import fit_batch_shape, load_corpus, split
    from charrnn.sampling.generate import evaluate as charrnn_evaluate

    torch = None if a.no_torch else import_torch()
    if torch is not None:
        torch.set_num_threads(a.threads)
    header = machine_header(torch, a.threads if torch is not None else None)
    print_header(header, f"charrnn quality at equal wall-clock ({a.seconds:g} s each)")
    if torch is None:
        print("torch     skipped (" + ("--no-torch" if a.no_torch else "not installed: pip install -e '.[bench]'")
              + "): charrnn side only")

    corpus = load_corpus(a.corpus)
    V = corpus.vocab.size
    train, val, _ = split(corpus.data, 0.05, 0.05)
    B, T, warning = fit_batch_shape(len(train), a.batch, a.seq)
    if warning:
        print("note:", warning)
    print(f"model     {a.cell.upper()} {a.layers}x{a.hidden}, one-hot input (V={V}), B{B} T{T}, Adam lr {a.lr:g}, "
          f"clip {a.clip:g}, init U(+-0.08)" + (" + forget bias 1" if a.cell == "lstm" else "") + f", seed {a.seed}")
    print(f"data      {Path(a.corpus).name}: train {len(train):,} / val {len(val):,} chars; "
          f"{(len(train) - 1) // B // T} batches per epoch at offset 0")
    sys.stdout.flush()

    work = Path(tempfile.mkdtemp(prefix="charrnn-quality-"))
    run_dir = Path(a.out) if a.out else work / "run"
    results = {"header": header, "args": vars(a), "vocab": V, "train_chars": len(train), "val_chars": len(val)}
    try:
        text = Path(a.corpus).read_text(encoding="utf-8")
        results["charrnn_warmup_s"] = warm_up_charrnn(a, text, work)
        order = ["charrnn", "torch"] if a.order == "charrnn-first" else ["torch", "charrnn"]
        got = {}
        for side in order:
            if side == "torch" and torch is None:
                continue
            print(f"... training {side} for {a.seconds:g} s", flush=True)
            got[side] = run_charrnn(a, run_dir) if side == "charrnn" else run_torch(torch, a, train, V, B, T)
        print("... evaluating", flush=True)
        c = got["charrnn"]
        cm = c.pop("_model")
        total, n = charrnn_evaluate(cm, val)
        c["own_val_one_stream"] = total / n
        views = c.pop("_views")
        if torch is not None:
            tm = got["torch"].pop("_module")
            got["torch"].update(evaluate_torch(torch, tm, val, B, T))
            cmod = torch_module(torch, a.cell, V, a.hidden, a.layers)
            load_into(torch, cmod, views)
            c.update(evaluate_torch(torch, cmod, val, B, T))
        results.update(got)
    finally:
        if not a.out:
            shutil.rmtree(work, ignore_errors=True)

    t = got.get("torch")
    rows = [
        ["steps", f"{c['steps']:,}", fmt_num(t and t["steps"], ",")],
        ["training seconds", f"{c['train_s']:.1f}", fmt_num(t and t["train_s"], ".1f")],
        ["chars/s", fmt_num(c["chars_per_sec"]), fmt_num(t and t["chars_per_sec"])],
        ["epochs started", str(c["epochs_started"]), fmt_num(t and t["epochs_started"], "d")],
        ["train loss, step 1 (same init and batch)", f"{c['first_loss']:.5f}", fmt_num(t and t["first_loss"], ".5f")],
        ["train loss, last step", f"{c['last_loss']:.4f}", fmt_num(t and t["last_loss"], ".4f")],
    ]
    if t is not None:
        rows += [
            [f"VAL LOSS, {c['val_streams_B']} streams x T{T} from zero (torch eval)", f"{c['val_streams']:.4f}",
             f"{t['val_streams']:.4f}"],
            ["val loss, one stream (torch eval)", f"{c['val_one_stream']:.4f}", f"{t['val_one_stream']:.4f}"],
        ]
    rows += [
        ["val loss, streams, charrnn's own eval (checkpoint)", fmt_num(c["own_val_streams"], ".4f"), "-"],
        ["val loss, one stream, charrnn's own eval", f"{c['own_val_one_stream']:.4f}", "-"],
    ]
    print()
    print_table(["nats/char unless stated", "charrnn", "torch"], rows)
    if t is not None:
        d = c["val_streams"] - t["val_streams"]
        print(f"\ncharrnn - torch val loss (streams): {d:+.4f} nats/char  "
              f"(speed ratio {c['chars_per_sec'] / t['chars_per_sec']:.2f}x, steps ratio "
              f"{c['steps'] / max(1, t['steps']):.2f}x)")
        if c["own_val_streams"] is not None and not math.isclose(c["own_val_streams"], c["val_streams"], abs_tol=1e-3):
            print("warning: charrnn's own evaluation and the torch evaluator disagree on the same weights")
    if a.out:
        print(f"charrnn run kept in {run_dir}")
    note_load_at_end(header)
    print(f"load avg at start {header['loadavg_1_5_15']}, at end {header.get('loadavg_at_end')} "
          "(the two trainers ran one after the other; a busy machine skews the comparison)")
    save_json(results, a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())

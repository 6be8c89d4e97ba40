#!/usr/bin/env python
"""The hand-written PyTorch char-RNN trainer that charrnn has to beat (issue 14): what a user writes.

nn.LSTM (or GRU/RNN) L x H with one-hot input, then nn.Linear to the vocabulary; every weight and bias
uniform in [-0.08, 0.08]; Adam (lr 2e-3, torch's betas/eps); global-norm clipping at 5; the first 90 %
of the text (charrnn's contiguous split: int(N * 0.05) characters each for val and test at the end) cut
into B contiguous streams read in windows of T, the hidden state carried from batch to batch and reset
when an epoch starts over at offset 0.

Its clock starts on the script's first line, before `import torch`, as charrnn's --max-time counts from
the train command's start: start-up counts against the budget on both sides. Weights are copied (in
memory, a few ms) every --snapshot-every seconds and written, with a JSON log, to --out after the budget:
benchmarks/quality.py scores them afterwards with its own evaluator.

    python benchmarks/torch_reference.py corpora/tinyshakespeare.txt --seconds 180 --out /tmp/ref
"""
import time

T0 = time.perf_counter()  # noqa: E402 - first, so imports and data preparation count against the budget

import argparse  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("corpus")
    p.add_argument("--out", required=True, help="directory for snapshot_*.npz and log.json")
    p.add_argument("--seconds", type=float, required=True, help="time budget, counted from the script's start")
    p.add_argument("--snapshot-every", type=float, default=0.0, help="seconds between weight snapshots (0 = end only)")
    p.add_argument("--cell", default="lstm", choices=["lstm", "gru", "rnn"])
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seq", type=int, default=100)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--clip", type=float, default=5.0)
    p.add_argument("--init-scale", type=float, default=0.08)
    p.add_argument("--val-fraction", type=float, default=0.05)
    p.add_argument("--test-fraction", type=float, default=0.05)
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0 = torch's default)")
    p.add_argument("--seed", type=int, default=1)
    return p.parse_args(argv)


class CharRNN(nn.Module):
    def __init__(self, cell: str, V: int, H: int, L: int):
        super().__init__()
        self.V = V
        self.rnn = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[cell](V, H, L, batch_first=True)
        self.decoder = nn.Linear(H, V)

    def forward(self, x, h=None):
        y, h = self.rnn(nn.functional.one_hot(x, self.V).float(), h)
        return self.decoder(y), h


def main(argv=None) -> int:
    a = parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    text = Path(a.corpus).read_text(encoding="utf-8")
    vocab = "".join(sorted(set(text)))
    index = {c: i for i, c in enumerate(vocab)}
    data = np.fromiter((index[c] for c in text), dtype=np.int64, count=len(text))
    n_val, n_test = int(len(data) * a.val_fraction), int(len(data) * a.test_fraction)
    train = data[: len(data) - n_val - n_test]
    V, B, T = len(vocab), a.batch, a.seq
    m = CharRNN(a.cell, V, a.hidden, a.layers)
    for w in m.parameters():
        nn.init.uniform_(w, -a.init_scale, a.init_scale)
    opt = torch.optim.Adam(m.parameters(), lr=a.lr)
    per_epoch = (len(train) - 1) // (B * T)
    if per_epoch < 1:
        raise SystemExit(f"error: the train split ({len(train)} chars) is shorter than one {B}x{T} batch")
    X = torch.from_numpy(train[: per_epoch * B * T].reshape(B, -1))
    Y = torch.from_numpy(train[1: per_epoch * B * T + 1].reshape(B, -1))

    def detach(h):
        return tuple(x.detach() for x in h) if isinstance(h, tuple) else h.detach()

    def copy_weights():
        return {k: v.detach().numpy().copy() for k, v in m.state_dict().items()}

    snapshots, losses, step_times = [], [], []
    h, step = None, 0
    next_snap = a.snapshot_every or float("inf")
    while time.perf_counter() - T0 < a.seconds or step == 0:
        j = step % per_epoch
        if j == 0:
            h = None
        x, y = X[:, j * T:(j + 1) * T], Y[:, j * T:(j + 1) * T]
        opt.zero_grad()
        logits, h = m(x, h)
        h = detach(h)
        loss = nn.functional.cross_entropy(logits.reshape(-1, V), y.reshape(-1))
        loss.backward()
        nn.utils.clip_grad_norm_(m.parameters(), a.clip)
        opt.step()
        step += 1
        losses.append(loss.detach())
        now = time.perf_counter() - T0
        step_times.append(now)
        if now >= next_snap:
            snapshots.append((step, now, copy_weights()))
            next_snap += a.snapshot_every
    end = time.perf_counter() - T0
    snapshots.append((step, end, copy_weights()))

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for s, t, w in snapshots:
        name = f"snapshot_{s:07d}.npz"
        np.savez(out / name, **w)
        files.append({"file": name, "step": s, "elapsed_s": t})
    log = {"vocab": vocab, "cell": a.cell, "hidden": a.hidden, "layers": a.layers, "B": B, "T": T,
           "steps": step, "elapsed_s": end, "train_chars": int(len(train)), "batches_per_epoch": per_epoch,
           "torch_threads": torch.get_num_threads(), "snapshots": files,
           "step_elapsed_s": step_times, "train_loss": [x.item() for x in losses]}
    (out / "log.json").write_text(json.dumps(log), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

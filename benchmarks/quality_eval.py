"""The one evaluator of benchmarks/quality.py and the pieces that feed it.

Every model, charrnn's or the reference's, is rebuilt as a PyTorch module (nn.Embedding or one-hot input,
nn.LSTM/GRU/RNN, nn.Linear) from its saved weights and scored on the validation text read as one stream
from a zero state: mean cross-entropy in nats/char. charrnn's own code only reads its checkpoint file
(charrnn.checkpoints.store.load, checksum verified); the arithmetic is torch's.
"""
from __future__ import annotations

import json
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Snapshot:
    """Weights saved during a run, and when: `elapsed_s` on the run's own clock (from its start)."""

    step: int
    elapsed_s: float
    path: Path


@dataclass
class Weights:
    """What the evaluator needs: parameters under torch's names, the vocabulary, the shape."""

    params: dict[str, np.ndarray]
    vocab: str
    cell: str
    hidden: int
    layers: int


def charrnn_weights(path: Path) -> Weights:
    from charrnn.checkpoints import store
    loaded = store.load(path)
    s = loaded.model.shape
    return Weights({k: np.array(v) for k, v in loaded.model.params.views.items()}, loaded.vocab.chars,
                   s.cell, s.hidden_size, s.num_layers)


def reference_weights(path: Path, log: dict) -> Weights:
    with np.load(path, allow_pickle=False) as z:
        params = {k: z[k] for k in z.files}
    return Weights(params, log["vocab"], log["cell"], log["hidden"], log["layers"])


def val_split(corpus_text: str, val_fraction: float = 0.05, test_fraction: float = 0.05) -> str:
    """The validation text: charrnn.data.corpus.split's formula on code points (int(N * fraction) each)."""
    n = len(corpus_text)
    n_val, n_test = int(n * val_fraction), int(n * test_fraction)
    return corpus_text[n - n_val - n_test: n - n_test]


class Evaluator:
    def __init__(self, torch, val_text: str):
        self.torch, self.val_text = torch, val_text

    def module(self, w: Weights):
        torch, nn = self.torch, self.torch.nn
        V = len(w.vocab)
        emb = w.params.get("encoder.weight")

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                if emb is not None:
                    self.encoder = nn.Embedding(V, emb.shape[1])
                R = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[w.cell]
                self.rnn = R(emb.shape[1] if emb is not None else V, w.hidden, w.layers, batch_first=True)
                self.decoder = nn.Linear(w.hidden, V)

            def forward(self, x):
                inp = self.encoder(x) if emb is not None else nn.functional.one_hot(x, V).float()
                y, _ = self.rnn(inp)
                return self.decoder(y)

        net = Net()
        net.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32))
                             for k, v in w.params.items()}, strict=True)
        return net.eval()

    def one_stream(self, w: Weights, chars: int = 0) -> float:
        """Mean loss over the first `chars` characters of val (0 = all of it), one stream from zero."""
        torch = self.torch
        text = self.val_text[: chars + 1] if chars else self.val_text
        index = {c: i for i, c in enumerate(w.vocab)}
        ids = torch.tensor([index[c] for c in text], dtype=torch.long).view(1, -1)
        with torch.no_grad():
            logits = self.module(w)(ids[:, :-1])
            return torch.nn.functional.cross_entropy(logits.reshape(-1, len(w.vocab)), ids[:, 1:].reshape(-1)).item()


# -- charrnn runs: capture every checkpoint the run writes, before its pruning removes it ----------------
class CheckpointWatcher(threading.Thread):
    """Hard-links (or copies) each new step*.npz of a run directory into `keep` while the run goes on.

    Checkpoints appear by an atomic rename, so a visible step file is complete; charrnn prunes one only
    after keep_last newer ones exist, far later than the next poll. The run itself is not touched."""

    def __init__(self, run_dir: Path, keep: Path, poll: float = 0.2):
        super().__init__(daemon=True)
        self.run_dir, self.keep, self.poll = run_dir, keep, poll
        self.stop = threading.Event()
        keep.mkdir(parents=True, exist_ok=True)

    def grab(self) -> None:
        for p in self.run_dir.glob("step*.npz"):
            dst = self.keep / p.name
            if dst.exists():
                continue
            try:
                os.link(p, dst)
            except FileNotFoundError:
                pass  # pruned between glob and link
            except OSError:
                try:
                    shutil.copy2(p, dst)
                except FileNotFoundError:
                    pass

    def run(self) -> None:
        while not self.stop.is_set():
            self.grab()
            time.sleep(self.poll)
        self.grab()


def charrnn_snapshots(keep: Path) -> list[Snapshot]:
    """The captured checkpoints, in step order, with the elapsed time each one saved."""
    from charrnn.checkpoints import npz as checkpoint
    out = []
    for p in keep.glob("step*.npz"):
        _, meta = checkpoint.load(p)
        out.append(Snapshot(int(meta["progress"]["step"]), float(meta["progress"]["elapsed_s"]), p))
    return sorted(out, key=lambda s: s.step)


def reference_snapshots(out: Path) -> tuple[list[Snapshot], dict]:
    log = json.loads((out / "log.json").read_text(encoding="utf-8"))
    return [Snapshot(s["step"], s["elapsed_s"], out / s["file"]) for s in log["snapshots"]], log

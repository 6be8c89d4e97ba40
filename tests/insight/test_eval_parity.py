"""`charrnn eval` against two independent implementations of the same forward pass: the slow NumPy
reference in tests/reference.py (float64) and, when installed, torch.nn.LSTM/GRU/RNN.

A checkpoint is trained for a few steps through the real CLI, so the weights, the file format and the
evaluation path are all the ones users get."""
import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from charrnn.cli import main

try:
    import reference
except ImportError:  # pragma: no cover - when tests/ is a package
    from tests import reference

TEXT = ("Trăm năm trong cõi người ta,\nChữ tài chữ mệnh khéo là ghét nhau.\n"
        "To be, or not to be, that is the question.\n") * 40


@pytest.fixture(scope="module", params=["lstm", "gru", "rnn"])
def trained(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(request.param)
    corpus = tmp / "corpus.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    out = tmp / "run"
    r = CliRunner().invoke(main, ["train", str(corpus), "--out", str(out), "--model", request.param,
                                  "--hidden", "24", "--layers", "2", "--batch-size", "4", "--seq-len", "16",
                                  "--max-steps", "20", "--eval-every", "10", "--sample-every", "0"])
    assert r.exit_code == 0, r.output
    return request.param, out / "last.npz", tmp


def _eval_json(ckpt, path) -> dict:
    r = CliRunner().invoke(main, ["eval", str(ckpt), str(path), "--json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.output)


def _reference_nll(ckpt, text: str) -> tuple[float, int]:
    """Mean NLL of text as one stream from a zero state, float64 NumPy reference."""
    with np.load(ckpt, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        params = {k: z[k].astype(np.float64) for k in z.files if k.startswith(("rnn.", "decoder.", "encoder."))}
    vocab = meta["vocab"]
    ids = np.array([vocab.index(c) for c in text])
    m = meta["model"]
    L, H = m["num_layers"], m["hidden_size"]
    h0 = np.zeros((L, 1, H))
    c0 = np.zeros((L, 1, H)) if m["cell"] == "lstm" else None
    logits, _, _ = reference.logits_forward(params, m["cell"], ids[None, :-1], h0, c0)
    z = logits[0]
    lse = np.log(np.exp(z - z.max(1, keepdims=True)).sum(1)) + z.max(1)
    return float(np.mean(lse - z[np.arange(len(ids) - 1), ids[1:]])), len(ids) - 1


def test_eval_matches_numpy_reference(trained):
    cell, ckpt, tmp = trained
    sample = tmp / "eval.txt"
    text = TEXT[:700]
    sample.write_text(text, encoding="utf-8")
    got = _eval_json(ckpt, sample)
    want, n = _reference_nll(ckpt, text)
    assert got["predictions"] == n and got["chars"] == n + 1
    assert got["loss"] == pytest.approx(want, rel=1e-5)
    assert got["bpc"] == pytest.approx(want / math.log(2), rel=1e-5)
    assert got["perplexity"] == pytest.approx(math.exp(want), rel=1e-5)


def test_eval_matches_torch(trained):
    torch = pytest.importorskip("torch")
    cell, ckpt, tmp = trained
    text = TEXT[:700]
    sample = tmp / "eval_torch.txt"
    sample.write_text(text, encoding="utf-8")
    got = _eval_json(ckpt, sample)
    with np.load(ckpt, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        sd = {k: torch.from_numpy(z[k].astype(np.float64)) for k in z.files if k.startswith(("rnn.", "decoder."))}
    m, vocab = meta["model"], meta["vocab"]
    V, H, L = m["vocab_size"], m["hidden_size"], m["num_layers"]
    rnn = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[cell](V, H, L, batch_first=True).double()
    dec = torch.nn.Linear(H, V).double()
    rnn.load_state_dict({k[4:]: v for k, v in sd.items() if k.startswith("rnn.")}, strict=True)
    dec.load_state_dict({k[8:]: v for k, v in sd.items() if k.startswith("decoder.")}, strict=True)
    ids = torch.tensor([vocab.index(c) for c in text])
    with torch.no_grad():
        y, _ = rnn(torch.nn.functional.one_hot(ids[None, :-1], V).double())
        loss = torch.nn.functional.cross_entropy(dec(y)[0], ids[1:]).item()
    assert got["loss"] == pytest.approx(loss, rel=1e-5)


def test_eval_split_val_is_the_trained_runs_val_split(trained):
    cell, ckpt, tmp = trained
    r = CliRunner().invoke(main, ["eval", str(ckpt), "--split", "val", "--json"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.output)
    n = len(TEXT)
    n_val = int(n * 0.05)
    start = n - int(n * 0.05) - n_val
    want, _ = _reference_nll(ckpt, TEXT[start:start + n_val])
    assert got["loss"] == pytest.approx(want, rel=1e-5)

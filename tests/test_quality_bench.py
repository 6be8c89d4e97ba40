"""benchmarks/quality.py's pieces that decide its numbers: the val split both sides use, the evaluator
(checked against charrnn's own evaluation of the same weights), the reference trainer's output, and the
reproducible corpus builder. No timing is asserted."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import VIETNAMESE_LINES, make_text

import charrnn
from charrnn.data.corpus import Vocab, split

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))
import make_corpora  # noqa: E402
import quality_eval  # noqa: E402


def test_val_split_is_charrnns():
    text = make_text(VIETNAMESE_LINES, 40, seed=2)
    vocab = Vocab("".join(sorted(set(text))))
    _, val, _ = split(vocab.encode(text), 0.05, 0.05)
    assert vocab.encode(quality_eval.val_split(text)).tolist() == val.tolist()


def test_evaluator_agrees_with_charrnn(corpus, tmp_path):
    torch = pytest.importorskip("torch")
    best = charrnn.train(corpus, {"model": {"hidden_size": 12, "num_layers": 2},
                                  "train": {"max_steps": 3, "batch_size": 4, "seq_len": 16, "eval_every": 0}},
                         tmp_path / "r", live=False, console=None)
    text = corpus.read_text(encoding="utf-8")
    ev = quality_eval.Evaluator(torch, quality_eval.val_split(text))
    got = ev.one_stream(quality_eval.charrnn_weights(best))
    assert got == pytest.approx(charrnn.load(best).loss(ev.val_text), abs=1e-5)


def test_reference_trainer_writes_scoreable_snapshots(corpus, tmp_path):
    torch = pytest.importorskip("torch")
    r = subprocess.run([sys.executable, str(BENCH / "torch_reference.py"), str(corpus), "--seconds", "0.01",
                        "--out", str(tmp_path / "ref"), "--hidden", "8", "--layers", "1", "--batch", "2",
                        "--seq", "8", "--threads", "1"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    snaps, log = quality_eval.reference_snapshots(tmp_path / "ref")
    assert log["steps"] >= 1 and snaps[-1].step == log["steps"]
    w = quality_eval.reference_weights(snaps[-1].path, log)
    # U(+-0.08) everywhere, then each Adam step moves a weight by at most about lr
    assert np.abs(w.params["rnn.bias_hh_l0"]).max() <= 0.08 + 2.5e-3 * log["steps"]
    text = corpus.read_text(encoding="utf-8")
    loss = quality_eval.Evaluator(torch, quality_eval.val_split(text)).one_stream(w)
    assert 0 < loss < 2 * np.log(len(log["vocab"]))
    assert json.loads((tmp_path / "ref" / "log.json").read_text())["train_chars"] == len(text) - 2 * int(len(text) * 0.05)


def test_pystdlib_corpus_is_reproducible(tmp_path):
    a = make_corpora.build("pystdlib", tmp_path / "a", 30000)
    b = make_corpora.build("pystdlib", tmp_path / "b", 30000)
    assert a.read_bytes() == b.read_bytes() and 0 < len(a.read_text(encoding="utf-8")) <= 30000
    m = json.loads(a.with_suffix(".json").read_text())
    assert m["files"] == sorted(m["files"]) and m["versions"]["python"]


def test_candidate_sets_reach_only_their_side(tmp_path):
    import quality
    a = quality.parse_args(["--same-set", "model.orthogonal_recurrent=true", "--box-set", "optim.lr=0.004"])
    same = quality.charrnn_cmd("same", Path("c.txt"), 60, 1, tmp_path, 10, tuple(a.box_set), tuple(a.same_set))
    box = quality.charrnn_cmd("box", Path("c.txt"), 60, 1, tmp_path, 10, tuple(a.box_set), tuple(a.same_set))
    assert "model.orthogonal_recurrent=true" in same and "optim.lr=0.004" not in same
    assert "optim.lr=0.004" in box and "model.orthogonal_recurrent=true" not in box
    with pytest.raises(SystemExit):  # (a) is the reference's recipe: only the init may vary
        quality.parse_args(["--same-set", "optim.lr=0.004"])

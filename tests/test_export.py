"""`charrnn export CHECKPOINT --format onnx|safetensors -o FILE` and `charrnn.export`.

ONNX is checked by running the exported graph with onnxruntime: logits equal charrnn's (Model.logits)
to 1e-4 over a held-out text, fed at once and in pieces through the state inputs/outputs, and greedy
decoding gives the same text as `charrnn sample --argmax`. safetensors is checked by loading it with
safetensors.torch.load_file into torch.nn.LSTM/GRU/RNN + Linear (+ Embedding) with load_state_dict.
"""
import json
import sys

import numpy as np
import pytest
from conftest import ENGLISH_LINES, make_text, one_line_error, snapshot
from pty_run import run_in_pty

import charrnn
from charrnn.checkpoints import npz as checkpoint, store
from charrnn.data.corpus import Vocab
from charrnn.engine.model import Model
from charrnn.engine.params import Params, Shape, init_params

HELD_OUT = make_text(ENGLISH_LINES, 12, seed=99)  # text the models below never trained on
VOCAB = Vocab("".join(ENGLISH_LINES) + "\n")
CONFIGS = [(cell, E, L) for cell in ("lstm", "gru", "rnn") for E, L in ((0, 2), (8, 1))]
IDS = [f"{c}-E{e}-L{n}" for c, e, n in CONFIGS]


def write_checkpoint(path, cell="lstm", E=0, L=2, H=24, seed=0):
    """A checkpoint of a model with random weights (scale 0.5: decisive logits, so greedy ties cannot
    hinge on rounding), written the way charrnn writes its own."""
    shape = Shape(cell, VOCAB.size, H, L, E)
    p = Params(shape)
    init_params(p, np.random.default_rng(seed), scale=0.5)
    meta = {"model": store.shape_meta(shape), "vocab": VOCAB.chars, "progress": {"step": 7}}
    checkpoint.save(path, store.model_arrays(Model(shape, p)), meta)
    return path


def ort_session(path):
    ort = pytest.importorskip("onnxruntime")
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def ort_run(sess, ids, state):
    names = [i.name for i in sess.get_inputs()]
    feed = {"input_ids": np.asarray(ids, np.int64).reshape(1, -1), "h0": state[0]}
    if "c0" in names:
        feed["c0"] = state[1]
    out = sess.run(None, feed)
    return out[0][0], tuple(out[1:])


def zero_state(model):
    z = np.zeros((model.num_layers, 1, model.hidden_size), np.float32)
    return (z, z.copy())


@pytest.mark.parametrize(("cell", "E", "L"), CONFIGS, ids=IDS)
def test_onnx_logits_equal_charrnn_over_held_out_text(tmp_path, cell, E, L):
    pytest.importorskip("onnx")
    ckpt = write_checkpoint(tmp_path / "m.npz", cell, E, L)
    out = charrnn.export(ckpt, tmp_path / "m.onnx")
    sess = ort_session(out)
    model = charrnn.load(ckpt)
    ids = model.vocab.encode(HELD_OUT)
    want, _ = model.net.logits(ids.reshape(1, -1).astype(np.int32), model.net.zero_state(1))
    got, _ = ort_run(sess, ids, zero_state(model.net))
    assert got.shape == want[0].shape == (ids.size, VOCAB.size)
    np.testing.assert_allclose(got, want[0], atol=1e-4, rtol=0)
    # in pieces, carrying the state through the graph's state outputs and inputs
    state, parts = zero_state(model.net), []
    for piece in np.array_split(ids, 7):
        lg, state = ort_run(sess, piece, state if cell == "lstm" else (state[0], None))
        parts.append(lg)
    np.testing.assert_allclose(np.concatenate(parts), want[0], atol=1e-4, rtol=0)


@pytest.mark.parametrize(("cell", "E", "L"), CONFIGS, ids=IDS)
def test_onnx_greedy_sampling_gives_the_same_text(tmp_path, cell, E, L):
    pytest.importorskip("onnx")
    ckpt = write_checkpoint(tmp_path / "m.npz", cell, E, L, seed=3)
    sess = ort_session(charrnn.export(ckpt, tmp_path / "m.onnx"))
    vocab = json.loads(sess.get_modelmeta().custom_metadata_map["vocab"])
    assert "".join(vocab) == VOCAB.chars
    model = charrnn.load(ckpt)
    prime = "the quick "
    want = model.sample(300, prime=prime, argmax=True, echo=False)
    logits, state = ort_run(sess, [vocab.index(c) for c in prime], zero_state(model.net))
    text = []
    for _ in range(300):
        nxt = int(np.argmax(logits[-1]))
        text.append(vocab[nxt])
        logits, state = ort_run(sess, [nxt], state if cell == "lstm" else (state[0], None))
    assert "".join(text) == want


def test_onnx_model_describes_itself(tmp_path, trained):
    onnx = pytest.importorskip("onnx")
    path = charrnn.export(trained, tmp_path / "t.onnx")
    m = onnx.load(str(path))
    onnx.checker.check_model(m)
    ops = {n.op_type for n in m.graph.node}
    assert "LSTM" in ops and "OneHot" in ops and "MatMul" in ops
    props = {p.key: p.value for p in m.metadata_props}
    loaded = charrnn.load(trained)
    assert json.loads(props["vocab"]) == list(loaded.vocab.chars)
    info = json.loads(props["charrnn"])
    assert info["cell"] == "lstm" and info["vocab_size"] == loaded.vocab.size
    assert info["start_id"] == loaded.vocab.chars.index("\n")
    assert [i.name for i in m.graph.input] == ["input_ids", "h0", "c0"]
    assert [o.name for o in m.graph.output] == ["logits", "hn", "cn"]


@pytest.mark.parametrize(("cell", "E", "L"), CONFIGS, ids=IDS)
def test_safetensors_load_into_torch_modules(tmp_path, cell, E, L):
    pytest.importorskip("safetensors")
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file
    ckpt = write_checkpoint(tmp_path / "m.npz", cell, E, L)
    path = charrnn.export(ckpt, tmp_path / "m.safetensors")
    model = charrnn.load(ckpt)
    V, H = VOCAB.size, model.net.hidden_size

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            if E:
                self.encoder = torch.nn.Embedding(V, E)
            rnn = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[cell]
            self.rnn = rnn(E or V, H, L, batch_first=True)
            self.decoder = torch.nn.Linear(H, V)

        def forward(self, ids):
            x = self.encoder(ids) if E else torch.nn.functional.one_hot(ids, V).float()
            return self.decoder(self.rnn(x)[0])

    net = Net()
    net.load_state_dict(load_file(str(path)))  # strict: exactly the names and shapes torch expects
    ids = model.vocab.encode(HELD_OUT)
    with torch.no_grad():
        got = net(torch.from_numpy(ids.astype(np.int64)).reshape(1, -1))[0].numpy()
    want, _ = model.net.logits(ids.reshape(1, -1).astype(np.int32), model.net.zero_state(1))
    np.testing.assert_allclose(got, want[0], atol=1e-4, rtol=0)


def test_safetensors_metadata_holds_meta_and_vocab(tmp_path, trained):
    safetensors = pytest.importorskip("safetensors")
    path = charrnn.export(trained, tmp_path / "t.safetensors")
    with safetensors.safe_open(str(path), "np") as f:
        meta = f.metadata()
        names = set(f.keys())
    loaded = charrnn.load(trained)
    assert json.loads(meta["meta"])["progress"]["step"] == loaded.meta["progress"]["step"]
    assert json.loads(meta["vocab"]) == list(loaded.vocab.chars)
    assert names == set(loaded.net.params.views)  # weights only: no optimizer moments, no state


# -- the command ------------------------------------------------------------------------------------------
def test_cli_export_both_formats(cli, trained, tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("safetensors")
    r = cli("export", trained, "--format", "onnx", "-o", tmp_path / "a.onnx")
    assert r.exit_code == 0, r.output
    assert "wrote" in r.stderr and (tmp_path / "a.onnx").stat().st_size > 0
    r = cli("export", trained, "-o", tmp_path / "b.safetensors")  # the format from the suffix
    assert r.exit_code == 0, r.output
    assert (tmp_path / "b.safetensors").read_bytes()[8:9] == b"{"  # a safetensors header follows its length


def test_cli_export_errors(cli, trained, tmp_path):
    pytest.importorskip("onnx")
    assert "does not exist" in one_line_error(cli("export", tmp_path / "nope.npz", "-f", "onnx"))
    assert "cannot tell the export format" in one_line_error(cli("export", trained, "-o", tmp_path / "m.bin"))
    (tmp_path / "keep.onnx").write_text("precious")
    before = snapshot(tmp_path)
    assert "already exists" in one_line_error(cli("export", trained, "-o", tmp_path / "keep.onnx"))
    assert "being exported" in one_line_error(cli("export", trained / "best.npz", "-f", "onnx", "-o",
                                                  trained / "best.npz", "--force"))
    assert snapshot(tmp_path) == before
    assert cli("export", trained, "-o", tmp_path / "keep.onnx", "--force").exit_code == 0
    assert (tmp_path / "keep.onnx").read_bytes() != b"precious"


def test_cli_export_without_the_extra(cli, trained, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # what `import onnx` meets when it is not installed
    r = cli("export", trained, "-f", "onnx", "-o", tmp_path / "m.onnx")
    line = one_line_error(r, code=2)  # like plot -o and sweep without their extras (it was 1)
    assert "needs the onnx package" in line and "pip install 'charrnn[export]'" in line
    assert not (tmp_path / "m.onnx").exists()


def test_export_in_a_terminal(trained, tmp_path):
    pytest.importorskip("onnx")
    code, out = run_in_pty(["export", trained, "--format", "onnx", "-o", "m.onnx"], tmp_path)
    assert code == 0, out
    assert out.strip() == "wrote m.onnx"
    code, out = run_in_pty(["export", trained, "--format", "onnx", "-o", "m.onnx"], tmp_path)
    assert code == 2 and out.strip().startswith("error: m.onnx already exists") and "Traceback" not in out


def test_default_output_is_next_to_the_checkpoint(tmp_path, cli):
    pytest.importorskip("safetensors")
    (tmp_path / "run").mkdir()
    ckpt = write_checkpoint(tmp_path / "run" / "best.npz")
    r = cli("export", tmp_path / "run", "--format", "safetensors")  # a run directory means its best.npz
    assert r.exit_code == 0, r.output
    assert (tmp_path / "run" / "best.safetensors").is_file() and ckpt.is_file()
    assert "without --format or -o" in one_line_error(cli("export", tmp_path / "run"))

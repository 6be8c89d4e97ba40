"""charrnn's Model against torch.nn.LSTM / GRU / RNN with the same weights.

The parameter views carry torch state_dict names and shapes, so a module holding `encoder`
(nn.Embedding, only with an embedding), `rnn` and `decoder` (nn.Linear) loads them with
load_state_dict(strict=True); a checkpoint written by charrnn.checkpoints.npz.save loads the same way from
np.load alone.
"""
import json

import numpy as np
import pytest

from charrnn.checkpoints import npz as checkpoint
from charrnn.engine.model import Model, State
from charrnn.engine.params import GATES, Shape, init_params

torch = pytest.importorskip("torch")
F = torch.nn.functional

CELLS = ["lstm", "gru", "rnn"]
V, H, L, E_SIZE = 20, 16, 2, 8
B, T = 3, 11
LOGITS_ATOL = 1e-4
STATE_ATOL = 1e-5
GRAD_ATOL_F64 = 1e-8

CASES = [pytest.param(cell, E, id=f"{cell}-{'embed' if E else 'onehot'}") for cell in CELLS for E in (0, E_SIZE)]


class TorchLM(torch.nn.Module):
    def __init__(self, cell, V, H, L, E):
        super().__init__()
        rnn_cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[cell]
        self.cell, self.V, self.E = cell, V, E
        if E:
            self.encoder = torch.nn.Embedding(V, E)
        self.rnn = rnn_cls(input_size=E or V, hidden_size=H, num_layers=L, batch_first=True)
        self.decoder = torch.nn.Linear(H, V)

    def forward(self, x, h0, c0=None):
        dtype = self.decoder.weight.dtype
        inp = self.encoder(x) if self.E else F.one_hot(x, self.V).to(dtype)
        if self.cell == "lstm":
            out, (hT, cT) = self.rnn(inp, (h0, c0))
        else:
            out, hT = self.rnn(inp, h0)
            cT = None
        return self.decoder(out), hT, cT


def _torch_from_arrays(cell, arrays, dtype):
    """A torch model holding exactly `arrays` (torch state_dict names)."""
    Vn, Hn = arrays["decoder.weight"].shape
    Ln = sum(1 for k in arrays if k.startswith("rnn.weight_ih_l"))
    En = arrays["encoder.weight"].shape[1] if "encoder.weight" in arrays else 0
    model = TorchLM(cell, Vn, Hn, Ln, En).to(dtype)
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in arrays.items()}, strict=True)
    return model


def _setup(cell, E, dtype, seed, scale=None):
    rng = np.random.default_rng(seed)
    m = Model(Shape(cell, V, H, L, E), dtype=dtype)
    if scale is None:
        init_params(m.params, rng)
    else:
        init_params(m.params, rng, scale=scale)
    x = rng.integers(0, V, size=(B, T))
    y = rng.integers(0, V, size=(B, T))
    h0 = rng.uniform(-1, 1, size=(L, B, H)).astype(dtype)
    c0 = rng.uniform(-1, 1, size=(L, B, H)).astype(dtype) if cell == "lstm" else None
    return m, x, y, h0, c0


def _state(h0, c0):
    return State(h0.copy(), None if c0 is None else c0.copy())


def _t(a):
    return None if a is None else torch.from_numpy(np.array(a))


@pytest.mark.parametrize("scale", [None, 0.5], ids=["init", "scale0.5"])
@pytest.mark.parametrize("cell, E", CASES)
def test_logits_and_state_match_torch_float32(cell, E, scale):
    m, x, y, h0, c0 = _setup(cell, E, np.float32, seed=7 + CELLS.index(cell) + E, scale=scale)
    tm = _torch_from_arrays(cell, m.params.views, torch.float32)
    assert set(tm.state_dict()) == set(m.params.views)

    logits, st = m.logits(x, _state(h0, c0))
    with torch.no_grad():
        t_logits, t_h, t_c = tm(torch.from_numpy(x), _t(h0), _t(c0))
    np.testing.assert_allclose(logits, t_logits.numpy(), rtol=0, atol=LOGITS_ATOL)
    np.testing.assert_allclose(st.h, t_h.numpy(), rtol=0, atol=STATE_ATOL)
    if cell == "lstm":
        np.testing.assert_allclose(st.c, t_c.numpy(), rtol=0, atol=STATE_ATOL)

    # the mean cross-entropy of the float32 training pass matches torch's too
    loss, st2 = m.forward_backward(x, y, _state(h0, c0), m.params.zeros_like())
    t_loss = F.cross_entropy(t_logits.reshape(-1, V), torch.from_numpy(y).reshape(-1)).item()
    assert loss == pytest.approx(t_loss, rel=1e-5)
    np.testing.assert_allclose(st2.h, t_h.numpy(), rtol=0, atol=STATE_ATOL)


@pytest.mark.parametrize("cell, E", CASES)
def test_gradients_match_torch_float64(cell, E):
    m, x, y, h0, c0 = _setup(cell, E, np.float64, seed=70 + CELLS.index(cell) + E, scale=0.5)
    tm = _torch_from_arrays(cell, m.params.views, torch.float64)

    grads = m.params.zeros_like()
    loss, st = m.forward_backward(x, y, _state(h0, c0), grads)

    t_logits, t_h, t_c = tm(torch.from_numpy(x), _t(h0), _t(c0))
    t_loss = F.cross_entropy(t_logits.reshape(-1, V), torch.from_numpy(y).reshape(-1))
    t_loss.backward()

    assert abs(loss - t_loss.item()) <= 1e-12
    np.testing.assert_allclose(st.h, t_h.detach().numpy(), rtol=0, atol=1e-12)
    if cell == "lstm":
        np.testing.assert_allclose(st.c, t_c.detach().numpy(), rtol=0, atol=1e-12)
    t_grads = {k: p.grad.numpy() for k, p in tm.named_parameters()}
    assert set(t_grads) == set(grads.views)
    for name, g in t_grads.items():
        np.testing.assert_allclose(grads.views[name], g, rtol=0, atol=GRAD_ATOL_F64, err_msg=name)


@pytest.mark.parametrize("cell, E", CASES)
def test_checkpoint_loads_into_torch(cell, E, tmp_path):
    m, x, y, h0, c0 = _setup(cell, E, np.float32, seed=700 + CELLS.index(cell) + E, scale=0.3)
    path = tmp_path / "model.npz"
    meta = {"cell": cell, "vocab_size": V, "hidden_size": H, "num_layers": L, "embedding_size": E}
    checkpoint.save(path, dict(m.params.views), meta)

    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    stored_meta = json.loads(str(arrays.pop("meta")[()]))
    assert set(arrays) == {name for name, _ in m.params.layout}
    # everything needed to rebuild comes from the file itself
    cell_from_file = stored_meta["cell"]
    Hf = arrays["rnn.weight_hh_l0"].shape[1]
    assert arrays["rnn.weight_hh_l0"].shape[0] == GATES[cell_from_file] * Hf
    tm = _torch_from_arrays(cell_from_file, arrays, torch.float32)
    assert set(tm.state_dict()) == set(arrays)  # keys are exactly the torch state_dict names (+ meta)
    for k, v in tm.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), m.params.views[k])

    logits, st = m.logits(x, _state(h0, c0))
    with torch.no_grad():
        t_logits, t_h, _ = tm(torch.from_numpy(x), _t(h0), _t(c0))
    np.testing.assert_allclose(logits, t_logits.numpy(), rtol=0, atol=LOGITS_ATOL)
    np.testing.assert_allclose(st.h, t_h.numpy(), rtol=0, atol=STATE_ATOL)

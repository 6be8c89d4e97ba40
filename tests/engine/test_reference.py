"""Checks of the pure-NumPy reference (tests/reference.py).

1. central finite differences of model_loss w.r.t. every parameter element
   (and w.r.t. the initial states), and of cell_backward with non-zero
   dhT / dcT;
2. parity with torch.nn.LSTM / GRU / RNN (skipped when torch is missing).
"""

import numpy as np
import pytest

try:  # tests/ is put on sys.path by pytest's default (prepend) import mode
    import reference as ref
except ImportError:  # pragma: no cover - if tests/ ever becomes a package
    from tests import reference as ref

CELLS = ["lstm", "gru", "rnn"]
EPS = 1e-6
ATOL = 1e-8
RTOL = 1e-6

# tiny sizes for finite differences
V, H, B, T, L = 5, 3, 2, 4, 2


def _data(seed, V=V, B=B, T=T, L=L, H=H, cell="lstm"):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, V, size=(B, T))
    y = rng.integers(0, V, size=(B, T))
    h0 = rng.uniform(-0.8, 0.8, size=(L, B, H))
    c0 = rng.uniform(-0.8, 0.8, size=(L, B, H)) if cell == "lstm" else None
    return x, y, h0, c0


def _assert_close(name, analytic, numeric, atol=ATOL, rtol=RTOL):
    analytic = np.asarray(analytic)
    numeric = np.asarray(numeric)
    assert analytic.shape == numeric.shape, name
    diff = np.abs(analytic - numeric)
    ok = diff <= atol + rtol * np.abs(numeric)
    rel = diff / np.maximum(1e-8, np.abs(analytic) + np.abs(numeric))
    assert ok.all(), (
        f"{name}: max abs diff {diff.max():.3e}, max rel err {rel.max():.3e} "
        f"at {np.unravel_index(np.argmax(diff), diff.shape)}"
    )


# --------------------------------------------------------------------------
# shapes / naming
# --------------------------------------------------------------------------


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("E", [0, 3])
def test_param_shapes(cell, E):
    p = ref.init_params(cell, V, H, L, E=E, rng=1)
    G = ref.GATES[cell]
    expected = {
        "decoder.weight": (V, H),
        "decoder.bias": (V,),
    }
    if E:
        expected["encoder.weight"] = (V, E)
    for k in range(L):
        expected[f"rnn.weight_ih_l{k}"] = (G * H, (E or V) if k == 0 else H)
        expected[f"rnn.weight_hh_l{k}"] = (G * H, H)
        expected[f"rnn.bias_ih_l{k}"] = (G * H,)
        expected[f"rnn.bias_hh_l{k}"] = (G * H,)
    assert {k: v.shape for k, v in p.items()} == expected
    assert all(v.dtype == np.float64 for v in p.values())
    assert ref.num_layers(p) == L


@pytest.mark.parametrize("cell", CELLS)
def test_outputs_shapes_and_consistency(cell):
    p = ref.init_params(cell, V, H, L, E=3, rng=2)
    x, y, h0, c0 = _data(3, cell=cell)
    loss, grads, hT, cT = ref.model_loss(p, cell, x, y, h0, c0)
    logits, hT2, cT2 = ref.logits_forward(p, cell, x, h0, c0)
    assert logits.shape == (B, T, V)
    assert hT.shape == (L, B, H)
    np.testing.assert_array_equal(hT, hT2)
    if cell == "lstm":
        assert cT.shape == (L, B, H)
        np.testing.assert_array_equal(cT, cT2)
    else:
        assert cT is None and cT2 is None
    # loss recomputed independently from the logits
    z = logits - logits.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    manual = -np.mean([logp[b, t, y[b, t]] for b in range(B) for t in range(T)])
    assert abs(loss - manual) < 1e-12
    # all-ones masks == no dropout
    ones = [np.ones((T, B, H)) for _ in range(L)]
    loss2, grads2, _, _ = ref.model_loss(p, cell, x, y, h0, c0, masks=ones)
    assert loss2 == loss
    for k in grads:
        np.testing.assert_array_equal(grads[k], grads2[k])
    # model_loss does not mutate its inputs
    p_copy = {k: v.copy() for k, v in p.items()}
    ref.model_loss(p, cell, x, y, h0, c0)
    for k in p:
        np.testing.assert_array_equal(p[k], p_copy[k])


# --------------------------------------------------------------------------
# finite differences: whole model
# --------------------------------------------------------------------------


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("E", [0, 3], ids=["onehot", "embed"])
@pytest.mark.parametrize("dropout", [False, True], ids=["nodrop", "drop"])
def test_model_loss_finite_differences(cell, E, dropout):
    seed = 10 * CELLS.index(cell) + E + 100 * dropout
    p = ref.init_params(cell, V, H, L, E=E, rng=seed)
    x, y, h0, c0 = _data(seed + 1, cell=cell)
    masks = ref.make_dropout_masks(seed + 2, L, T, B, H, p=0.4) if dropout else None

    loss, grads, hT, cT, dh0, dc0 = ref.model_loss(
        p, cell, x, y, h0, c0, masks=masks, return_state_grads=True
    )
    assert set(grads) == set(p)

    def f():
        return ref.model_loss(p, cell, x, y, h0, c0, masks=masks)[0]

    for name in sorted(p):
        assert grads[name].shape == p[name].shape
        _assert_close(name, grads[name], ref.fd_grad(f, p[name]))

    # state gradients (h0, c0 are constants for training, but checkable)
    _assert_close("h0", dh0, ref.fd_grad(f, h0))
    if cell == "lstm":
        _assert_close("c0", dc0, ref.fd_grad(f, c0))
    else:
        assert dc0 is None

    # the alias returns the same thing
    out = ref.model_loss_state_grads(p, cell, x, y, h0, c0, masks=masks)
    assert out[0] == loss
    np.testing.assert_array_equal(out[4], dh0)


def test_repeated_ids_accumulate_in_embedding_grad():
    """Every position uses the same character: the embedding row gets the sum."""
    cell = "gru"
    p = ref.init_params(cell, V, H, 1, E=3, rng=5)
    x = np.full((B, T), 2)
    _, y, h0, _ = _data(6, L=1, cell=cell)
    _, grads, _, _ = ref.model_loss(p, cell, x, y, h0, None)
    rows = np.abs(grads["encoder.weight"]).sum(1)
    assert rows[2] > 0 and np.all(np.delete(rows, 2) == 0)

    def f():
        return ref.model_loss(p, cell, x, y, h0, None)[0]

    _assert_close("encoder.weight", grads["encoder.weight"], ref.fd_grad(f, p["encoder.weight"]))


# --------------------------------------------------------------------------
# finite differences: one layer with gradient on the final state
# --------------------------------------------------------------------------


@pytest.mark.parametrize("cell", CELLS)
def test_cell_backward_finite_differences(cell):
    rng = np.random.default_rng(7 + CELLS.index(cell))
    G, I, Tn, Bn, Hn = ref.GATES[cell], 4, 5, 2, 3  # noqa: E741 (I: the input size, as in the formulas)
    x = rng.normal(size=(Tn, Bn, I))
    h0 = rng.uniform(-1, 1, size=(Bn, Hn))
    c0 = rng.uniform(-1, 1, size=(Bn, Hn)) if cell == "lstm" else None
    W_ih = rng.uniform(-0.6, 0.6, size=(G * Hn, I))
    W_hh = rng.uniform(-0.6, 0.6, size=(G * Hn, Hn))
    b_ih = rng.uniform(-0.6, 0.6, size=G * Hn)
    b_hh = rng.uniform(-0.6, 0.6, size=G * Hn)
    # random linear functional of every output plus the final states
    R = rng.normal(size=(Tn, Bn, Hn))
    Rh = rng.normal(size=(Bn, Hn))
    Rc = rng.normal(size=(Bn, Hn))

    def f():
        hs, cT, _ = ref.cell_forward(cell, x, h0, c0, W_ih, W_hh, b_ih, b_hh)
        val = (R * hs).sum() + (Rh * hs[-1]).sum()
        if cell == "lstm":
            val += (Rc * cT).sum()
        return val

    hs, cT, cache = ref.cell_forward(cell, x, h0, c0, W_ih, W_hh, b_ih, b_hh)
    assert hs.shape == (Tn, Bn, Hn)
    dx, dh0, dc0, dW_ih, dW_hh, db_ih, db_hh = ref.cell_backward(
        cell, R, Rh, Rc if cell == "lstm" else None, cache
    )
    for name, analytic, arr in [
        ("x", dx, x),
        ("h0", dh0, h0),
        ("W_ih", dW_ih, W_ih),
        ("W_hh", dW_hh, W_hh),
        ("b_ih", db_ih, b_ih),
        ("b_hh", db_hh, b_hh),
    ]:
        _assert_close(name, analytic, ref.fd_grad(f, arr))
    if cell == "lstm":
        _assert_close("c0", dc0, ref.fd_grad(f, c0))
    else:
        assert cT is None and dc0 is None

    # None for dhT/dcT means zeros
    a = ref.cell_backward(cell, R, None, None, cache)
    b = ref.cell_backward(cell, R, np.zeros((Bn, Hn)), np.zeros((Bn, Hn)), cache)
    for u, v in zip(a, b):
        if u is None:
            assert v is None
        else:
            np.testing.assert_array_equal(u, v)


# --------------------------------------------------------------------------
# parity with PyTorch
# --------------------------------------------------------------------------

TORCH_ATOL = 1e-10


def _torch_model(torch, cell, V, H, L, E):
    nn = torch.nn
    rnn_cls = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[cell]

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            if E:
                self.encoder = nn.Embedding(V, E)
            self.rnn = rnn_cls(E or V, H, num_layers=L, batch_first=True)
            self.decoder = nn.Linear(H, V)

    return Model().double()


def _torch_grads(torch, model):
    return {k: v.grad.detach().numpy() for k, v in model.named_parameters()}


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("E", [0, 3], ids=["onehot", "embed"])
@pytest.mark.parametrize("sizes", [(5, 3, 2, 4, 2), (7, 6, 3, 9, 3), (4, 5, 1, 1, 1)])
def test_torch_parity(cell, E, sizes):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    Vn, Hn, Bn, Tn, Ln = sizes
    seed = sum(sizes) + E + CELLS.index(cell)
    p = ref.init_params(cell, Vn, Hn, Ln, E=E, rng=seed)
    x, y, h0, c0 = _data(seed + 1, V=Vn, B=Bn, T=Tn, L=Ln, H=Hn, cell=cell)

    model = _torch_model(torch, cell, Vn, Hn, Ln, E)
    # strict: the reference's names and shapes ARE the torch state_dict's
    model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in p.items()}, strict=True)

    xt = torch.from_numpy(x)
    yt = torch.from_numpy(y)
    h0t = torch.from_numpy(h0.copy()).requires_grad_(True)
    c0t = torch.from_numpy(c0.copy()).requires_grad_(True) if cell == "lstm" else None
    inp = model.encoder(xt) if E else F.one_hot(xt, Vn).double()
    if cell == "lstm":
        out, (hTt, cTt) = model.rnn(inp, (h0t, c0t))
    else:
        out, hTt = model.rnn(inp, h0t)
    logits_t = model.decoder(out)  # (B, T, V)
    loss_t = F.cross_entropy(logits_t.reshape(-1, Vn), yt.reshape(-1))
    loss_t.backward()

    logits, hT, cT = ref.logits_forward(p, cell, x, h0, c0)
    loss, grads, hT2, cT2, dh0, dc0 = ref.model_loss(
        p, cell, x, y, h0, c0, return_state_grads=True
    )
    np.testing.assert_allclose(logits, logits_t.detach().numpy(), rtol=0, atol=TORCH_ATOL)
    np.testing.assert_allclose(hT, hTt.detach().numpy(), rtol=0, atol=TORCH_ATOL)
    np.testing.assert_array_equal(hT, hT2)
    if cell == "lstm":
        np.testing.assert_allclose(cT, cTt.detach().numpy(), rtol=0, atol=TORCH_ATOL)
        np.testing.assert_array_equal(cT, cT2)
    assert abs(loss - loss_t.item()) < TORCH_ATOL

    tg = _torch_grads(torch, model)
    assert set(tg) == set(grads)
    for k in grads:
        np.testing.assert_allclose(grads[k], tg[k], rtol=0, atol=TORCH_ATOL, err_msg=k)
    np.testing.assert_allclose(dh0, h0t.grad.numpy(), rtol=0, atol=TORCH_ATOL)
    if cell == "lstm":
        np.testing.assert_allclose(dc0, c0t.grad.numpy(), rtol=0, atol=TORCH_ATOL)


@pytest.mark.parametrize("cell", CELLS)
def test_torch_parity_with_fixed_dropout_masks(cell):
    """torch's built-in inter-layer dropout can't take fixed masks, so stack
    single-layer torch modules by hand and multiply by the same masks."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    nn = torch.nn
    Vn, Hn, Bn, Tn, Ln, E = 6, 4, 3, 5, 3, 3
    p = ref.init_params(cell, Vn, Hn, Ln, E=E, rng=42 + CELLS.index(cell))
    x, y, h0, c0 = _data(43, V=Vn, B=Bn, T=Tn, L=Ln, H=Hn, cell=cell)
    masks = ref.make_dropout_masks(44, Ln, Tn, Bn, Hn, p=0.3)

    rnn_cls = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[cell]
    enc = nn.Embedding(Vn, E).double()
    layers = [rnn_cls(E if k == 0 else Hn, Hn, batch_first=True).double() for k in range(Ln)]
    dec = nn.Linear(Hn, Vn).double()
    with torch.no_grad():
        enc.weight.copy_(torch.from_numpy(p["encoder.weight"]))
        for k, layer in enumerate(layers):
            for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(layer, f"{w}_l0").copy_(torch.from_numpy(p[f"rnn.{w}_l{k}"]))
        dec.weight.copy_(torch.from_numpy(p["decoder.weight"]))
        dec.bias.copy_(torch.from_numpy(p["decoder.bias"]))

    h = enc(torch.from_numpy(x))
    for k, layer in enumerate(layers):
        h0k = torch.from_numpy(h0[k : k + 1].copy())
        if cell == "lstm":
            h, _ = layer(h, (h0k, torch.from_numpy(c0[k : k + 1].copy())))
        else:
            h, _ = layer(h, h0k)
        h = h * torch.from_numpy(masks[k].transpose(1, 0, 2).copy())  # (B, T, H)
    logits_t = dec(h)
    loss_t = F.cross_entropy(logits_t.reshape(-1, Vn), torch.from_numpy(y).reshape(-1))
    loss_t.backward()

    loss, grads, _, _ = ref.model_loss(p, cell, x, y, h0, c0, masks=masks)
    assert abs(loss - loss_t.item()) < TORCH_ATOL
    tg = {"encoder.weight": enc.weight.grad, "decoder.weight": dec.weight.grad,
          "decoder.bias": dec.bias.grad}
    for k, layer in enumerate(layers):
        for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            tg[f"rnn.{w}_l{k}"] = getattr(layer, f"{w}_l0").grad
    assert set(tg) == set(grads)
    for k in grads:
        np.testing.assert_allclose(grads[k], tg[k].numpy(), rtol=0, atol=TORCH_ATOL, err_msg=k)

"""Slow, readable, pure-NumPy reference for charrnn's hand-written kernels.

Everything here is float64, loops explicitly over time steps and is meant to
be *obviously* correct rather than fast.  The Numba kernels are checked
against it, and it is itself checked against finite differences and (when
available) against PyTorch in ``tests/test_reference.py``.

Parameter names and shapes follow PyTorch's ``state_dict`` exactly, so a
parameter dict can be loaded into a module holding ``encoder``
(``nn.Embedding``, optional), ``rnn`` (``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN``)
and ``decoder`` (``nn.Linear``) with ``load_state_dict(strict=True)``::

    encoder.weight        (V, E)        only when E > 0
    rnn.weight_ih_l{k}    (G*H, I_k)    I_0 = E (or V when one-hot), I_k = H
    rnn.weight_hh_l{k}    (G*H, H)
    rnn.bias_ih_l{k}      (G*H,)
    rnn.bias_hh_l{k}      (G*H,)
    decoder.weight        (V, H)
    decoder.bias          (V,)

with G = 4 (LSTM, gates i, f, g, o), 3 (GRU, gates r, z, n), 1 (RNN, tanh).

Layouts: per-layer sequences are time-major (T, B, ...); token ids given to
the model are batch-major (B, T) as the data loader yields them; states are
(L, B, H).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "GATES",
    "sigmoid",
    "cell_forward",
    "cell_backward",
    "model_loss",
    "model_loss_state_grads",
    "logits_forward",
    "init_params",
    "num_layers",
    "make_dropout_masks",
]

#: Number of gate blocks stacked in the weight matrices of each cell type.
GATES = {"lstm": 4, "gru": 3, "rnn": 1}


# --------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------


def _cell_name(cell: str) -> str:
    name = str(cell).lower()
    if name not in GATES:
        raise ValueError(f"unknown cell {cell!r}; expected one of {sorted(GATES)}")
    return name


def sigmoid(a: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function (float64)."""
    a = np.asarray(a, dtype=np.float64)
    out = np.empty_like(a)
    pos = a >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-a[pos]))
    e = np.exp(a[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def num_layers(params: dict) -> int:
    """Number of stacked recurrent layers present in ``params``."""
    n = 0
    while f"rnn.weight_ih_l{n}" in params:
        n += 1
    return n


def _log_softmax(z: np.ndarray) -> np.ndarray:
    """log-softmax over the last axis."""
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _f64(a):
    return None if a is None else np.asarray(a, dtype=np.float64)


# --------------------------------------------------------------------------
# one layer, whole sequence
# --------------------------------------------------------------------------


def cell_forward(cell, x, h0, c0, W_ih, W_hh, b_ih, b_hh):
    """Run ONE recurrent layer over a whole sequence.

    Args:
        cell: "lstm", "gru" or "rnn".
        x: (T, B, I) inputs.
        h0: (B, H) initial hidden state.
        c0: (B, H) initial cell state for LSTM; ignored (may be None) otherwise.
        W_ih: (G*H, I), W_hh: (G*H, H), b_ih: (G*H,), b_hh: (G*H,).

    Returns:
        hs: (T, B, H) hidden state after every step (hs[-1] is the final h).
        cT: (B, H) final cell state for LSTM, None otherwise.
        cache: everything cell_backward needs.
    """
    cell = _cell_name(cell)
    x, h0, c0 = _f64(x), _f64(h0), _f64(c0)
    W_ih, W_hh, b_ih, b_hh = _f64(W_ih), _f64(W_hh), _f64(b_ih), _f64(b_hh)
    T, B, _ = x.shape
    H = W_hh.shape[1]
    assert W_hh.shape == (GATES[cell] * H, H)
    assert W_ih.shape == (GATES[cell] * H, x.shape[2])
    assert h0.shape == (B, H)

    hs = np.zeros((T, B, H))
    h_prev_list = []  # h_{t-1} for each step t
    steps = []  # per-step intermediate values

    h = h0.copy()
    c = None
    if cell == "lstm":
        assert c0 is not None and c0.shape == (B, H)
        c = c0.copy()

    for t in range(T):
        h_prev_list.append(h)
        gi = x[t] @ W_ih.T + b_ih  # (B, G*H) input contribution
        gh = h @ W_hh.T + b_hh  # (B, G*H) recurrent contribution

        if cell == "lstm":
            a = gi + gh
            i = sigmoid(a[:, 0 * H : 1 * H])
            f = sigmoid(a[:, 1 * H : 2 * H])
            g = np.tanh(a[:, 2 * H : 3 * H])
            o = sigmoid(a[:, 3 * H : 4 * H])
            c_prev = c
            c = f * c_prev + i * g
            tanh_c = np.tanh(c)
            h = o * tanh_c
            steps.append(dict(i=i, f=f, g=g, o=o, c_prev=c_prev, tanh_c=tanh_c))

        elif cell == "gru":
            r = sigmoid(gi[:, 0 * H : 1 * H] + gh[:, 0 * H : 1 * H])
            z = sigmoid(gi[:, 1 * H : 2 * H] + gh[:, 1 * H : 2 * H])
            gh_n = gh[:, 2 * H : 3 * H]  # W_hn h + b_hn (needed for dr)
            n = np.tanh(gi[:, 2 * H : 3 * H] + r * gh_n)
            h_prev = h
            h = (1.0 - z) * n + z * h_prev
            steps.append(dict(r=r, z=z, n=n, gh_n=gh_n))

        else:  # rnn
            h = np.tanh(gi + gh)
            steps.append(dict())

        hs[t] = h

    cache = dict(
        cell=cell,
        x=x,
        hs=hs,
        h_prev=h_prev_list,
        steps=steps,
        W_ih=W_ih,
        W_hh=W_hh,
    )
    return hs, (c.copy() if cell == "lstm" else None), cache


def cell_backward(cell, dhs, dhT, dcT, cache):
    """Backpropagate through ONE layer, step by step in reverse.

    Args:
        cell: "lstm", "gru" or "rnn" (must match the forward).
        dhs: (T, B, H) gradient w.r.t. every output hs[t].
        dhT: (B, H) extra gradient on the final hidden state (added to
            dhs[-1]); None means zeros.
        dcT: (B, H) gradient on the final cell state (LSTM only); None
            means zeros, ignored for GRU / RNN.
        cache: from cell_forward.

    Returns:
        (dx (T, B, I), dh0 (B, H), dc0 (B, H) or None,
         dW_ih, dW_hh, db_ih, db_hh) with the parameter shapes.
    """
    cell = _cell_name(cell)
    assert cache["cell"] == cell
    x, hs, W_ih, W_hh = cache["x"], cache["hs"], cache["W_ih"], cache["W_hh"]
    T, B, _ = x.shape
    H = W_hh.shape[1]
    dhs = _f64(dhs)
    assert dhs.shape == (T, B, H)

    dx = np.zeros_like(x)
    dW_ih = np.zeros_like(W_ih)
    dW_hh = np.zeros_like(W_hh)
    db_ih = np.zeros(W_ih.shape[0])
    db_hh = np.zeros(W_hh.shape[0])

    # gradient flowing into h_t / c_t from the future (step t+1) and from
    # whatever consumes the final state.
    dh_next = np.zeros((B, H)) if dhT is None else _f64(dhT).copy()
    dc_next = None
    if cell == "lstm":
        dc_next = np.zeros((B, H)) if dcT is None else _f64(dcT).copy()

    for t in reversed(range(T)):
        s = cache["steps"][t]
        h_prev = cache["h_prev"][t]
        dh = dhs[t] + dh_next  # total gradient on h_t

        if cell == "lstm":
            i, f, g, o = s["i"], s["f"], s["g"], s["o"]
            c_prev, tanh_c = s["c_prev"], s["tanh_c"]
            # h = o * tanh(c)
            do = dh * tanh_c
            dc = dc_next + dh * o * (1.0 - tanh_c**2)
            # c = f * c_prev + i * g
            di = dc * g
            dg = dc * i
            df = dc * c_prev
            dc_next = dc * f
            # through the nonlinearities to the pre-activations
            da = np.concatenate(
                [
                    di * i * (1.0 - i),
                    df * f * (1.0 - f),
                    dg * (1.0 - g**2),
                    do * o * (1.0 - o),
                ],
                axis=1,
            )
            da_i = da_h = da  # same pre-activation gradient for both halves
            dh_prev_direct = 0.0

        elif cell == "gru":
            r, z, n, gh_n = s["r"], s["z"], s["n"], s["gh_n"]
            # h = (1 - z) * n + z * h_prev
            dn = dh * (1.0 - z)
            dz = dh * (h_prev - n)
            dh_prev_direct = dh * z
            # n = tanh(gi_n + r * gh_n)
            da_n = dn * (1.0 - n**2)
            dr = da_n * gh_n
            dgh_n = da_n * r
            # r, z = sigmoid(gi + gh)
            da_r = dr * r * (1.0 - r)
            da_z = dz * z * (1.0 - z)
            da_i = np.concatenate([da_r, da_z, da_n], axis=1)  # d(gi)
            da_h = np.concatenate([da_r, da_z, dgh_n], axis=1)  # d(gh)

        else:  # rnn: h = tanh(gi + gh)
            h = hs[t]
            da = dh * (1.0 - h**2)
            da_i = da_h = da
            dh_prev_direct = 0.0

        # gi = x W_ih^T + b_ih ;  gh = h_prev W_hh^T + b_hh
        dW_ih += da_i.T @ x[t]
        db_ih += da_i.sum(axis=0)
        dW_hh += da_h.T @ h_prev
        db_hh += da_h.sum(axis=0)
        dx[t] = da_i @ W_ih
        dh_next = da_h @ W_hh + dh_prev_direct

    dh0 = dh_next
    dc0 = dc_next if cell == "lstm" else None
    return dx, dh0, dc0, dW_ih, dW_hh, db_ih, db_hh


# --------------------------------------------------------------------------
# whole model
# --------------------------------------------------------------------------


def _embed(params, x_ids):
    """Layer-0 input, time-major (T, B, I)."""
    x_tm = np.asarray(x_ids).T  # (T, B)
    if "encoder.weight" in params:
        return _f64(params["encoder.weight"])[x_tm]
    V = params["decoder.weight"].shape[0]
    return np.eye(V)[x_tm]


def _forward(params, cell, x_ids, h0, c0, masks):
    """Shared forward pass. Returns (logits (T,B,V), hT, cT, layer caches, top)."""
    cell = _cell_name(cell)
    L = num_layers(params)
    x_ids = np.asarray(x_ids)
    B, T = x_ids.shape
    h0 = _f64(h0)
    c0 = _f64(c0)
    assert h0.shape[:2] == (L, B), (h0.shape, L, B)
    if cell == "lstm":
        assert c0 is not None and c0.shape == h0.shape
    if masks is not None:
        assert len(masks) == L

    inp = _embed(params, x_ids)
    caches, hT, cT = [], [], []
    for k in range(L):
        hs, c_last, cache = cell_forward(
            cell,
            inp,
            h0[k],
            c0[k] if cell == "lstm" else None,
            params[f"rnn.weight_ih_l{k}"],
            params[f"rnn.weight_hh_l{k}"],
            params[f"rnn.bias_ih_l{k}"],
            params[f"rnn.bias_hh_l{k}"],
        )
        caches.append(cache)
        hT.append(hs[-1])
        cT.append(c_last)
        # dropout mask (if any) multiplies the OUTPUT of layer k
        inp = hs if masks is None else hs * _f64(masks[k])

    top = inp  # (T, B, H) input to the decoder
    logits = top @ _f64(params["decoder.weight"]).T + _f64(params["decoder.bias"])
    hT = np.stack(hT)
    cT = np.stack(cT) if cell == "lstm" else None
    return logits, hT, cT, caches, top


def logits_forward(params, cell, x_ids, h0, c0):
    """Forward pass without dropout.

    Returns (logits (B, T, V), hT (L, B, H), cT (L, B, H) or None).
    """
    logits, hT, cT, _, _ = _forward(params, cell, x_ids, h0, c0, None)
    return logits.transpose(1, 0, 2).copy(), hT, cT


def model_loss(params, cell, x_ids, y_ids, h0, c0, masks=None, return_state_grads=False):
    """Mean softmax cross-entropy of the whole model and its gradients.

    Args:
        params: dict name -> array (PyTorch state_dict names, see module doc).
        cell: "lstm", "gru" or "rnn".
        x_ids, y_ids: (B, T) integer inputs / targets.
        h0, c0: (L, B, H) initial states (c0 None/ignored for GRU, RNN).
        masks: None, or a list of L arrays (T, B, H) holding 0 or 1/(1-p);
            masks[k] multiplies the output of layer k.
        return_state_grads: also return dh0, dc0.

    Returns:
        (loss, grads, hT, cT), or (loss, grads, hT, cT, dh0, dc0) when
        return_state_grads.  grads has the same keys/shapes as params;
        cT / dc0 are None for non-LSTM.  The loss does not depend on hT/cT,
        so nothing flows back from them.
    """
    cell = _cell_name(cell)
    L = num_layers(params)
    x_ids = np.asarray(x_ids)
    y_ids = np.asarray(y_ids)
    B, T = x_ids.shape
    assert y_ids.shape == (B, T)

    logits, hT, cT, caches, top = _forward(params, cell, x_ids, h0, c0, masks)
    V = logits.shape[-1]
    N = B * T

    # ---- loss: mean over all B*T positions -------------------------------
    y_tm = y_ids.T  # (T, B)
    logp = _log_softmax(logits)  # (T, B, V)
    picked = np.take_along_axis(logp, y_tm[..., None], axis=-1)[..., 0]
    loss = float(-picked.sum() / N)

    # ---- backward ----------------------------------------------------------
    grads = {}
    dlogits = np.exp(logp)
    dlogits -= np.eye(V)[y_tm]
    dlogits /= N  # (T, B, V)

    grads["decoder.weight"] = np.einsum("tbv,tbh->vh", dlogits, top)
    grads["decoder.bias"] = dlogits.sum(axis=(0, 1))
    d_inp = dlogits @ _f64(params["decoder.weight"])  # grad on top (T, B, H)

    dh0 = np.zeros_like(_f64(h0))
    dc0 = np.zeros_like(dh0) if cell == "lstm" else None
    for k in reversed(range(L)):
        dhs = d_inp if masks is None else d_inp * _f64(masks[k])
        dx, dh0_k, dc0_k, dW_ih, dW_hh, db_ih, db_hh = cell_backward(
            cell, dhs, None, None, caches[k]
        )
        grads[f"rnn.weight_ih_l{k}"] = dW_ih
        grads[f"rnn.weight_hh_l{k}"] = dW_hh
        grads[f"rnn.bias_ih_l{k}"] = db_ih
        grads[f"rnn.bias_hh_l{k}"] = db_hh
        dh0[k] = dh0_k
        if cell == "lstm":
            dc0[k] = dc0_k
        d_inp = dx

    if "encoder.weight" in params:
        dE = np.zeros_like(_f64(params["encoder.weight"]))
        np.add.at(dE, x_ids.T, d_inp)  # scatter-add: repeated ids accumulate
        grads["encoder.weight"] = dE

    assert set(grads) == set(params), (sorted(grads), sorted(params))
    if return_state_grads:
        return loss, grads, hT, cT, dh0, dc0
    return loss, grads, hT, cT


def model_loss_state_grads(params, cell, x_ids, y_ids, h0, c0, masks=None):
    """Same as model_loss(..., return_state_grads=True):
    returns (loss, grads, hT, cT, dh0, dc0)."""
    return model_loss(params, cell, x_ids, y_ids, h0, c0, masks, return_state_grads=True)


# --------------------------------------------------------------------------
# test helpers
# --------------------------------------------------------------------------


def fd_grad(f, arr, eps=1e-6):
    """Central differences of the scalar f() w.r.t. every element of arr (perturbed in place and
    restored): the slow, obvious gradient every other gradient in the tests is checked against."""
    g = np.zeros_like(arr)
    it = np.nditer(arr, flags=["multi_index"])
    for _ in it:
        idx = it.multi_index
        old = arr[idx]
        arr[idx] = old + eps
        fp = f()
        arr[idx] = old - eps
        fm = f()
        arr[idx] = old
        g[idx] = (fp - fm) / (2 * eps)
    return g


def init_params(cell, V, H, L, E=0, rng=None, scale=0.5):
    """Random float64 params, uniform in [-scale, scale], PyTorch names.

    rng: numpy Generator, an int seed, or None (seed 0).
    """
    cell = _cell_name(cell)
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(0 if rng is None else rng)
    G = GATES[cell]

    def u(*shape):
        return rng.uniform(-scale, scale, size=shape)

    params = {}
    if E > 0:
        params["encoder.weight"] = u(V, E)
    for k in range(L):
        I_k = (E if E > 0 else V) if k == 0 else H
        params[f"rnn.weight_ih_l{k}"] = u(G * H, I_k)
        params[f"rnn.weight_hh_l{k}"] = u(G * H, H)
        params[f"rnn.bias_ih_l{k}"] = u(G * H)
        params[f"rnn.bias_hh_l{k}"] = u(G * H)
    params["decoder.weight"] = u(V, H)
    params["decoder.bias"] = u(V)
    return params


def make_dropout_masks(rng, L, T, B, H, p):
    """L inverted-dropout masks (T, B, H) holding 0 or 1/(1-p)."""
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    return [(rng.random((T, B, H)) >= p) / (1.0 - p) for _ in range(L)]

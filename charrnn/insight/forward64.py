"""A small, readable float64 forward pass over a model's weights that keeps what the fast kernels throw
away: every layer's hidden state h, cell state c (LSTM) and gate activations at every step.

`charrnn diagnose` reads gate saturation from it and `charrnn activations` draws its h and c per
character. The fast model (model.py) is the one that trains; this one is only for looking, at inference
sizes, and a test checks that its logits equal Model.logits. Gate order is PyTorch's: LSTM i, f, g, o;
GRU r, z, n; the vanilla RNN has one tanh block, called h here.

Sizes: B = streams, T = steps, H = hidden, V = vocab, L = layers.
"""
from dataclasses import dataclass

import numpy as np

from ..engine.params import Params

GATE_NAMES = {"lstm": ("i", "f", "g", "o"), "gru": ("r", "z", "n"), "rnn": ("h",)}
TANH_GATES = {"g", "n", "h"}  # the others are sigmoids


@dataclass
class Inside:
    """Everything one forward pass computed, time-major per layer."""

    h: list[np.ndarray]                  # L x (T, B, H) outputs
    c: list[np.ndarray | None]           # L x (T, B, H) LSTM cell states, None for GRU / RNN
    gates: list[dict[str, np.ndarray]]   # L x {gate name: (T, B, H) activation}
    logits: np.ndarray                   # (B, T, V)
    h_last: np.ndarray                   # (L, B, H) state after the chunk
    c_last: np.ndarray | None            # (L, B, H) or None


def sigmoid(a: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * a))  # the same function, without overflow for large |a|


def forward(params: Params, ids, h0=None, c0=None) -> Inside:
    """Run the model whose weights are `params` over ids (B, T) from state (h0, c0) ((L, B, H), zeros
    when None), in float64, with no dropout."""
    shape = params.shape
    cell, L, H = shape.cell, shape.num_layers, shape.hidden_size
    ids = np.asarray(ids)
    B, T = ids.shape
    W = {name: np.asarray(v, dtype=np.float64) for name, v in params.views.items()}
    h0 = np.zeros((L, B, H)) if h0 is None else np.asarray(h0, dtype=np.float64)
    c0 = np.zeros((L, B, H)) if c0 is None else np.asarray(c0, dtype=np.float64)
    # layer 0's input: an embedding row, or a one-hot vector (its input projection is a column of W_ih)
    inp = W["encoder.weight"][ids.T] if shape.embedding_size else np.eye(shape.vocab_size)[ids.T]  # (T, B, I)
    out = Inside([], [], [], None, np.zeros((L, B, H)), np.zeros((L, B, H)) if cell == "lstm" else None)
    for k in range(L):
        w_ih, w_hh = W[f"rnn.weight_ih_l{k}"], W[f"rnn.weight_hh_l{k}"]
        b_ih, b_hh = W[f"rnn.bias_ih_l{k}"], W[f"rnn.bias_hh_l{k}"]
        xproj = inp @ w_ih.T + b_ih  # (T, B, G): every step's input part at once
        hs = np.zeros((T, B, H))
        cs = np.zeros((T, B, H)) if cell == "lstm" else None
        acts = {g: np.zeros((T, B, H)) for g in GATE_NAMES[cell]}
        h, c = h0[k], c0[k]
        for t in range(T):
            hproj = h @ w_hh.T + b_hh
            if cell == "lstm":
                a = xproj[t] + hproj
                i, f = sigmoid(a[:, :H]), sigmoid(a[:, H:2 * H])
                g, o = np.tanh(a[:, 2 * H:3 * H]), sigmoid(a[:, 3 * H:])
                c = f * c + i * g
                h = o * np.tanh(c)
                cs[t] = c
                step = {"i": i, "f": f, "g": g, "o": o}
            elif cell == "gru":
                r = sigmoid(xproj[t, :, :H] + hproj[:, :H])
                z = sigmoid(xproj[t, :, H:2 * H] + hproj[:, H:2 * H])
                n = np.tanh(xproj[t, :, 2 * H:] + r * hproj[:, 2 * H:])
                h = (1.0 - z) * n + z * h
                step = {"r": r, "z": z, "n": n}
            else:
                h = np.tanh(xproj[t] + hproj)
                step = {"h": h}
            hs[t] = h
            for name, v in step.items():
                acts[name][t] = v
        out.h.append(hs)
        out.c.append(cs)
        out.gates.append(acts)
        out.h_last[k] = h
        if cell == "lstm":
            out.c_last[k] = c
        inp = hs
    out.logits = (inp @ W["decoder.weight"].T + W["decoder.bias"]).transpose(1, 0, 2)
    return out


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def saturation(inside: Inside, low: float = 0.1, high: float = 0.9) -> list[dict[str, tuple[float, float]]]:
    """Per layer, per gate: the share of activations in the flat left and right tails, where the gate's
    derivative is small and little gradient passes. Sigmoid gates: below `low` / above `high` (Karpathy,
    Johnson & Fei-Fei 2015, "Visualizing and Understanding Recurrent Networks", use 0.1 / 0.9); tanh
    units: below -high / above high, the same distance from their ends."""
    out = []
    for acts in inside.gates:
        layer = {}
        for name, a in acts.items():
            if name in TANH_GATES:
                layer[name] = (float(np.mean(a < -high)), float(np.mean(a > high)))
            else:
                layer[name] = (float(np.mean(a < low)), float(np.mean(a > high)))
        out.append(layer)
    return out

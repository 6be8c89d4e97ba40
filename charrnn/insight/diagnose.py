"""`charrnn diagnose`: how far back the gradient reaches (the vanishing gradient made visible), and how
saturated the gates are, for trained weights and for the untrained init they started from.

The gradient norms come from the real backward kernels (Model.forward_backward's `trace`), not from a
copy: ||dL_T/dh_t|| is the gradient of the last step's loss alone (loss_weights 1 at the last step, 0
elsewhere) reaching each earlier hidden state, and the mean-loss row is the same for the loss training
uses. For a vanilla RNN each step back multiplies the gradient by W_hh^T diag(tanh'), so with small
recurrent weights it shrinks geometrically; an LSTM's cell path multiplies it by the forget gate, which
keeps it alive when the gate is near 1.

Norms are per stream (a stream's loss depends only on its own hidden states) and averaged over streams.
Sizes: B = streams, T = steps, H = hidden, L = layers.
"""
import math
from dataclasses import dataclass, field

import numpy as np

from . import forward64 as inside
from ..errors import UsageError
from ..engine.model import Model, State
from ..engine.params import Params, Shape, init_params


@dataclass
class Flow:
    """One set of weights looked at on one batch."""

    label: str                              # "trained" or "init"
    loss: float                             # mean cross-entropy on the batch (nats/char)
    last: list[np.ndarray]                  # per layer (T,): ||dL_T/dh_t|| at distance d = T-1-t (index d)
    mean: list[np.ndarray]                  # per layer (T,): ||dL/dh_t|| of the mean loss, index t
    saturation: list[dict[str, tuple[float, float]]]  # per layer, gate -> (left, right) shares
    forget: list[float] | None = None       # LSTM: mean forget gate per layer


@dataclass
class Report:
    cell: str
    layers: int
    hidden: int
    batch: int
    seq_len: int
    source: str                             # where the text came from
    flows: list[Flow] = field(default_factory=list)


def make_batch(ids: np.ndarray, B: int, T: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(warm, x, y), each (B, T): B stretches of 2T+1 characters spread evenly over ids; the first T
    warm the hidden state (as training carries it between chunks), the next T+1 are inputs and targets."""
    if B < 1 or T < 2:
        raise UsageError(f"diagnose needs --batch-size >= 1 and --seq-len >= 2, got {B} and {T}",
                         "pass larger values")
    need = 2 * T + 1
    if ids.size < need:
        raise UsageError(f"the text has {ids.size} usable characters; --seq-len {T} needs at least {need}",
                         "pass a longer text or a smaller --seq-len")
    starts = np.linspace(0, ids.size - need, B).astype(np.int64)
    rows = np.stack([ids[s:s + need] for s in starts]).astype(np.int64)
    return rows[:, :T], rows[:, T:2 * T], rows[:, T + 1:]


def gradient_norms(model: Model, x, y, state: State) -> tuple[float, list[np.ndarray], list[np.ndarray]]:
    """(mean loss, last, mean) from two backward passes of the real kernels; see Flow."""
    B, T = np.shape(x)
    grads = model.params.zeros_like()
    weights = np.zeros((B, T))
    weights[:, -1] = 1.0

    def traced(loss_weights, scale):
        trace = [np.zeros((T, B, model.hidden_size), model.dtype) for _ in range(model.num_layers)]
        loss, _ = model.forward_backward(x, y, state, grads, loss_weights=loss_weights, trace=trace)
        # the kernels give d(sum of weighted losses / (B*T))/dh; `scale` turns that into the gradient
        # of one stream's loss (its last step's, or its mean over T) before taking the norm over H
        return loss, [np.linalg.norm(tr.astype(np.float64) * scale, axis=2).mean(axis=1) for tr in trace]

    _, last = traced(weights, B * T)
    loss, mean = traced(None, B)
    return float(loss), [n[::-1].copy() for n in last], mean


def look(label: str, model: Model, warm, x, y) -> Flow:
    """Gradient norms (real kernels) and gate statistics (float64 forward) on one batch."""
    _, state = model.logits(warm, model.zero_state(len(x)))
    loss, last, mean = gradient_norms(model, x, y, state)
    ins = inside.forward(model.params, x, state.h, state.c)
    forget = [float(g["f"].mean()) for g in ins.gates] if model.cell == "lstm" else None
    return Flow(label, loss, last, mean, inside.saturation(ins), forget)


def initial_model(shape: Shape, seed: int, init_scale: float, forget_bias: float | None = None,
                  init: dict | None = None) -> Model:
    """The weights `charrnn train` starts from with this seed and scale (the trainer's first draw from
    its Generator is init_params). init: the run's init_params keywords (scheme, forget_bias,
    orthogonal_recurrent). forget_bias: set the LSTM forget-gate bias (in bias_ih, as the init's
    model.forget_bias does) to see what a larger one does."""
    model = Model(shape, Params(shape, np.float32))
    init_params(model.params, np.random.default_rng(seed), init_scale, **(init or {}))
    if forget_bias is not None:
        if shape.cell != "lstm":
            raise UsageError("--forget-bias applies to an LSTM only", "use it with --model lstm")
        H = shape.hidden_size
        for k in range(shape.num_layers):
            model.params[f"rnn.bias_ih_l{k}"][H:2 * H] = forget_bias
            model.params[f"rnn.bias_hh_l{k}"][H:2 * H] = 0.0
    return model


def diagnose(models: list[tuple[str, Model]], ids: np.ndarray, B: int, T: int, source: str) -> Report:
    warm, x, y = make_batch(ids, B, T)
    first = models[0][1]
    rep = Report(first.cell, first.num_layers, first.hidden_size, B, T, source)
    rep.flows = [look(label, m, warm, x, y) for label, m in models]
    return rep


def decay(norms: np.ndarray) -> tuple[float, float]:
    """(factor per step, r^2) of a straight-line fit of log(norm) against distance: a factor of 0.5
    means each step back halves the gradient. Norms that underflowed to 0 are left out."""
    d = np.arange(norms.size, dtype=np.float64)
    ok = np.isfinite(norms) & (norms > 0)
    if ok.sum() < 3:
        return math.nan, math.nan
    slope, icpt = np.polyfit(d[ok], np.log(norms[ok]), 1)
    resid = np.log(norms[ok]) - (slope * d[ok] + icpt)
    total = np.log(norms[ok]) - np.log(norms[ok]).mean()
    r2 = 1.0 - float(resid @ resid) / float(total @ total) if float(total @ total) > 0 else 1.0
    return float(math.exp(slope)), r2


def to_dict(rep: Report) -> dict:
    """The report as plain JSON data (`--json`)."""
    out = {k: getattr(rep, k) for k in ("cell", "layers", "hidden", "batch", "seq_len", "source")}
    out["weights"] = {}
    for f in rep.flows:
        layers = []
        for k in range(rep.layers):
            factor, r2 = decay(f.last[k])
            layers.append({"grad_last_step_by_distance": f.last[k].tolist(),
                           "grad_mean_loss_by_step": f.mean[k].tolist(),
                           "decay_per_step": factor, "decay_fit_r2": r2,
                           "saturation": {g: {"left": lo, "right": hi} for g, (lo, hi) in f.saturation[k].items()},
                           "mean_forget_gate": f.forget[k] if f.forget else None})
        out["weights"][f.label] = {"loss": f.loss, "layers": layers}
    return out


def tables(rep: Report):
    """Two rich tables that fit 80 columns, each with a note: gradient flow, then gate saturation."""
    from rich import box
    from rich.table import Table
    from rich.text import Text
    T = rep.seq_len
    far = [d for d in (1, 10) if d < T - 1] + [T - 1]
    g = Table(title=f"gradient reaching h_t, {rep.cell.upper()} {rep.layers}x{rep.hidden}", box=box.SIMPLE_HEAD,
              pad_edge=False)
    g_note = Text(f"{rep.batch} streams x {T} steps of {rep.source}. t=T, T-1, ...: ‖∂L_T/∂h_t‖, the gradient "
                  "of the last step's loss at h_t; per step: the factor each step back multiplies it by "
                  "(log-linear fit); mean L: ‖∂L/∂h_1‖ of the mean loss\n", style="dim")
    for name in ["layer", "loss", "t=T"] + [f"T-{d}" for d in far] + ["per step", "mean L"]:
        g.add_column(name, justify="right", no_wrap=True)
    for k in range(rep.layers):
        for f in rep.flows:
            factor, _ = decay(f.last[k])
            g.add_row(f"{k} {f.label}", f"{f.loss:.3f}", *[f"{f.last[k][d]:.1e}" for d in [0] + far],
                      "-" if math.isnan(factor) else f"×{factor:.3f}", f"{f.mean[k][0]:.1e}")
    s = Table(title="gate saturation", box=box.SIMPLE_HEAD, pad_edge=False)
    s_note = Text("share of activations in the flat tails: left < 0.1, right > 0.9 (tanh: < -0.9, > 0.9)",
                  style="dim")
    for name in ["layer", "gate"] + [f"{f.label} left | right" for f in rep.flows]:
        s.add_column(name, justify="right")
    for k in range(rep.layers):
        for gate in rep.flows[0].saturation[k]:
            s.add_row(str(k), gate, *[f"{f.saturation[k][gate][0]:6.1%} | {f.saturation[k][gate][1]:6.1%}"
                                      for f in rep.flows])
        if rep.cell == "lstm":
            s.add_row(str(k), "mean f", *[f"{f.forget[k]:.3f}" for f in rep.flows])
    return g, g_note, s, s_note

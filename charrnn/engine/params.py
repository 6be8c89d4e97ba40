"""One flat parameter buffer with named views, in PyTorch state_dict order and names.

Gradients and every optimizer moment share this layout, so the update, clipping, checksum and save are
loops over whole vectors, and a checkpoint is "write each view under its name".
"""
from dataclasses import dataclass

import numpy as np

GATES = {"lstm": 4, "gru": 3, "rnn": 1}


@dataclass(frozen=True)
class Shape:
    """What fixes the parameter layout: cell, vocabulary V, hidden H, layers L, embedding E (0 = one-hot)."""

    cell: str
    vocab_size: int
    hidden_size: int
    num_layers: int
    embedding_size: int = 0

    def layout(self) -> list[tuple[str, tuple[int, ...]]]:
        """(name, shape) of every parameter, in torch state_dict order."""
        G = GATES[self.cell] * self.hidden_size
        V, H, E = self.vocab_size, self.hidden_size, self.embedding_size
        out: list[tuple[str, tuple[int, ...]]] = []
        if E > 0:
            out.append(("encoder.weight", (V, E)))  # like nn.Embedding
        for k in range(self.num_layers):
            in_size = (E or V) if k == 0 else H
            out += [
                (f"rnn.weight_ih_l{k}", (G, in_size)),
                (f"rnn.weight_hh_l{k}", (G, H)),
                (f"rnn.bias_ih_l{k}", (G,)),
                (f"rnn.bias_hh_l{k}", (G,)),
            ]
        out += [("decoder.weight", (V, H)), ("decoder.bias", (V,))]
        return out

    def count(self) -> int:
        """Parameters in layout(), without building it (a hostile num_layers must not cost a loop)."""
        G, V, H, E = GATES[self.cell] * self.hidden_size, self.vocab_size, self.hidden_size, self.embedding_size
        first = G * ((E or V) + H + 2)
        return V * E + first + (self.num_layers - 1) * G * (2 * H + 2) + V * H + V


class Params:
    """A flat vector `flat` and a dict of named views into it (`p["decoder.weight"]`)."""

    def __init__(self, shape: Shape, dtype=np.float32, flat: np.ndarray | None = None):
        self.shape = shape
        self.layout = shape.layout()
        n = sum(int(np.prod(s)) for _, s in self.layout)
        if flat is None:
            flat = np.zeros(n, dtype=dtype)
        if flat.shape != (n,) or not flat.flags.c_contiguous:
            raise ValueError(f"flat buffer must be contiguous with {n} elements, got {flat.shape}")
        self.flat = flat
        self.views: dict[str, np.ndarray] = {}
        pos = 0
        for name, s in self.layout:
            size = int(np.prod(s))
            self.views[name] = flat[pos:pos + size].reshape(s)
            pos += size

    def __getitem__(self, name: str) -> np.ndarray:
        return self.views[name]

    def __len__(self) -> int:
        return self.flat.size

    @property
    def dtype(self):
        return self.flat.dtype

    def zeros_like(self) -> "Params":
        """A buffer of the same layout (gradients, moments)."""
        return Params(self.shape, self.flat.dtype)

    def astype(self, dtype) -> "Params":
        return Params(self.shape, dtype, self.flat.astype(dtype))

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        return dict(self.layout)


INIT_SCHEMES = ("uniform", "torch")


def machine_memory() -> int:
    """Bytes of physical memory (1 TiB where the OS does not say): what a size is checked against."""
    import os
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 40


def training_bytes(shape: Shape, batch: int, seq_len: int) -> int:
    """The least memory training a model of `shape` holds: ten float32 copies of its parameters (weights,
    gradients, per-thread gradients, optimizer moments, an average, a checkpoint's copies) and every
    layer's activations for one chunk of batch x seq_len characters."""
    per_step = shape.num_layers * (GATES[shape.cell] + 4) * shape.hidden_size
    return 4 * (10 * shape.count() + batch * seq_len * per_step)


def check_memory(nbytes: int, what: str, hint: str) -> None:
    """UsageError, before anything is allocated, when `what` needs more bytes than the machine has."""
    from ..errors import UsageError
    have = machine_memory()
    if nbytes > have:
        raise UsageError(f"{what} needs {nbytes / 1e9:,.3g} GB of memory, more than this machine's "
                         f"{have / 1e9:.3g} GB", hint)


def init_params(p: Params, rng: np.random.Generator, scale: float = 0.08, *, scheme: str = "uniform",
                forget_bias: float | None = None, orthogonal_recurrent: bool = False) -> None:
    """Draw the initial weights from `rng` (the trainer's one Generator, so the seed fixes them).

    scheme "uniform" (char-rnn's): every weight and bias uniform in [-scale, scale], one draw over the flat
    buffer. scheme "torch" (PyTorch's defaults, `scale` unused): nn.LSTM/GRU/RNN and nn.Linear draw
    U(+-1/sqrt(H)) for weights and biases, nn.Embedding N(0, 1); here one draw per parameter, in order.
    Then, in this order (each is a choice measured in benchmarks/quality.py, not a law):
    orthogonal_recurrent: each gate's H x H block of weight_hh becomes a random orthogonal matrix (QR of a
    Gaussian, signs fixed so it is uniform over the orthogonal group), drawn after the weights above.
    forget_bias (LSTM only): the forget-gate block of bias_ih set to it and that of bias_hh to 0, so
    early gradients flow through c; None leaves both as drawn.
    """
    if scheme == "uniform":
        p.flat[:] = rng.uniform(-scale, scale, size=p.flat.size).astype(p.flat.dtype)
    elif scheme == "torch":
        bound = 1.0 / np.sqrt(p.shape.hidden_size)  # nn.Linear's fan_in is H too
        for name, view in p.views.items():
            if name == "encoder.weight":
                view[...] = rng.standard_normal(view.shape)
            else:
                view[...] = rng.uniform(-bound, bound, size=view.shape)
    else:
        raise ValueError(f"unknown init scheme {scheme!r}; choose one of: {', '.join(INIT_SCHEMES)}")
    H = p.shape.hidden_size
    if orthogonal_recurrent:
        for k in range(p.shape.num_layers):
            w = p[f"rnn.weight_hh_l{k}"]
            for g in range(GATES[p.shape.cell]):
                q, r = np.linalg.qr(rng.standard_normal((H, H)))
                w[g * H:(g + 1) * H] = q * np.sign(np.diag(r))
    if p.shape.cell == "lstm" and forget_bias is not None:
        for k in range(p.shape.num_layers):
            p[f"rnn.bias_ih_l{k}"][H:2 * H] = forget_bias
            p[f"rnn.bias_hh_l{k}"][H:2 * H] = 0.0

"""Model <-> checkpoint file: which arrays and meta a checkpoint holds, and how a model is rebuilt.

A checkpoint holds the model's views under their torch state_dict names, optionally the optimizer's
`optim.*` moments and the carried hidden state `state.h` / `state.c`, with `optim.ema` the weights being
trained as `ema.train_weights` (the model's views then hold their average; see averaging.py), and a
`meta` JSON document (format version and checksum are added by checkpoint.save).
"""
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.vocab import Vocab
from ..engine.model import Model, State
from ..engine.params import GATES, Params, Shape
from ..errors import CharrnnError
from . import meta as M
from . import npz as checkpoint
from . import rundir


@dataclass
class Loaded:
    """A checkpoint read back: the model, its vocabulary, meta and every array in the file."""

    model: Model
    vocab: Vocab
    meta: dict
    arrays: dict[str, np.ndarray]
    path: Path


def model_arrays(model: Model) -> dict[str, np.ndarray]:
    """The model's weights as float32 arrays named like a torch state_dict."""
    return {name: np.asarray(v, dtype=np.float32) for name, v in model.params.views.items()}


def state_arrays(state: State) -> dict[str, np.ndarray]:
    out = {"state.h": state.h}
    if state.c is not None:
        out["state.c"] = state.c
    return out


def load(path: str | Path) -> Loaded:
    """Read and verify a checkpoint and rebuild its model (float32). One-line CharrnnError on any problem."""
    p = rundir.resolve_checkpoint(path)
    arrays, meta = checkpoint.load(p)
    M.check_types(meta, p)
    fields, chars = M.model_fields(meta, p)
    shape, vocab = Shape(*fields), Vocab(chars)
    if shape.cell not in GATES or vocab.size != shape.vocab_size or min(shape.vocab_size, shape.hidden_size,
                                                                       shape.num_layers) < 1:
        raise CharrnnError(f"{p}: meta describes an impossible model {shape}", "the file is corrupt", exit_code=2)
    params = Params(shape, np.float32)
    checkpoint.check_arrays(arrays, params.expected_shapes(), p)
    for name, view in params.views.items():
        a = arrays[name]
        if a.dtype.kind != "f":
            raise CharrnnError(f"{p}: {name} has dtype {a.dtype}, expected float32", "the file is corrupt", exit_code=2)
        view[...] = a
    if not np.isfinite(params.flat).all():
        raise CharrnnError(f"{p}: the weights hold NaN or inf", "use an earlier checkpoint", exit_code=2)
    return Loaded(Model(shape, params), vocab, meta, arrays, p)


def load_state(arrays: dict[str, np.ndarray], model: Model, batch_size: int, path: Path) -> State:
    """The carried hidden state saved beside the weights, checked against the model and batch size."""
    want = (model.num_layers, batch_size, model.hidden_size)
    names = ["state.h"] + (["state.c"] if model.cell == "lstm" else [])
    checkpoint.check_arrays(arrays, {n: want for n in names}, path)
    return State(arrays["state.h"].astype(model.dtype), arrays["state.c"].astype(model.dtype)
                 if model.cell == "lstm" else None)

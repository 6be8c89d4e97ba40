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
from ..engine.params import Params, check_memory
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


def _before_arrays(meta: dict, headers: dict, p: Path) -> None:
    """Refuse a checkpoint whose arrays are not what its meta implies, before one is inflated: the
    weights must be there with their shapes, and nothing may hold more than a model's weights, optimizer
    moments, average and carried state can."""
    M.check_types(meta, p)
    shape, _ = M.shape_and_vocab(meta, p)
    n = shape.count()
    held = sum(h.nbytes for h in headers.values())
    if 4 * n > held:
        raise CharrnnError(f"{p}: meta describes a model of {n:,} parameters, but the file's arrays hold only "
                           f"{held:,} bytes", "the file is corrupt or its meta was edited", exit_code=2)
    check_memory(8 * n, f"{p} ({n:,} parameters)", "load it on a machine with more memory")
    checkpoint.check_arrays(headers, dict(shape.layout()), p)
    B = meta.get("batch", {}).get("batch_size", 1)
    most = 8 * (4 * n + 2 * shape.num_layers * B * shape.hidden_size) + (1 << 20)
    if held > most:
        raise CharrnnError(f"{p}: its arrays hold {held:,} bytes, more than a checkpoint of this model can "
                           f"({most:,})", "the file is corrupt or was not written by charrnn", exit_code=2)


def load(path: str | Path) -> Loaded:
    """Read and verify a checkpoint and rebuild its model (float32). One-line CharrnnError on any problem."""
    p = rundir.resolve_checkpoint(path)
    arrays, meta = checkpoint.load(p, check=_before_arrays)
    shape, vocab = M.shape_and_vocab(meta, p)
    params = Params(shape, np.float32)
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

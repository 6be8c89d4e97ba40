"""Model <-> checkpoint file: which arrays and meta a checkpoint holds, and how a model is rebuilt.

A checkpoint holds the model's views under their torch state_dict names, optionally the optimizer's
`optim.*` moments and the carried hidden state `state.h` / `state.c`, with `optim.ema` the weights being
trained as `ema.train_weights` (the model's views then hold their average; see averaging.py), and a
`meta` JSON document (format version and checksum are added by checkpoint.save).
"""
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import npz as checkpoint
from ..data.corpus import Vocab
from ..errors import CharrnnError, UsageError
from ..engine.model import Model, State
from ..engine.params import GATES, Params, Shape


@dataclass
class Loaded:
    """A checkpoint read back: the model, its vocabulary, meta and every array in the file."""

    model: Model
    vocab: Vocab
    meta: dict
    arrays: dict[str, np.ndarray]
    path: Path


def shape_meta(shape: Shape) -> dict:
    return {"cell": shape.cell, "vocab_size": shape.vocab_size, "hidden_size": shape.hidden_size,
            "num_layers": shape.num_layers, "embedding_size": shape.embedding_size}


def model_arrays(model: Model) -> dict[str, np.ndarray]:
    """The model's weights as float32 arrays named like a torch state_dict."""
    return {name: np.asarray(v, dtype=np.float32) for name, v in model.params.views.items()}


def state_arrays(state: State) -> dict[str, np.ndarray]:
    out = {"state.h": state.h}
    if state.c is not None:
        out["state.c"] = state.c
    return out


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run directory meaning its best.npz (last.npz if there is no best yet)."""
    p = Path(path)
    if p.is_dir():
        for name in ("best.npz", "last.npz"):
            if (p / name).is_file():
                return p / name
        raise UsageError(f"{p} holds no best.npz or last.npz", "pass a checkpoint file or a run directory")
    if not p.exists():
        raise UsageError(f"checkpoint {p} does not exist", "pass a .npz file or a run directory")
    return p


# Meta sections charrnn train writes and the readers (info, eval --split, --resume) use. The checksum
# covers the arrays only, so a hand-edited meta still loads: check the types before anything reads them.
_META_SECTIONS = ("config", "corpus", "progress", "losses", "batch", "rng", "init_from")
_META_NUMBERS = {"progress": ("step", "epoch", "elapsed_s", "bad_steps"),
                 "losses": ("train_loss", "val_loss", "best_val_loss")}


def _check_meta_types(meta: dict, p: Path) -> None:
    """CharrnnError naming the first meta field whose type no charrnn version writes."""
    def bad(field: str) -> CharrnnError:
        return CharrnnError(f"{p}: meta is missing or has a bad field ({field})",
                            "the file is not a charrnn checkpoint, or its meta was edited", exit_code=2)

    for section in _META_SECTIONS:
        if section in meta and not isinstance(meta[section], dict):
            raise bad(section)
    for section, keys in _META_NUMBERS.items():
        for key in keys:
            v = meta.get(section, {}).get(key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise bad(f"{section}.{key}")
    for key in ("path", "sha256"):
        if "corpus" in meta and not isinstance(meta["corpus"].get(key), str):
            raise bad(f"corpus.{key}")
    for key in ("sources", "files"):  # a corpus of several files (see Trainer.corpus_meta)
        v = meta.get("corpus", {}).get(key)
        if v is not None and not (isinstance(v, list) and v and all(isinstance(p, str) for p in v)):
            raise bad(f"corpus.{key}")
    if not all(isinstance(v, dict) for v in meta.get("config", {}).values()):
        raise bad("config")


def load(path: str | Path) -> Loaded:
    """Read and verify a checkpoint and rebuild its model (float32). One-line CharrnnError on any problem."""
    p = resolve_checkpoint(path)
    arrays, meta = checkpoint.load(p)
    _check_meta_types(meta, p)
    try:
        m = meta["model"]
        shape = Shape(str(m["cell"]), int(m["vocab_size"]), int(m["hidden_size"]), int(m["num_layers"]),
                      int(m.get("embedding_size", 0)))
        vocab = Vocab(str(meta["vocab"]))
    except (KeyError, TypeError, ValueError) as e:
        raise CharrnnError(f"{p}: meta is missing or has a bad field ({e})", "the file is not a charrnn checkpoint",
                           exit_code=2) from None
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

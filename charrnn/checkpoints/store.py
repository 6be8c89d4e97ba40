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
from ..engine.params import GATES, Params, Shape, check_memory


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
_META_SECTIONS = ("config", "corpus", "progress", "losses", "batch", "rng", "init_from", "model")
_META_COUNTS = {"progress": ("step", "epoch", "batch_index", "offset", "bad_steps", "bad_in_row", "stale_evals"),
                "batch": ("batch_size", "seq_len")}  # integers >= 0 (batch: >= 1)
_META_NUMBERS = {"progress": ("elapsed_s", "train_loss_smooth"), "losses": ("train_loss", "val_loss", "best_val_loss")}
# Sizes no charrnn model comes near: a meta beyond them is corrupt or hostile, refused before allocating.
_SIZES = {"vocab_size": (1, 0x110000), "hidden_size": (1, 1 << 16), "num_layers": (1, 1 << 10),
          "embedding_size": (0, 1 << 16)}
_MAX_BATCH = 1 << 20  # batch.batch_size and seq_len


def _bad_field(field: str, p: Path) -> CharrnnError:
    return CharrnnError(f"{p}: meta is missing or has a bad field ({field})",
                        "the file is not a charrnn checkpoint, or its meta was edited", exit_code=2)


def _count(v) -> bool:
    """An integer that is one in JSON: not 32.7, not "32", not true."""
    return isinstance(v, int) and not isinstance(v, bool)


def _check_meta_types(meta: dict, p: Path) -> None:
    """CharrnnError naming the first meta field whose type or range no charrnn version writes."""
    for section in _META_SECTIONS:
        if section in meta and not isinstance(meta[section], dict):
            raise _bad_field(section, p)
    for section, keys in _META_COUNTS.items():
        for key in keys:
            v = meta.get(section, {}).get(key, 1)
            low, high = (1, _MAX_BATCH) if section == "batch" else (0, 1 << 62)
            if not _count(v) or not low <= v <= high:
                raise _bad_field(f"{section}.{key}", p)
    for section, keys in _META_NUMBERS.items():
        for key in keys:
            v = meta.get(section, {}).get(key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise _bad_field(f"{section}.{key}", p)
    elapsed = meta.get("progress", {}).get("elapsed_s", 0.0)
    if not (0 <= elapsed < float("inf")):  # NaN fails too
        raise _bad_field("progress.elapsed_s", p)
    for key in ("path", "sha256"):
        if "corpus" in meta and not isinstance(meta["corpus"].get(key), str):
            raise _bad_field(f"corpus.{key}", p)
    for key in ("sources", "files"):  # a corpus of several files (see Trainer.corpus_meta)
        v = meta.get("corpus", {}).get(key)
        if v is not None and not (isinstance(v, list) and v and all(isinstance(p, str) for p in v)):
            raise _bad_field(f"corpus.{key}", p)
    if not all(isinstance(v, dict) for v in meta.get("config", {}).values()):
        raise _bad_field("config", p)


def _shape_of(meta: dict, p: Path) -> tuple[Shape, Vocab]:
    """The model shape and vocabulary meta describes, every size an integer in range, and agreeing with
    the config the checkpoint records (CharrnnError otherwise). Nothing is allocated."""
    m = meta.get("model")
    if not isinstance(m, dict) or not isinstance(meta.get("vocab"), str) or m.get("cell") not in GATES:
        raise _bad_field("model" if not isinstance(m, dict) or m.get("cell") not in GATES else "vocab", p)
    for key, (low, high) in _SIZES.items():
        v = m.get(key, 0) if key == "embedding_size" else m.get(key)
        if not _count(v) or not low <= v <= high:
            raise _bad_field(f"model.{key}", p)
    shape = Shape(m["cell"], m["vocab_size"], m["hidden_size"], m["num_layers"], m.get("embedding_size", 0))
    try:
        vocab = Vocab(meta["vocab"])
    except ValueError:
        raise _bad_field("vocab", p) from None
    if vocab.size != shape.vocab_size or len(meta["vocab"]) != vocab.size:
        raise CharrnnError(f"{p}: meta describes an impossible model {shape}", "the file is corrupt", exit_code=2)
    said = (meta.get("config") or {}).get("model") or {}
    for key in ("cell", "hidden_size", "num_layers", "embedding_size"):
        if key in said and said[key] != getattr(shape, key):
            raise CharrnnError(f"{p}: meta contradicts itself: the model is {key} {getattr(shape, key)!r} but "
                               f"its config says {said[key]!r}", "the file is corrupt or its meta was edited",
                               exit_code=2)
    return shape, vocab


def _before_arrays(meta: dict, headers: dict, p: Path) -> None:
    """Refuse a checkpoint whose arrays are not what its meta implies, before one is inflated: the
    weights must be there with their shapes, and nothing may hold more than a model's weights, optimizer
    moments, average and carried state can."""
    _check_meta_types(meta, p)
    shape, _ = _shape_of(meta, p)
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
    p = resolve_checkpoint(path)
    arrays, meta = checkpoint.load(p, check=_before_arrays)
    shape, vocab = _shape_of(meta, p)
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

"""Checkpoint metadata: the one owner of what a checkpoint's `meta` JSON holds, how it is written, checked
and read. Everything else asks this module instead of indexing the dict.

The schema (`charrnn train` writes all of it; a bare weights file may hold only model and vocab):

    charrnn_version  str    the version that wrote it
    format_version   int    the npz container's version, and `checksum` over the arrays (added by npz.save)
    model    {cell, vocab_size, hidden_size, num_layers, embedding_size}
    vocab    str            the characters, sorted by code point (data/vocab.py)
    config   {section: {key: value}}   the resolved config; keys it predates read as BEFORE_THE_KEY
    batch    {batch_size, seq_len}
    progress {step, epoch, batch_index, offset, elapsed_s, bad_steps, bad_in_row, stale_evals,
              train_loss_smooth}
    rng      numpy's bit generator state (the one generator of the run)
    losses   {train_loss, val_loss, best_val_loss}   val_loss None: written on a step without evaluation
    corpus   {path, sha256, n_chars[, sources, files]}   sources/files: a corpus of several files
    init_from {path, step, checksum, corpus, ...}   fine-tuned runs (training/finetune.py: origin)
    ended    {reason, why, go_on, ...}   how the session that wrote it ended (training/endings.py)

The checksum covers the arrays only, so a hand-edited meta still loads: `check_types` runs before anything
reads it, and `check_resumable` before a resume does.
"""
from pathlib import Path
from typing import Any, Mapping

from .._version import __version__
from ..config import Config
from ..data.vocab import Vocab
from ..engine.params import GATES, Shape
from ..errors import CharrnnError, UsageError

# Keys added after checkpoints were first written, with the behaviour of the code before each existed.
# Defaults are chosen by measurement and move; a checkpoint without the key was trained the old way.
BEFORE_THE_KEY: dict[str, Any] = {
    "model.forget_bias": 1.0,  # char-rnn's forget-gate bias was the init until the key came (2026-12-02)
    "optim.schedule_length": "steps",  # cosine decayed over the step budget before `auto` existed
    "optim.decay_fraction": 1.0,  # the decay ran over the whole budget before warmup-stable-decay
    "optim.ema": 0.0,  # no weight averaging before the key (2026-12-03)
}

# Meta sections charrnn train writes and the readers (info, eval --split, --resume) use. The checksum
# covers the arrays only, so a hand-edited meta still loads: check the types before anything reads them.
SECTIONS = ("config", "corpus", "progress", "losses", "batch", "rng", "init_from", "model")
_COUNTS = {"progress": ("step", "epoch", "batch_index", "offset", "bad_steps", "bad_in_row", "stale_evals"),
                "batch": ("batch_size", "seq_len")}  # integers >= 0 (batch: >= 1)
_NUMBERS = {"progress": ("elapsed_s", "train_loss_smooth"), "losses": ("train_loss", "val_loss", "best_val_loss")}
# Sizes no charrnn model comes near: a meta beyond them is corrupt or hostile, refused before allocating.
_SIZES = {"vocab_size": (1, 0x110000), "hidden_size": (1, 1 << 16), "num_layers": (1, 1 << 10),
          "embedding_size": (0, 1 << 16)}
_MAX_BATCH = 1 << 20  # batch.batch_size and seq_len


# What an exact resume reads (a bare weights file has none of it).
_RESUME_NUMBERS = ("step", "epoch", "batch_index", "offset", "elapsed_s", "bad_steps", "bad_in_row")
_RESUME_FIELDS = (("rng", "state"), ("batch", "batch_size"), ("batch", "seq_len"), ("corpus", "sha256"),
                  ("corpus", "path"), ("losses", "best_val_loss"))


# -- writing ---------------------------------------------------------------------------------------
def shape_meta(shape) -> dict:
    """The `model` section of an engine.params.Shape."""
    return {"cell": shape.cell, "vocab_size": shape.vocab_size, "hidden_size": shape.hidden_size,
            "num_layers": shape.num_layers, "embedding_size": shape.embedding_size}


def training(*, shape, vocab: str, config: Config, batch: tuple[int, int], progress: dict, rng: dict,
             losses: dict, corpus: dict, init_from: dict | None, ended: dict | None = None) -> dict:
    """The meta of a checkpoint written by the trainer (see the schema above)."""
    return {
        "charrnn_version": __version__,
        "model": shape_meta(shape),
        "vocab": vocab,
        "config": config.to_dict(),
        "batch": {"batch_size": batch[0], "seq_len": batch[1]},
        "progress": progress,
        "rng": rng,
        "losses": losses,
        "corpus": corpus,
    } | ({"init_from": init_from} if init_from is not None else {}) | ({"ended": ended} if ended is not None else {})


# -- checking --------------------------------------------------------------------------------------
def _bad(field: str, p: Path) -> CharrnnError:
    return CharrnnError(f"{p}: meta is missing or has a bad field ({field})",
                        "the file is not a charrnn checkpoint, or its meta was edited", exit_code=2)


def _count(v) -> bool:
    """An integer that is one in JSON: not 32.7, not "32", not true."""
    return isinstance(v, int) and not isinstance(v, bool)


def check_types(meta: dict, p: Path) -> None:
    """CharrnnError naming the first meta field whose type or range no charrnn version writes."""
    for section in SECTIONS:
        if section in meta and not isinstance(meta[section], dict):
            raise _bad(section, p)
    for section, keys in _COUNTS.items():
        for key in keys:
            v = meta.get(section, {}).get(key, 1)
            low, high = (1, _MAX_BATCH) if section == "batch" else (0, 1 << 62)
            if not _count(v) or not low <= v <= high:
                raise _bad(f"{section}.{key}", p)
    for section, keys in _NUMBERS.items():
        for key in keys:
            v = meta.get(section, {}).get(key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise _bad(f"{section}.{key}", p)
    elapsed = meta.get("progress", {}).get("elapsed_s", 0.0)
    if not (0 <= elapsed < float("inf")):  # NaN fails too
        raise _bad("progress.elapsed_s", p)
    for key in ("path", "sha256"):
        if "corpus" in meta and not isinstance(meta["corpus"].get(key), str):
            raise _bad(f"corpus.{key}", p)
    for key in ("sources", "files"):  # a corpus of several files (see Trainer.corpus_meta)
        v = meta.get("corpus", {}).get(key)
        if v is not None and not (isinstance(v, list) and v and all(isinstance(p, str) for p in v)):
            raise _bad(f"corpus.{key}", p)
    if not all(isinstance(v, dict) for v in meta.get("config", {}).values()):
        raise _bad("config", p)


def shape_and_vocab(meta: dict, p: Path) -> tuple[Shape, Vocab]:
    """The model shape and vocabulary meta describes, every size an integer in range, and agreeing with
    the config the checkpoint records (CharrnnError otherwise). Nothing is allocated."""
    m = meta.get("model")
    if not isinstance(m, dict) or not isinstance(meta.get("vocab"), str) or m.get("cell") not in GATES:
        raise _bad("model" if not isinstance(m, dict) or m.get("cell") not in GATES else "vocab", p)
    for key, (low, high) in _SIZES.items():
        v = m.get(key, 0) if key == "embedding_size" else m.get(key)
        if not _count(v) or not low <= v <= high:
            raise _bad(f"model.{key}", p)
    shape = Shape(m["cell"], m["vocab_size"], m["hidden_size"], m["num_layers"], m.get("embedding_size", 0))
    try:
        vocab = Vocab(meta["vocab"])
    except ValueError:
        raise _bad("vocab", p) from None
    if vocab.size != shape.vocab_size or len(meta["vocab"]) != vocab.size:
        raise CharrnnError(f"{p}: meta describes an impossible model {shape}", "the file is corrupt", exit_code=2)
    said = (meta.get("config") or {}).get("model") or {}
    for key in ("cell", "hidden_size", "num_layers", "embedding_size"):
        if key in said and said[key] != getattr(shape, key):
            raise CharrnnError(f"{p}: meta contradicts itself: the model is {key} {getattr(shape, key)!r} but "
                               f"its config says {said[key]!r}", "the file is corrupt or its meta was edited",
                               exit_code=2)
    return shape, vocab


def check_resumable(meta: dict, p: Path | str) -> None:
    """UsageError unless meta holds every field an exact resume needs (a bare weights file has none)."""
    try:
        for key in _RESUME_NUMBERS:
            float(meta["progress"][key])
        for section, key in _RESUME_FIELDS:
            meta[section][key]
    except (KeyError, TypeError, ValueError):
        raise UsageError(f"{p} has no complete training state to resume",
                         "resume from a checkpoint written by charrnn train") from None


# -- reading ---------------------------------------------------------------------------------------
def saved_config(meta: dict, source: str = "checkpoint", drop: tuple[str, ...] = ()) -> Config:
    """A checkpoint's config: Config.from_dict, except that a key the checkpoint predates takes the value
    the code that wrote it used (BEFORE_THE_KEY), not today's default, so resuming, fine-tuning or
    describing an old run does what that run did. drop: sections to leave at their defaults."""
    filled = {}
    for sec, values in (meta.get("config") or {}).items():
        if sec in drop:
            continue
        if isinstance(values, Mapping):  # anything else is left for from_dict to reject
            old = {k.split(".", 1)[1]: v for k, v in BEFORE_THE_KEY.items() if k.startswith(sec + ".")}
            values = {**old, **values}
        filled[sec] = values
    return Config.from_dict(filled, source)


def step(meta: dict | None) -> int:
    """The step a meta records, -1 if it has none (housekeeping reads of files not verified)."""
    progress = (meta or {}).get("progress")
    n = progress.get("step") if isinstance(progress, dict) else None
    return n if isinstance(n, int) and not isinstance(n, bool) else -1


def progress(meta: dict) -> dict:
    p = meta.get("progress")
    return p if isinstance(p, dict) else {}


def losses(meta: dict | None) -> dict:
    v = (meta or {}).get("losses")
    return v if isinstance(v, dict) else {}


def was_best(meta: dict) -> bool:
    """Whether the checkpoint was evaluated and its loss was the run's best when it was written."""
    v = losses(meta)
    return v.get("val_loss") is not None and v.get("val_loss") == v.get("best_val_loss")


def batch_shape(meta: dict) -> tuple[int, int]:
    """(batch_size, seq_len) the run trained with (check_resumable first)."""
    return int(meta["batch"]["batch_size"]), int(meta["batch"]["seq_len"])


def corpus_sha256(meta: dict) -> str:
    return meta["corpus"]["sha256"]


def training_sources(meta: dict) -> list[str]:
    """The corpus paths a checkpoint was trained on (several files or directories: corpus.sources)."""
    corpus = meta["corpus"]
    return corpus.get("sources") or [corpus["path"]]  # types checked by check_types


def init_from(meta: dict) -> dict | None:
    """Where a fine-tuned run's weights came from, None for a run trained from scratch."""
    v = meta.get("init_from")
    return v if isinstance(v, dict) else None

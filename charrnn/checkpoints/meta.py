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

The checksum covers the arrays only, so a hand-edited meta still loads: `check_types` runs before anything
reads it, and `check_resumable` before a resume does.
"""
from pathlib import Path
from typing import Any, Mapping

from .._version import __version__
from ..config import Config
from ..errors import CharrnnError, UsageError

# Keys added after checkpoints were first written, with the behaviour of the code before each existed.
# Defaults are chosen by measurement and move; a checkpoint without the key was trained the old way.
BEFORE_THE_KEY: dict[str, Any] = {
    "model.forget_bias": 1.0,  # char-rnn's forget-gate bias was the init until the key came (2026-12-02)
    "optim.schedule_length": "steps",  # cosine decayed over the step budget before `auto` existed
    "optim.decay_fraction": 1.0,  # the decay ran over the whole budget before warmup-stable-decay
    "optim.ema": 0.0,  # no weight averaging before the key (2026-12-03)
}

SECTIONS = ("config", "corpus", "progress", "losses", "batch", "rng", "init_from")
_NUMBERS = {"progress": ("step", "epoch", "elapsed_s", "bad_steps"),
            "losses": ("train_loss", "val_loss", "best_val_loss")}
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
             losses: dict, corpus: dict, init_from: dict | None) -> dict:
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
    } | ({"init_from": init_from} if init_from is not None else {})


# -- checking --------------------------------------------------------------------------------------
def _bad(p: Path | str, field: str) -> CharrnnError:
    return CharrnnError(f"{p}: meta is missing or has a bad field ({field})",
                        "the file is not a charrnn checkpoint, or its meta was edited", exit_code=2)


def check_types(meta: dict, p: Path | str) -> None:
    """CharrnnError naming the first meta field whose type no charrnn version writes."""
    for section in SECTIONS:
        if section in meta and not isinstance(meta[section], dict):
            raise _bad(p, section)
    for section, keys in _NUMBERS.items():
        for key in keys:
            v = meta.get(section, {}).get(key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise _bad(p, f"{section}.{key}")
    for key in ("path", "sha256"):
        if "corpus" in meta and not isinstance(meta["corpus"].get(key), str):
            raise _bad(p, f"corpus.{key}")
    for key in ("sources", "files"):  # a corpus of several files (see Trainer.corpus_meta)
        v = meta.get("corpus", {}).get(key)
        if v is not None and not (isinstance(v, list) and v and all(isinstance(s, str) for s in v)):
            raise _bad(p, f"corpus.{key}")
    if not all(isinstance(v, dict) for v in meta.get("config", {}).values()):
        raise _bad(p, "config")


def model_fields(meta: dict, p: Path | str) -> tuple[tuple[str, int, int, int, int], str]:
    """((cell, vocab_size, hidden_size, num_layers, embedding_size), vocabulary characters)."""
    try:
        m = meta["model"]
        fields = (str(m["cell"]), int(m["vocab_size"]), int(m["hidden_size"]), int(m["num_layers"]),
                  int(m.get("embedding_size", 0)))
        return fields, str(meta["vocab"])
    except (KeyError, TypeError, ValueError) as e:
        raise CharrnnError(f"{p}: meta is missing or has a bad field ({e})", "the file is not a charrnn checkpoint",
                           exit_code=2) from None


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

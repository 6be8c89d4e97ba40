"""Fine-tuning: a new run that starts from another checkpoint's weights and keeps its vocabulary.

The character -> id mapping is the model's, never the new text's (torch-rnn#37, #147: retraining on a
text with another character set silently reshuffled the mapping). Characters of the new text the model
does not know are refused, added (`extend=True`: new input and decoder rows, old rows kept), or
replaced (data.errors = replace). The optimizer starts fresh, at step 0, in a new run directory, and
every checkpoint of the run records where its weights came from (meta `init_from`).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from ..checkpoints import store
from ..config import Config
from ..data.corpus import Corpus, Vocab
from ..errors import UsageError
from ..engine.params import Params

# The settings that fix the parameter layout: a fine-tuned run keeps the checkpoint's.
SHAPE_KEYS = ("cell", "hidden_size", "num_layers", "embedding_size")
# With data.errors = replace, an unknown character becomes the first of these the vocabulary has
# (U+FFFD is what undecodable bytes became in a model trained with --errors replace), else it is dropped.
REPLACEMENTS = ("\ufffd", "?", " ")


def base_config(src: store.Loaded) -> Config:
    """The layer a fine-tuning run's config file, --set and options go on top of: the checkpoint's own
    model, optim and train settings (a file without a config: the defaults with its model shape). The
    data section describes the old text (its encoding, glob, splits), so it starts from the defaults."""
    saved = src.meta.get("config")
    if isinstance(saved, dict):
        return Config.from_saved({k: v for k, v in saved.items() if k != "data"}, source=str(src.path))
    s = src.model.shape
    return Config.from_dict({"model": {k: getattr(s, k) for k in SHAPE_KEYS}}, source=str(src.path))


def check_shape(cfg: Config, src: store.Loaded) -> None:
    """UsageError if the resolved config asks for another model shape than the checkpoint's."""
    s = src.model.shape
    changed = [f"model.{k}" for k in SHAPE_KEYS if getattr(cfg.model, k) != getattr(s, k)]
    if changed:
        have = ", ".join(f"{k}={getattr(s, k.split('.')[1])}" for k in changed)
        raise UsageError(f"cannot change {', '.join(changed)} when fine-tuning from {src.path} (it has {have})",
                         "drop those settings, or train a new model without --init-from")


def _shown(chars: list[str], limit: int = 8) -> str:
    return ", ".join(repr(c) for c in chars[:limit]) + (f" and {len(chars) - limit} more" if len(chars) > limit else "")


def fit_corpus(corpus: Corpus, vocab: Vocab, *, extend: bool = False, replace: bool = False,
               source: str = "the corpus", model: str = "the model") -> tuple[Corpus, list[str], str | None]:
    """The corpus re-encoded with the model's vocabulary (extended by the unknown characters when
    `extend`): (corpus, characters added, a note on what was replaced or None). Without extend or
    replace, unknown characters are a UsageError listing a few of them."""
    if corpus.vocab == vocab:
        return corpus, [], None  # nothing to re-encode (and no copy of a big corpus)
    unknown = [c for c in corpus.vocab.chars if vocab.unknown_chars(c)]
    added: list[str] = []
    note = None
    if unknown and extend:
        added, vocab = unknown, Vocab(vocab.chars + "".join(unknown))
    elif unknown and not replace:
        raise UsageError(f"{source} has {len(unknown)} character(s) not in the vocabulary of {model}: "
                         f"{_shown(unknown)}",
                         "add them to the model with --extend-vocab, or replace them with --errors replace")
    # table[corpus id] = model id; the new array has the model vocabulary's (small) dtype, not int64
    table = np.zeros(corpus.vocab.size, vocab.dtype)
    known = np.array([not vocab.unknown_chars(c) for c in corpus.vocab.chars])
    table[known] = vocab.encode("".join(c for c, k in zip(corpus.vocab.chars, known) if k))
    data = corpus.data
    if not known.all():
        sub = next((c for c in REPLACEMENTS if c in vocab.chars), None)
        count = int(np.bincount(data, minlength=known.size)[~known].sum())
        if sub is not None:
            table[~known] = vocab.chars.index(sub)
        else:
            data = data[known[data]]
        note = (f"{count:,} occurrence(s) of {len(unknown)} character(s) not in the vocabulary of {model} "
                f"({_shown(unknown)}) " + (f"replaced by {sub!r}" if sub is not None else "dropped"))
    data = table[data]
    return dataclasses.replace(corpus, vocab=vocab, data=data, n_chars=int(data.size)), added, note


def transfer(params: Params, src: store.Loaded, vocab: Vocab) -> None:
    """Copy the checkpoint's weights into `params` (a freshly initialised model over `vocab`, which is
    the checkpoint's vocabulary or a superset). The vocabulary is sorted, so added characters can move
    old ones to new ids: rows and columns are placed by character. Rows of added characters keep their
    fresh uniform init; their decoder bias starts at the lowest old bias, so a new character begins as
    unlikely as the model's rarest one instead of outranking what it has learned."""
    old = src.vocab
    where = vocab.encode(old.chars)  # new id of each old character
    new = np.setdiff1d(np.arange(vocab.size), where)
    one_hot = src.model.shape.embedding_size == 0
    for name, dst in params.views.items():
        w = src.model.params[name]
        if name in ("decoder.weight", "decoder.bias", "encoder.weight"):
            dst[where] = w
        elif name == "rnn.weight_ih_l0" and one_hot:
            dst[:, where] = w
        else:
            dst[...] = w
    if new.size:
        params["decoder.bias"][new] = src.model.params["decoder.bias"].min()


def origin(src: store.Loaded, added: list[str], note: str | None) -> dict:
    """What `init_from` in a fine-tuned run's checkpoints records (and `charrnn info` shows)."""
    meta = src.meta
    progress = meta.get("progress") if isinstance(meta.get("progress"), dict) else {}
    corpus = meta.get("corpus") if isinstance(meta.get("corpus"), dict) else {}
    out = {"path": str(Path(src.path).resolve()), "step": progress.get("step"),
           "checksum": meta.get("checksum"), "corpus": corpus.get("path"),
           "vocab_size": src.vocab.size, "vocab_added": "".join(added)}
    if note:
        out["replaced"] = note
    if isinstance(meta.get("init_from"), dict):  # a fine-tune of a fine-tune: keep the chain
        out["init_from"] = meta["init_from"]
    return out

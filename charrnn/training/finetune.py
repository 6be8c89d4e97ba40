"""Fine-tuning: a new run that starts from another checkpoint's weights and keeps its vocabulary.

The character -> id mapping is the model's, never the new text's (torch-rnn#37, #147: retraining on a
text with another character set silently reshuffled the mapping). Characters of the new text the model
does not know are refused, added (`extend=True`: new input and decoder rows, old rows kept), or
replaced (data.errors = replace). The optimizer starts fresh, at step 0, in a new run directory, and
every checkpoint of the run records where its weights came from (meta `init_from`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..checkpoints import meta as M
from ..checkpoints import store
from ..config import Config
from ..data.vocab import Vocab
from ..engine.params import Params
from ..errors import UsageError

# The settings that fix the parameter layout: a fine-tuned run keeps the checkpoint's.
SHAPE_KEYS = ("cell", "hidden_size", "num_layers", "embedding_size")


def base_config(src: store.Loaded) -> Config:
    """The layer a fine-tuning run's config file, --set and options go on top of: the checkpoint's own
    model, optim and train settings (a file without a config: the defaults with its model shape). The
    data section describes the old text (its encoding, glob, splits), so it starts from the defaults."""
    if isinstance(src.meta.get("config"), dict):
        return M.saved_config(src.meta, source=str(src.path), drop=("data",))
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

"""Evaluation and description of checkpoints: what `charrnn eval` and `charrnn info` report."""
import math
from pathlib import Path

import numpy as np

from ..checkpoints import store
from ..errors import UsageError
from ..userfiles import read_text


def metrics(total: float, predictions: int, chars: int) -> dict:
    """loss (nats/char), bits/char, perplexity from a summed negative log-likelihood."""
    loss = total / predictions
    return {"loss": loss, "bpc": loss / math.log(2), "perplexity": math.exp(min(loss, 700.0)),
            "chars": chars, "predictions": predictions}


def _refuse_unknown(missing: list[str], source: str) -> None:
    """One line listing characters outside the model's vocabulary (up to ten of them)."""
    shown = ", ".join(repr(c) for c in missing[:10]) + (" ..." if len(missing) > 10 else "")
    raise UsageError(f"{source} holds {len(missing)} character(s) the model has never seen: {shown}",
                     "evaluate on text from the same alphabet, or pass --unknown skip to drop them")


def eval_file(loaded: store.Loaded, path: str | Path, encoding="utf-8", errors="strict", unknown="error") -> dict:
    """The model's NLL on a text file read as one continuous stream from a zero state."""
    from ..sampling.generate import evaluate
    text = read_text(path, encoding, errors)
    missing = loaded.vocab.unknown_chars(text)
    if missing and unknown != "skip":
        _refuse_unknown(missing, str(path))
    ids = loaded.vocab.encode(text, unknown="skip")
    if ids.size < 2:
        dropped = f" once the {len(text) - ids.size} unknown one(s) are dropped" if ids.size < len(text) else ""
        raise UsageError(f"{path} has {ids.size} character(s) to evaluate{dropped}; evaluation needs at least 2",
                         "pass a longer text")
    total, n = evaluate(loaded.model, ids)
    return metrics(total, n, int(ids.size))


def eval_split(loaded: store.Loaded, which: str) -> dict:
    """The model's NLL on the val or test split of the corpus it was trained on."""
    from ..sampling.generate import evaluate
    ids = split_ids(loaded, which)
    total, n = evaluate(loaded.model, ids)
    return metrics(total, n, int(ids.size))


def split_ids(loaded: store.Loaded, which: str) -> np.ndarray:
    """The val or test split of the corpus the checkpoint was trained on, as the model's token ids
    (UsageError when the corpus is gone, changed, or the split is empty)."""
    from ..api import training_sources
    from ..config import Config
    from ..data.corpus import load_corpus, split
    from ..training.finetune import fit_corpus
    meta = loaded.meta
    if "corpus" not in meta or "config" not in meta:
        raise UsageError(f"{loaded.path} does not record its training corpus", "pass a FILE to evaluate instead")
    cfg = Config.from_saved(meta["config"], source=str(loaded.path))
    sources = training_sources(meta)
    shown = ", ".join(sources)
    if not all(Path(p).exists() for p in sources):
        raise UsageError(f"the training corpus {shown} is no longer there",
                         "put it back at that path, or evaluate on a FILE instead")
    try:
        corpus = load_corpus(sources, cfg.data.encoding, cfg.data.errors, glob=cfg.data.glob,
                             separator=cfg.data.separator, exclude=loaded.path.parent)
    except UsageError:  # e.g. a file of the corpus directory removed, or another one added
        corpus = None
    if corpus is None or corpus.sha256 != meta["corpus"]["sha256"]:
        raise UsageError(f"the training corpus {shown} has changed since training",
                         "evaluate on a FILE instead")
    # the text as the model saw it: a fine-tuned model reads it with its own (maybe extended) vocabulary
    corpus, _, _ = fit_corpus(corpus, loaded.vocab, replace=cfg.data.errors == "replace",
                              source=shown, model=str(loaded.path))
    _, val, test = split(corpus.data, cfg.data.val_fraction, cfg.data.test_fraction)
    ids = val if which == "val" else test
    if ids.size < 2:
        raise UsageError(f"the {which} split is empty (data.{which}_fraction = "
                         f"{getattr(cfg.data, which + '_fraction')})", "evaluate on a FILE instead")
    return ids


def describe(loaded: store.Loaded) -> dict:
    """Everything `charrnn info` shows, as plain data."""
    meta, s = loaded.meta, loaded.model.shape
    progress, losses = meta.get("progress", {}), meta.get("losses", {})
    return {
        "path": str(loaded.path),
        "model": {"cell": s.cell, "num_layers": s.num_layers, "hidden_size": s.hidden_size,
                  "embedding_size": s.embedding_size, "parameters": len(loaded.model.params)},
        "vocab": {"size": loaded.vocab.size, "chars": loaded.vocab.chars},
        # epoch is 1-based here, as in metrics.jsonl (the checkpoint stores the 0-based cursor).
        "training": {"step": progress.get("step"),
                     "epoch": progress["epoch"] + 1 if isinstance(progress.get("epoch"), int) else None,
                     "elapsed_s": progress.get("elapsed_s"), "val_loss": losses.get("val_loss"),
                     "best_val_loss": losses.get("best_val_loss"), "train_loss": losses.get("train_loss"),
                     "skipped_steps": progress.get("bad_steps")},
        "corpus": meta.get("corpus"),
        "init_from": meta.get("init_from") if isinstance(meta.get("init_from"), dict) else None,
        "format_version": meta.get("format_version"),
        "charrnn_version": meta.get("charrnn_version"),
        "config": meta.get("config"),
    }

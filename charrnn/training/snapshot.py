"""What a checkpoint holds of a run in training beside the arrays, and putting it back: the meta of a
step (progress, losses, RNG, corpus, how the run ended) and the exact resume from it (weights, optimizer
moments, carried state, cursor, RNG, losses). The Trainer writes and reads through these two functions;
the keys' owner is checkpoints/meta.py.
"""
import math

from ..checkpoints import meta as M
from ..checkpoints import npz as checkpoint
from ..checkpoints import store
from ..engine.averaging import TRAIN_KEY
from ..errors import CharrnnError, UsageError


def checkpoint_meta(trainer, val_loss: float | None = None) -> dict:
    """The checkpoint's meta. val_loss: the evaluation this checkpoint belongs to, None when it was
    written on a step without one (an older evaluation would pass for this checkpoint's, and a
    resume would take these weights for the run's best)."""
    progress = {"step": trainer.step, "epoch": trainer.epoch, "batch_index": trainer.batch_index,
                "offset": trainer.offset, "elapsed_s": trainer.elapsed(), "bad_steps": trainer.bad_steps, "bad_in_row": trainer.bad_in_row,
                "stale_evals": trainer.stale_evals,
                # so a resumed run's smoothed loss (metrics.jsonl, progress bar) continues too
                "train_loss_smooth": _finite_or_none(getattr(trainer.reporter, "smoothed_loss", None))}
    losses = {"train_loss": _finite_or_none(trainer.last_loss), "val_loss": val_loss,
              "best_val_loss": _finite_or_none(trainer.best_val)}
    return M.training(shape=trainer.model.shape, vocab=trainer.corpus.vocab.chars, config=trainer.cfg,
                      batch=(trainer.B, trainer.T), progress=progress, rng=trainer.rng.bit_generator.state,
                      losses=losses, corpus=corpus_meta(trainer), init_from=trainer.origin,
                      ended=trainer.ending.meta() if trainer.ending is not None else None)


def corpus_meta(trainer) -> dict:
    """Where the text came from: `sources` (the paths as given, for a resume) and `files` (every
    file read, in order) only for a corpus of several files or a directory."""
    c = trainer.corpus
    out = {"path": str(c.path), "sha256": c.sha256, "n_chars": c.n_chars}
    if trainer.sources is not None and (len(c.files) > 1 or trainer.sources != [str(c.path)]):
        out |= {"sources": trainer.sources, "files": [str(f) for f in c.files]}
    return out


def _finite_or_none(x: float) -> float | None:
    """A finite loss as a Python float (JSON), else None. A numpy scalar reaches here when the kernels
    run as plain Python (NUMBA_DISABLE_JIT=1)."""
    return float(x) if x is not None and math.isfinite(x) else None


def restore(trainer, loaded: store.Loaded) -> None:
    """Put a checkpoint's full training state back into a freshly built trainer (exact resume):
    weights, optimizer moments and t, carried state, step/epoch/batch cursor/offset, RNG, losses."""
    meta, arrays = loaded.meta, loaded.arrays
    try:
        trainer.model.params.flat[:] = loaded.model.params.flat
        if TRAIN_KEY in arrays:  # saved with optim.ema: the model arrays are the average
            checkpoint.check_arrays(arrays, {TRAIN_KEY: trainer.model.params.flat.shape}, loaded.path)
            if trainer.averager is not None:
                trainer.averager.load(loaded.model.params.flat)
            trainer.model.params.flat[:] = arrays[TRAIN_KEY]
        trainer.opt.load_state(arrays)
        trainer.state = store.load_state(arrays, trainer.model, trainer.B, loaded.path)
        p = M.progress(meta)
        trainer.step, trainer.epoch = int(p["step"]), int(p["epoch"])
        trainer.batch_index, trainer.offset = int(p["batch_index"]), int(p["offset"])
        trainer.batches.batches_per_epoch(trainer.offset)  # ValueError if the offset does not fit
        trainer.elapsed_before = float(p["elapsed_s"])
        trainer.bad_steps, trainer.bad_in_row = int(p["bad_steps"]), int(p["bad_in_row"])
        trainer.stale_evals = int(p.get("stale_evals", 0))  # absent before early stopping existed
        trainer.rng.bit_generator.state = meta["rng"]
        losses = M.losses(meta)
        trainer.best_val = losses["best_val_loss"] if losses.get("best_val_loss") is not None else math.inf
    except CharrnnError as e:
        raise UsageError(f"cannot resume from {loaded.path}: {e.message}", e.hint) from None
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as e:
        raise UsageError(f"cannot resume from {loaded.path}: its training state is incomplete or corrupt ({e})",
                         "resume from another checkpoint, e.g. an earlier step*.npz") from None
    trainer.saved_step = trainer.step

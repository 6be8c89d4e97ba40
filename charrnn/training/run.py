"""Executing a Plan (training/plan.py): lock the run directory, then look at it (the checks that depend on
its files run under the lock, so what they see cannot change under them), read and split the corpus
once, build the Trainer with everything it needs, and only then replace an old run's files and train.

A failed start removes only the directories it created itself, and nothing at all when another run
holds the lock.
"""
import contextlib
import os
import shutil
from pathlib import Path

from ..checkpoints import meta as M
from ..checkpoints import resuming, rundir, store
from ..config import Config, save_config
from ..data.batches import fit_batch_shape, split
from ..data.corpus import load_corpus
from ..data.reencode import fit_corpus
from ..data.sources import find_files
from ..errors import UsageError
from . import finetune
from .plan import FINETUNE, RESUME, Plan
from .sizing import too_big


def execute(plan: Plan, *, live: bool | None = None, console=None, on_eval=None,
            started: float | None = None) -> Path:
    """Train as planned and return the path of the best checkpoint (see charrnn.train)."""
    loaded = plan.checkpoint_loaded()
    if plan.done is not None:
        return _nothing_to_train(plan, loaded, console)
    resumed = loaded if plan.kind == RESUME else None
    with contextlib.ExitStack() as held:
        created = rundir.make(plan.run_dir)
        try:
            held.enter_context(rundir.lock(plan.run_dir))
        except rundir.Busy:
            raise
        except BaseException:
            rundir.remove_created(created)
            raise
        had_cache = rundir.cache_dir(plan.run_dir).exists()
        try:
            remove = _replaced_files(plan, resumed)
            rundir.check_files(plan.run_dir)
            trainer, corpus, warning = _prepare(plan, loaded, on_eval, started)
        except BaseException:
            rundir.remove_created(created)  # leave no trace of a run that never started
            if not had_cache:
                shutil.rmtree(rundir.cache_dir(plan.run_dir), ignore_errors=True)
            raise
        return _train(plan, trainer, corpus, warning, remove, resumed, live, console)


def _nothing_to_train(plan: Plan, loaded: store.Loaded, console) -> Path:
    """A finished run: touch nothing (not even config.yaml or the cache), say so, point at its best."""
    from rich.console import Console
    (console or Console(stderr=True)).print(f"nothing to train: {plan.done}", markup=False, highlight=False,
                                            soft_wrap=True)
    return resuming.repair_best(loaded)


def _replaced_files(plan: Plan, loaded: store.Loaded | None) -> list[str]:
    """The files of the run directory this run will delete once every check has passed: an old run's
    (--force), or, resuming a run in its own directory from an earlier checkpoint, the later checkpoints
    (--force rewinds). Refuses without --force."""
    run_dir = plan.run_dir
    if loaded is None or run_dir.resolve() != loaded.path.parent.resolve():
        return rundir.check_free(run_dir, plan.force)
    step = M.step(loaded.meta)
    later = rundir.later_checkpoints(run_dir, step)
    if later and not plan.force:
        raise UsageError(f"{loaded.path.name} is at step {step}, but {run_dir} has checkpoints from later "
                         f"steps ({', '.join(later)})",
                         "continue it in a new directory with --out (this run stays as it is), or add "
                         f"--force to rewind this run to step {step} (its later checkpoints are deleted)")
    return later


def _prepare(plan: Plan, loaded: store.Loaded | None, on_eval, started: float | None, *, make=None,
             root: bool = True):
    """Load the corpus, split it once and build (or restore) the trainer: (trainer, corpus, warning).
    Writes nothing but the directory and the corpus cache; raises on any bad input. make: the trainer
    class's stand-in (a rank's, training/ranks.py); root=False: a rank that writes nothing and maps the
    cache rank 0 wrote."""
    from .trainer import Trainer
    cfg, run_dir = plan.config, plan.run_dir
    if root:
        rundir.remove_stale_temps(run_dir)
    rundir.refuse_corpus_here(run_dir, [p for p, _ in find_files(list(plan.corpus), cfg.data.glob, run_dir)])
    resumed = loaded if plan.kind == RESUME else None
    expect = M.corpus_sha256(loaded.meta) if resumed is not None else None
    corpus = load_corpus(list(plan.corpus), cfg.data.encoding, cfg.data.errors, cache_dir=rundir.cache_dir(run_dir),
                         expect_sha256=expect, glob=cfg.data.glob, separator=cfg.data.separator, exclude=run_dir,
                         cache_write=root, mmap=make is not None)
    corpus, origin, warnings = _encoded(plan, loaded, corpus, expect)
    splits = split(corpus.data, cfg.data.val_fraction, cfg.data.test_fraction)
    if resumed is not None:
        shape = M.batch_shape(resumed.meta)
    else:
        *shape, fit_warning = fit_batch_shape(len(splits[0]), cfg.train.batch_size, cfg.train.seq_len)
        warnings.append(fit_warning)
    trainer = (make or Trainer)(cfg, corpus, run_dir, None, tuple(shape), started, splits=splits, sources=plan.sources,
                      origin=origin, on_eval=on_eval, resume=resumed,
                      transfer_from=loaded if plan.kind == FINETUNE else None)
    if resumed is None and (big := too_big(len(trainer.model.params), len(trainer.train_data))):
        warnings.append(big)
    if cfg.train.patience and not cfg.train.eval_every:
        warnings.append("train.patience needs evaluations (train.eval_every > 0), so early stopping is off")
    if resumed is None and trainer.val_batches is None and cfg.train.eval_every:
        warnings.append(
            f"the validation split ({len(trainer.val_data)} chars) is shorter than one {trainer.T + 1}-character "
            "stream, so validation is off and best.npz is simply the newest checkpoint "
            "(a longer corpus, a larger data.val_fraction or a smaller --seq-len turns it on)")
    return trainer, corpus, "; ".join(w for w in warnings if w) or None


def _encoded(plan: Plan, loaded: store.Loaded | None, corpus, expect: str | None):
    """The corpus encoded with the vocabulary the run uses (a fine-tune's is its model's), the run's
    init_from record, and warnings so far. UsageError when a resume is given another corpus."""
    cfg, shown = plan.config, ", ".join(plan.corpus)
    replace = cfg.data.errors == "replace"
    if plan.kind == FINETUNE:
        corpus, added, warning = fit_corpus(corpus, loaded.vocab, extend=plan.extend_vocab, replace=replace,
                                       source=shown, model=str(loaded.path))
        return corpus, finetune.origin(loaded, added, warning), [warning]
    origin = None
    if plan.kind == RESUME:
        origin = M.init_from(loaded.meta)
        if corpus.sha256 == expect and origin is not None:
            # a fine-tuned run: its text is encoded with the model's vocabulary, as when it started
            corpus, _, _ = fit_corpus(corpus, loaded.vocab, replace=replace)
        if corpus.sha256 != expect or corpus.vocab != loaded.vocab:
            raise UsageError(f"{shown} is not the corpus this run was trained on "
                             f"(sha256 {corpus.sha256[:12]}, the run's is {expect[:12]})",
                             "resume with the original corpus, or start a new run with --out")
    return corpus, origin, []


def _train(plan: Plan, trainer, corpus, warning: str | None, remove: list[str], loaded: store.Loaded | None,
           live: bool | None, console) -> Path:
    """Everything checked and the run directory locked: replace the old run's files, then train."""
    cfg, run_dir = plan.config, plan.run_dir
    rundir.remove_files(run_dir, remove)
    if loaded is not None:
        resuming.trim_logs(run_dir, trainer.step)
        lost_best = resuming.republish(loaded, trainer.val_batches is None, run_dir)
        warning = "; ".join(w for w in (warning, lost_best) if w) or None
    save_config(cfg, rundir.config_path(run_dir))
    from .report import Reporter
    with Reporter(run_dir, total_steps=trainer.total_steps, max_time=cfg.train.max_time or None, live=live,
                  console=console, log_every=cfg.train.log_every, append=loaded is not None) as reporter:
        if loaded is not None:
            reporter.smoothed_loss = M.progress(loaded.meta).get("train_loss_smooth")
        if warning:
            reporter.warn(warning)
        reporter.start(_header(trainer, corpus, cfg, run_dir, resumed=loaded is not None))
        return trainer.run(reporter)


def _threads_line() -> str:
    from ..engine.threads import threads, usable_cores
    n, cores = threads(), usable_cores()
    return f"{n}" + (f" (of {cores} usable cores)" if n != cores else " (every usable core)")


def _header(tr, corpus, cfg: Config, run_dir: Path, resumed: bool) -> dict[str, object]:
    s = tr.model.shape
    emb = f", embedding {s.embedding_size}" if s.embedding_size else ""
    n = len(corpus.files)
    header = {
        "model": f"{s.cell.upper()} {s.num_layers}x{s.hidden_size}{emb}, dropout {cfg.model.dropout}",
        "parameters": len(tr.model.params),
        "corpus": (f"{corpus.path.name} " if n == 1 else f"{n} files ")
        + f"({corpus.n_chars:,} chars, vocab {corpus.vocab.size})",
        "split": f"train {len(tr.train_data):,} / val {len(tr.val_data):,} chars",
        "batch": f"{tr.B} streams x {tr.T} steps, {tr.batches.batches_per_epoch(0)} batches/epoch",
        "optimizer": f"{cfg.optim.optimizer}, lr {cfg.optim.lr}, clip {cfg.optim.grad_clip}"
        + (f", weight average (ema {cfg.optim.ema})" if cfg.optim.ema else ""),
        "threads": _threads_line(),
        **tr.parallel_header(),
        "run dir": str(run_dir) + (f" (resumed at step {tr.step})" if resumed else ""),
    }
    if n > 1:
        root = os.path.commonpath([str(f.parent) for f in corpus.files])
        names = [os.path.relpath(f, root) for f in corpus.files]
        more = f", ... and {n - 20} more (charrnn info --json lists them all)" if n > 20 else ""
        header["files"] = f"{root}{os.sep}: " + ", ".join(names[:20]) + more
        if cfg.data.glob:
            header["files"] += f" (--glob {cfg.data.glob!r})"
    if tr.origin is not None:
        o = tr.origin
        new = str(o.get("vocab_added") or "")
        added = f", {len(new)} characters added to its vocabulary" if new else ""
        header["init from"] = f"{o['path']} (step {o.get('step')}{added}; fresh optimizer)"
    return header

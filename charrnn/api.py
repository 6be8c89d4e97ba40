"""The public Python API: `charrnn.train`, `charrnn.load` and the `Model` it returns.

The CLI is a thin layer over these functions. Everything here raises CharrnnError (one line, with a
hint) for problems a user can fix.
"""
import contextlib
import os
import shutil
import time
from pathlib import Path
from typing import Any, Mapping

from .checkpoints import npz as checkpoint, rundir, store
from .training import finetune
from .config import SAFE_ON_RESUME, Config, diff, resolve, save_config
from .errors import UsageError
from .data.sources import as_paths, find_files

BUNDLED_CORPUS = Path(__file__).parent / "_bundled" / "tinyshakespeare.txt"


class Model:
    """A trained character model loaded from a checkpoint (see `charrnn.load`)."""

    def __init__(self, loaded: store.Loaded):
        self._loaded = loaded
        self.net = loaded.model
        self.vocab = loaded.vocab
        self.meta = loaded.meta
        self.path = loaded.path

    def __repr__(self) -> str:
        s = self.net.shape
        return (f"charrnn.Model({s.cell} {s.num_layers}x{s.hidden_size}, vocab {s.vocab_size}, "
                f"step {self.meta.get('progress', {}).get('step')}, from {self.path})")

    def sample(self, length: int = 1000, temperature: float = 1.0, prime: str = "", top_k: int = 0,
               top_p: float = 1.0, seed: int | None = None, argmax: bool = False,
               stop: str | list[str] | None = None, echo: bool = True) -> str:
        """Generate `length` characters continuing `prime`, returned after the prime (echo=False: the
        continuation alone), as `charrnn sample` prints it (char-rnn echoed the prime too).

        temperature 0 or argmax=True is greedy; top_k keeps the k likeliest characters, top_p the smallest
        set whose probability reaches p. stop: a string or a list; the text ends just before the first
        one generated (and may be shorter than `length`). The same seed gives the same text."""
        from .sampling.generate import sample
        text = sample(self.net, self.vocab, length, temperature=temperature, prime=prime, top_k=top_k,
                      top_p=top_p, argmax=argmax, seed=seed, stop=stop)[0]
        return prime + text if echo else text

    def loss(self, text: str) -> float:
        """Mean negative log-likelihood (nats/char) of `text` read as one stream from a zero state."""
        from .sampling.generate import evaluate
        if not isinstance(text, str):
            raise UsageError(f"text must be a str, got {type(text).__name__}", "decode bytes first, e.g. b.decode()")
        total, n = evaluate(self.net, self.vocab.encode(text))
        return total / n


def load(path: str | os.PathLike) -> Model:
    """Load a checkpoint file, or a run directory (its best.npz), verifying its checksum."""
    return Model(store.load(path))


def export(checkpoint: str | os.PathLike, out: str | os.PathLike | None = None, format: str | None = None,
           force: bool = False) -> Path:
    """Write a checkpoint (file or run directory) as ONNX or safetensors (see charrnn.export for what
    each holds) and return the path written. format: 'onnx' | 'safetensors' (default: from out's
    suffix); out: default the checkpoint's path with the format's suffix; an existing file is replaced
    only with force."""
    from .formats.exporter import export as write
    return write(checkpoint, out, format, force)


# -- training ------------------------------------------------------------------------------------
def _as_config_layers(config: Any) -> tuple[Any, Mapping | None]:
    """config may be None, a Config, a dict of sections, or a YAML path / bundled name."""
    if config is None or isinstance(config, (str, os.PathLike)):
        return config, None
    if isinstance(config, Config):
        return None, config.to_dict()
    if isinstance(config, Mapping):
        return None, config
    raise UsageError(f"config must be a path, a dict or a Config, got {type(config).__name__}")


def _layer(config_file, sets, options, extra: Mapping | None, base: Config | None) -> Config:
    """A config dict from the Python API sits where a YAML file would: above the base, below --set."""
    if extra:
        if base is None:
            base = Config.from_dict(extra, source="config dict")
        else:
            dotted = {f"{s}.{k}": v for s, values in extra.items() for k, v in (values or {}).items()}
            base = resolve(None, (), dotted, base=base)
    return resolve(config_file, sets, options, base=base)


def _resume_point(resume: str | os.PathLike) -> tuple[Path, store.Loaded]:
    """The checkpoint --resume names (a run directory means its last.npz), loaded and verified."""
    p = Path(resume)
    ckpt = p / "last.npz" if p.is_dir() else p
    if p.is_dir():
        # A kill between writing step{N}.npz and refreshing last.npz leaves the step file newer (or the
        # only checkpoint, before the first last.npz): continue from the newest complete one.
        newer = rundir.later_checkpoints(p, rundir.saved_step(ckpt) if ckpt.exists() else -1, named=())
        ckpt = p / newer[-1] if newer else ckpt
        if not ckpt.exists():
            raise UsageError(f"{p} holds no last.npz or step checkpoint to resume from",
                             "pass a checkpoint file with --resume, or start a new run with --out")
    loaded = store.load(ckpt)
    meta = loaded.meta
    try:  # touch every field the resume needs, so a bare weights file gets a clear message
        for key in ("step", "epoch", "batch_index", "offset", "elapsed_s", "bad_steps", "bad_in_row"):
            float(meta["progress"][key])
        for section, key in (("rng", "state"), ("batch", "batch_size"), ("batch", "seq_len"),
                             ("corpus", "sha256"), ("corpus", "path"), ("losses", "best_val_loss")):
            meta[section][key]
    except (KeyError, TypeError, ValueError):
        raise UsageError(f"{ckpt} has no complete training state to resume",
                         "resume from a checkpoint written by charrnn train") from None
    return ckpt, loaded


def train(corpus_path: str | os.PathLike | None = None, config: Any = None, out_dir: str | os.PathLike | None = None,
          *, sets=(), options: Mapping | None = None, resume: str | os.PathLike | None = None, force: bool = False,
          live: bool | None = None, console=None, encoding: str | None = None, errors: str | None = None,
          init_from: str | os.PathLike | None = None, extend_vocab: bool = False, on_eval=None,
          started: float | None = None) -> Path:
    """Train a model and return the path of its best checkpoint.

    corpus_path: a UTF-8 text file, a directory (its files, recursively; data.glob selects them), or a
    list of files and directories, joined by data.separator (default: the bundled tiny Shakespeare).
    init_from: fine-tune: start from this checkpoint's weights (a new run at step 0 with a fresh
    optimizer, the checkpoint's model shape and vocabulary; its config is the base the config and
    options go on top of); extend_vocab adds the corpus's unknown characters to the vocabulary
    (else they are refused, or replaced when data.errors is replace). config: a YAML path, a bundled
    config name ('tiny'), a dict of sections ({'model': {'hidden_size': 128}}) or a Config. out_dir: the
    run directory (default runs/<corpus stem>). resume: a run directory or checkpoint to continue exactly;
    then only max_steps/max_epochs/max_time, log/eval/sample/checkpoint cadence may differ from the run's
    config. Every check (config, corpus, run directory) runs before anything is written, and a failed
    start removes the run directory it created. on_eval(metrics), if given, is called with each evaluated
    step's metrics.jsonl record after its checkpoint; returning True ends training there (a sweep's pruner).
    started: the time.perf_counter() reading that train.max_time and the logged elapsed_s count from
    (default: now, the call of this function; the CLI passes the moment its process started), so start-up
    (corpus, kernels) counts against the budget.
    """
    started = time.perf_counter() if started is None else started
    if corpus_path is not None:
        corpus_path = as_paths(corpus_path)  # one or more files and directories, as a list of str
    for name, value in (("out_dir", out_dir), ("resume", resume), ("init_from", init_from)):
        if value is not None and not isinstance(value, (str, os.PathLike)):
            raise UsageError(f"{name} must be a path (str or os.PathLike), got {type(value).__name__}")
        if value is not None and not os.fspath(value).strip():  # e.g. --out "$UNSET_VARIABLE"
            raise UsageError(f"{name} is an empty path", "give a file or directory name")
    config_file, extra = _as_config_layers(config)
    options = dict(options or {})
    if encoding is not None:
        options["data.encoding"] = encoding
    if errors is not None:
        options["data.errors"] = errors
    loaded = src = None
    if init_from is not None and resume is not None:
        raise UsageError("--init-from starts a new run from a checkpoint's weights and --resume continues a run",
                         "use one of them")
    if extend_vocab and init_from is None:
        raise UsageError("--extend-vocab only applies when fine-tuning", "add --init-from CHECKPOINT")
    if resume is not None:
        ckpt, loaded = _resume_point(resume)
        saved = Config.from_saved(loaded.meta["config"], source=str(ckpt))
        cfg = _layer(config_file, sets, options, extra, saved)
        changed = [k for k in diff(saved, cfg) if k not in SAFE_ON_RESUME]
        if changed:
            raise UsageError(f"cannot change {', '.join(changed)} when resuming",
                             "only max_steps/max_epochs/max_time and log/eval/sample/checkpoint cadence may "
                             "change; start a new run with --out instead")
        run_dir = Path(out_dir) if out_dir is not None else ckpt.parent
        corpus_path = corpus_path or training_sources(loaded.meta)
    else:
        if init_from is not None:
            src = store.load(init_from)
        cfg = _layer(config_file, sets, options, extra, finetune.base_config(src) if src else None)
        if src is not None:
            finetune.check_shape(cfg, src)
        corpus_path = corpus_path or [str(BUNDLED_CORPUS)]
        run_dir = Path(out_dir) if out_dir is not None else Path("runs") / Path(os.path.abspath(corpus_path[0])).stem
        if src is not None and run_dir.resolve() == src.path.parent.resolve():
            raise UsageError(f"{run_dir} holds {src.path.name}, the checkpoint this run starts from",
                             "fine-tune into a new directory with --out: a fine-tuned model is a new run")
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError(f"output path {run_dir} exists and is not a directory", "choose another --out")
    rundir.check_same_run(run_dir, loaded)  # before anything, even the repair below, touches run_dir
    if loaded is not None and (done := _already_done(loaded, cfg, run_dir)):
        # a finished run: touch nothing (not even config.yaml or the cache), say so, point at its best
        from rich.console import Console
        (console or Console(stderr=True)).print(f"nothing to train: {done}", markup=False, highlight=False, soft_wrap=True)
        best = loaded.path.parent / "best.npz"
        if (loaded.path.name == "last.npz" and rundir.was_best(loaded)
                and rundir.saved_step(best) != loaded.meta["progress"]["step"]):
            checkpoint.publish(loaded.path, best)  # the one repair: a kill between last.npz and best.npz
        return best if best.is_file() else loaded.path
    # Lock first, then look: what the checks see cannot change under them. A failed start removes
    # only the directories it created itself, and nothing at all when another run holds the lock.
    with contextlib.ExitStack() as held:
        created = rundir.make(run_dir)
        try:
            held.enter_context(rundir.lock(run_dir))
        except rundir.Busy:
            raise
        except BaseException:
            rundir.remove_created(created)
            raise
        had_cache = (run_dir / "cache").exists()
        try:
            remove = _replaced_files(run_dir, loaded, force)
            rundir.check_files(run_dir)
            trainer, corpus, warning = _prepare(cfg, corpus_path, run_dir, loaded, src, extend_vocab, started)
        except BaseException:
            rundir.remove_created(created)  # leave no trace of a run that never started
            if not had_cache:
                shutil.rmtree(run_dir / "cache", ignore_errors=True)
            raise
        trainer.on_eval = on_eval
        return _run(trainer, corpus, warning, cfg, run_dir, remove, loaded, live, console)


def training_sources(meta: dict) -> list[str]:
    """The corpus paths a checkpoint was trained on (several files or directories: meta corpus.sources)."""
    corpus = meta["corpus"]
    return corpus.get("sources") or [corpus["path"]]  # types checked by store.load


def _already_done(loaded: store.Loaded, cfg: Config, run_dir: Path) -> str | None:
    """Why resuming `loaded` has nothing to train (None if it has): a budget used up or patience spent,
    and what to type to go on."""
    from .training.endings import already_reached
    best = loaded.meta["losses"].get("best_val_loss")
    done = already_reached(loaded.meta["progress"], cfg.train, run_dir, best)
    if done is None:
        return None
    return f"{loaded.path} is at step {done.step:,}: {done.why}\ngo on with: {done.go_on}"


def _replaced_files(run_dir: Path, loaded: store.Loaded | None, force: bool) -> list[str]:
    """The files of run_dir this run will delete once every check has passed: an old run's (--force),
    or, resuming a run in its own directory from an earlier checkpoint, the later checkpoints (--force
    rewinds). Refuses without --force."""
    if loaded is None or run_dir.resolve() != loaded.path.parent.resolve():
        return rundir.check_free(run_dir, force)
    step = int(loaded.meta["progress"]["step"])
    later = rundir.later_checkpoints(run_dir, step)
    if later and not force:
        raise UsageError(f"{loaded.path.name} is at step {step}, but {run_dir} has checkpoints from later "
                         f"steps ({', '.join(later)})",
                         "continue it in a new directory with --out (this run stays as it is), or add "
                         f"--force to rewind this run to step {step} (its later checkpoints are deleted)")
    return later


def _run(trainer, corpus, warning, cfg: Config, run_dir: Path, remove: list[str], loaded: store.Loaded | None,
         live: bool | None, console) -> Path:
    """Everything checked and the run directory locked: replace the old run's files, then train."""
    # Step files first, newest first, last.npz at the very end: a kill in between leaves a directory that
    # --resume RUN_DIR still continues consistently (from last.npz, or the newest step file left).
    order = sorted(remove, key=lambda n: (n == "last.npz", n == "best.npz", -(checkpoint.step_of(n) or 0)))
    for name in order:
        (run_dir / name).unlink(missing_ok=True)
    if loaded is not None:
        rundir.trim_logs(run_dir, trainer.step)
        lost_best = rundir.republish(loaded, trainer.val_batches is None, run_dir)
        warning = "; ".join(w for w in (warning, lost_best) if w) or None
    save_config(cfg, run_dir / "config.yaml")
    from .training.report import Reporter
    with Reporter(run_dir, total_steps=trainer.total_steps, max_time=cfg.train.max_time or None, live=live,
                  console=console, log_every=cfg.train.log_every, append=loaded is not None) as reporter:
        trainer.reporter = reporter
        if loaded is not None:
            reporter.smoothed_loss = loaded.meta["progress"].get("train_loss_smooth")
        if warning:
            reporter.warn(warning)
        reporter.start(_header(trainer, corpus, run_dir, resumed=loaded is not None))
        return trainer.run()


def _prepare(cfg: Config, corpus_path: list[str], run_dir: Path, loaded: store.Loaded | None,
             src: store.Loaded | None = None, extend_vocab: bool = False, started: float | None = None):
    """Create the run directory, load the corpus and build (or restore) the trainer: (trainer, corpus,
    warning). Writes nothing but the directory and the corpus cache; raises on any bad input.
    src: fine-tuning, the checkpoint whose weights and vocabulary the new run starts from."""
    from .data.corpus import load_corpus
    from .training.sizing import too_big
    from .training.trainer import Trainer, fit_shape, restore
    checkpoint.remove_stale_temps(run_dir)
    rundir.refuse_corpus_here(run_dir, [p for p, _ in find_files(corpus_path, cfg.data.glob, run_dir)])
    expect = loaded.meta["corpus"]["sha256"] if loaded is not None else None
    corpus = load_corpus(corpus_path, cfg.data.encoding, cfg.data.errors, cache_dir=run_dir / "cache",
                         expect_sha256=expect, glob=cfg.data.glob, separator=cfg.data.separator, exclude=run_dir)
    shown = ", ".join(corpus_path)
    warning = origin = None
    if src is not None:
        corpus, added, warning = finetune.fit_corpus(corpus, src.vocab, extend=extend_vocab,
                                                     replace=cfg.data.errors == "replace", source=shown,
                                                     model=str(src.path))
        origin = finetune.origin(src, added, warning)
    if loaded is not None:
        if corpus.sha256 == expect and isinstance(loaded.meta.get("init_from"), dict):
            # a fine-tuned run: its text is encoded with the model's vocabulary, as when it started
            corpus, _, _ = finetune.fit_corpus(corpus, loaded.vocab, replace=cfg.data.errors == "replace")
            origin = loaded.meta["init_from"]
        if corpus.sha256 != expect or corpus.vocab != loaded.vocab:
            raise UsageError(f"{shown} is not the corpus this run was trained on "
                             f"(sha256 {corpus.sha256[:12]}, the run's is {expect[:12]})",
                             "resume with the original corpus, or start a new run with --out")
        shape = (int(loaded.meta["batch"]["batch_size"]), int(loaded.meta["batch"]["seq_len"]))
    else:
        shape, fit_warning = fit_shape(cfg, corpus)
        warning = "; ".join(w for w in (warning, fit_warning) if w) or None
    trainer = Trainer(cfg, corpus, run_dir, None, shape, started)
    trainer.origin = origin
    if len(corpus_path) > 1 or Path(corpus_path[0]).is_dir():
        trainer.sources = [os.path.abspath(p) for p in corpus_path]
    if src is not None:
        finetune.transfer(trainer.model.params, src, corpus.vocab)
    if cfg.train.patience and not cfg.train.eval_every:
        off = "train.patience needs evaluations (train.eval_every > 0), so early stopping is off"
        warning = f"{warning}; {off}" if warning else off
    if loaded is None and (big := too_big(len(trainer.model.params), len(trainer.train_data))):
        warning = f"{warning}; {big}" if warning else big
    if loaded is not None:
        restore(trainer, loaded)
    elif trainer.val_batches is None and cfg.train.eval_every:
        off = (f"the validation split ({len(trainer.val_data)} chars) is shorter than one {trainer.T + 1}-character "
               "stream, so validation is off and best.npz is simply the newest checkpoint "
               "(a longer corpus, a larger data.val_fraction or a smaller --seq-len turns it on)")
        warning = f"{warning}; {off}" if warning else off
    return trainer, corpus, warning


def _threads_line() -> str:
    from .engine.threads import threads, usable_cores
    n, cores = threads(), usable_cores()
    return f"{n}" + (f" (of {cores} usable cores)" if n != cores else " (every usable core)")


def _header(tr, corpus, run_dir: Path, resumed: bool) -> dict[str, object]:
    s = tr.model.shape
    emb = f", embedding {s.embedding_size}" if s.embedding_size else ""
    n = len(corpus.files)
    header = {
        "model": f"{s.cell.upper()} {s.num_layers}x{s.hidden_size}{emb}, dropout {tr.cfg.model.dropout}",
        "parameters": len(tr.model.params),
        "corpus": (f"{corpus.path.name} " if n == 1 else f"{n} files ")
        + f"({corpus.n_chars:,} chars, vocab {corpus.vocab.size})",
        "split": f"train {len(tr.train_data):,} / val {len(tr.val_data):,} chars",
        "batch": f"{tr.B} streams x {tr.T} steps, {tr.batches.batches_per_epoch(0)} batches/epoch",
        "optimizer": f"{tr.cfg.optim.optimizer}, lr {tr.cfg.optim.lr}, clip {tr.cfg.optim.grad_clip}"
        + (f", weight average (ema {tr.cfg.optim.ema})" if tr.cfg.optim.ema else ""),
        "threads": _threads_line(),
        "run dir": str(run_dir) + (f" (resumed at step {tr.step})" if resumed else ""),
    }
    if n > 1:
        root = os.path.commonpath([str(f.parent) for f in corpus.files])
        names = [os.path.relpath(f, root) for f in corpus.files]
        more = f", ... and {n - 20} more (charrnn info --json lists them all)" if n > 20 else ""
        header["files"] = f"{root}{os.sep}: " + ", ".join(names[:20]) + more
        if tr.cfg.data.glob:
            header["files"] += f" (--glob {tr.cfg.data.glob!r})"
    if tr.origin is not None:
        o = tr.origin
        new = str(o.get("vocab_added") or "")
        added = f", {len(new)} characters added to its vocabulary" if new else ""
        header["init from"] = f"{o['path']} (step {o.get('step')}{added}; fresh optimizer)"
    return header

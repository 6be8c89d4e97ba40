"""What a training run is, decided before anything is written: `plan()` turns the arguments of
`charrnn.train` into a `Plan` (a fresh run, a resume -- which may continue elsewhere (branch) or rewind
-- or a fine-tune), with its resolved config, its corpus paths and its run directory, after every check
that needs neither the corpus's text nor the directory's lock. It reads (config files, the checkpoint it
continues or starts from) and writes nothing. `training/run.py` executes a plan.

A Plan is a small frozen dataclass of paths and the config: a process that receives one (a rank of a
distributed run) can execute it; `loaded` only spares the planning process reading its checkpoint again.
"""
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from ..checkpoints import meta as M
from ..checkpoints import resuming, rundir, store
from ..config import SAFE_ON_RESUME, Config, diff, resolve
from ..data.sources import BUNDLED_CORPUS
from ..errors import UsageError
from . import finetune

FRESH, RESUME, FINETUNE = "fresh", "resume", "finetune"


@dataclass(frozen=True)
class Plan:
    kind: str  # FRESH | RESUME | FINETUNE
    config: Config
    corpus: tuple[str, ...]  # the files and directories the corpus reads, as given
    run_dir: Path
    checkpoint: Path | None = None  # RESUME: the checkpoint continued; FINETUNE: where the weights come from
    extend_vocab: bool = False  # FINETUNE: add the corpus's unknown characters to the vocabulary
    force: bool = False  # replace an old run's files, or rewind this run to the checkpoint
    done: str | None = None  # RESUME of a finished run: why there is nothing to train
    loaded: store.Loaded | None = field(default=None, repr=False, compare=False)

    def portable(self) -> "Plan":
        """This plan without the checkpoint read while planning: what another process receives."""
        return replace(self, loaded=None)

    def to_json(self) -> str:
        """The portable plan as JSON (what rank 0 of a distributed run sends the others)."""
        return json.dumps({"kind": self.kind, "config": self.config.to_dict(), "corpus": list(self.corpus),
                           "run_dir": str(self.run_dir), "extend_vocab": self.extend_vocab, "force": self.force,
                           "checkpoint": None if self.checkpoint is None else str(self.checkpoint),
                           "done": self.done})

    @classmethod
    def from_json(cls, text: str) -> "Plan":
        d = json.loads(text)
        return cls(d["kind"], Config.from_dict(d["config"], source="rank 0's plan"), tuple(d["corpus"]),
                   Path(d["run_dir"]), None if d["checkpoint"] is None else Path(d["checkpoint"]),
                   d["extend_vocab"], d["force"], d["done"])

    def checkpoint_loaded(self) -> store.Loaded | None:
        """The checkpoint the plan names, as read while planning or read now (verified either way)."""
        if self.checkpoint is None:
            return None
        return self.loaded if self.loaded is not None else store.load(self.checkpoint)

    @property
    def sources(self) -> list[str] | None:
        """The corpus paths (absolute) a checkpoint records for a resume: only for several paths or a
        directory (one file is the corpus path itself)."""
        if len(self.corpus) > 1 or Path(self.corpus[0]).is_dir():
            return [os.path.abspath(p) for p in self.corpus]
        return None


def plan(corpus: list[str] | None, config: Any, out_dir: str | os.PathLike | None, *, sets=(),
         options: Mapping | None = None, resume=None, force: bool = False, init_from=None,
         extend_vocab: bool = False) -> Plan:
    """The Plan of a `charrnn.train` call (see its docstring for the arguments); UsageError on the first
    problem. corpus: a list of paths or None (the run's own corpus on resume, else the bundled one)."""
    for name, value in (("out_dir", out_dir), ("resume", resume), ("init_from", init_from)):
        if value is not None and not isinstance(value, (str, os.PathLike)):
            raise UsageError(f"{name} must be a path (str or os.PathLike), got {type(value).__name__}")
        if value is not None and not os.fspath(value).strip():  # e.g. --out "$UNSET_VARIABLE"
            raise UsageError(f"{name} is an empty path", "give a file or directory name")
    config_file, extra = _config_layers(config)
    if init_from is not None and resume is not None:
        raise UsageError("--init-from starts a new run from a checkpoint's weights and --resume continues a run",
                         "use one of them")
    if extend_vocab and init_from is None:
        raise UsageError("--extend-vocab only applies when fine-tuning", "add --init-from CHECKPOINT")
    if resume is not None:
        return _resume_plan(corpus, config_file, extra, sets, options, Path(resume), out_dir, force)
    src = store.load(init_from) if init_from is not None else None
    cfg = _layer(config_file, sets, options, extra, finetune.base_config(src) if src else None)
    if src is not None:
        finetune.check_shape(cfg, src)
    corpus = corpus or [str(BUNDLED_CORPUS)]
    run_dir = Path(out_dir) if out_dir is not None else Path("runs") / Path(os.path.abspath(corpus[0])).stem
    if src is not None and run_dir.resolve() == src.path.parent.resolve():
        raise UsageError(f"{run_dir} holds {src.path.name}, the checkpoint this run starts from",
                         "fine-tune into a new directory with --out: a fine-tuned model is a new run")
    _check_out(run_dir)
    return Plan(FINETUNE if src else FRESH, cfg, tuple(corpus), run_dir, src.path if src else None,
                extend_vocab, force, loaded=src)


def _resume_plan(corpus, config_file, extra, sets, options, resume: Path, out_dir, force: bool) -> Plan:
    ckpt = rundir.resume_point(resume)
    loaded = store.load(ckpt)
    M.check_resumable(loaded.meta, ckpt)
    saved = M.saved_config(loaded.meta, source=str(ckpt))
    cfg = _layer(config_file, sets, options, extra, saved)
    changed = [k for k in diff(saved, cfg) if k not in SAFE_ON_RESUME]
    if changed:
        raise UsageError(f"cannot change {', '.join(changed)} when resuming",
                         "only max_steps/max_epochs/max_time and log/eval/sample/checkpoint cadence may "
                         "change; start a new run with --out instead")
    run_dir = Path(out_dir) if out_dir is not None else ckpt.parent
    _check_out(run_dir)
    resuming.check_same_run(run_dir, loaded)  # before anything, even a finished run's repair, touches run_dir
    corpus = corpus or M.training_sources(loaded.meta)
    return Plan(RESUME, cfg, tuple(corpus), run_dir, ckpt, force=force, done=_already_done(loaded, cfg, run_dir),
                loaded=loaded)


def _check_out(run_dir: Path) -> None:
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError(f"output path {run_dir} exists and is not a directory", "choose another --out")


def _config_layers(config: Any) -> tuple[Any, Mapping | None]:
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


def _already_done(loaded: store.Loaded, cfg: Config, run_dir: Path) -> str | None:
    """Why resuming `loaded` has nothing to train (None if it has): a budget used up or patience spent,
    and what to type to go on."""
    from .endings import already_reached
    done = already_reached(M.progress(loaded.meta), cfg.train, run_dir, M.losses(loaded.meta).get("best_val_loss"))
    if done is None:
        return None
    return f"{loaded.path} is at step {done.step:,}: {done.why}\ngo on with: {done.go_on}"

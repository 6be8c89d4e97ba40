"""Why a training session ended: the one owner of stop reasons.

Every way a run ends (its step, epoch or time budget, early stopping, a divergence, Ctrl-C/SIGTERM, a
sweep's pruner) is an `Ending`: a reason code, a sentence saying why, and the command that goes on. The
trainer decides which one applies (`reached`); the reporter shows its line and ends metrics.jsonl with its
record; the checkpoint written at that step carries it in meta (`ended`); a resume that has nothing left
to train says the same thing before touching anything (`already_reached`).
"""
from __future__ import annotations

import math
import shlex
from dataclasses import dataclass
from pathlib import Path

REASONS = ("max_steps", "max_epochs", "max_time", "patience", "diverged", "signal", "pruned")
SIGNAL_NAMES = {2: "Ctrl-C (SIGINT)", 15: "SIGTERM"}


@dataclass(frozen=True)
class Ending:
    reason: str  # one of REASONS
    step: int
    why: str  # what ended it, in words
    go_on: str | None  # the command that continues the run, if any

    def line(self) -> str:
        """What the terminal shows: 'stopped at step N: why' and, on its own line, how to go on."""
        head = f"stopped at step {self.step:,}: {self.why}"
        return head + (f"\ngo on with: {self.go_on}" if self.go_on else "")

    def meta(self) -> dict:
        """The checkpoint meta's `ended` and the body of metrics.jsonl's final record."""
        return {"reason": self.reason, "step": self.step, "why": self.why, "go_on": self.go_on}

    def record(self, epoch: int, elapsed_s: float) -> dict:
        """metrics.jsonl's final line: {"event": "end", ...}; it has no train_loss, so readers of the
        curves skip it."""
        return {"event": "end", **self.meta(), "epoch": epoch, "elapsed_s": elapsed_s}


def _resume(run_dir: Path, *extra: str) -> str:
    return " ".join(["charrnn train --resume", shlex.quote(str(run_dir)), *extra])


def duration_arg(seconds: float) -> str:
    """A --max-time value a person would type: 90, 10m, 2h."""
    s = float(seconds)
    if s >= 3600 and s % 3600 == 0:
        return f"{int(s // 3600)}h"
    if s >= 60 and s % 60 == 0:
        return f"{int(s // 60)}m"
    return f"{s:g}"


def max_steps(step: int, limit: int, run_dir: Path) -> Ending:
    return Ending("max_steps", step, f"the step budget (max_steps {limit:,}) is reached",
                  _resume(run_dir, f"--max-steps {2 * limit}"))


def max_epochs(step: int, limit: int, auto: bool, run_dir: Path) -> Ending:
    default = ", the default when no --max-steps or --max-time is given" if auto else ""
    return Ending("max_epochs", step, f"the epoch budget (max_epochs {limit}{default}) is reached",
                  _resume(run_dir, f"--max-epochs {2 * limit}"))


def max_time(step: int, limit: float, elapsed: float, run_dir: Path) -> Ending:
    shown = duration_arg(limit) + ("" if duration_arg(limit)[-1].isalpha() else " s")
    return Ending("max_time", step, f"the time budget (max_time {shown}, counted over every "
                  f"session of the run) is used up after {elapsed:,.0f} s",
                  _resume(run_dir, f"--max-time {duration_arg(2 * limit)}"))


def patience(step: int, stale: int, limit: int, best: float, run_dir: Path) -> Ending:
    kept = f"best {best:.4f}, " if math.isfinite(best) else ""
    return Ending("patience", step, f"no better validation loss in {stale} evaluations (early stopping, "
                  f"patience {limit}; {kept}kept in {Path(run_dir) / 'best.npz'})",
                  _resume(run_dir, f"--patience {2 * limit}"))


def signal(step: int, signum: int, run_dir: Path) -> Ending:
    name = SIGNAL_NAMES.get(signum, f"signal {signum}")
    return Ending("signal", step, f"{name}; checkpoint saved in {run_dir}", _resume(run_dir))


def diverged(step: int, in_row: int) -> Ending:
    return Ending("diverged", step, f"training diverged: {in_row} non-finite steps in a row", None)


def pruned(step: int) -> Ending:
    return Ending("pruned", step, "the sweep's pruner ended this trial", None)


def reached(*, step: int, epoch_done: bool, elapsed: float, signum: int | None, stale: int, best: float,
            train, run_dir: Path, fresh: bool) -> Ending | None:
    """The budget or event that ends the run here, in this order: a signal, the step budget, the epoch
    budget, the time budget, early stopping; None to go on. train: the config's train section; epoch_done:
    the last epoch of the epoch budget has been trained; fresh: no step taken yet in a new run (which
    always takes one, however little of max_time start-up left)."""
    if signum is not None:
        return signal(step, signum, run_dir)
    if train.max_steps and step >= train.max_steps:
        return max_steps(step, train.max_steps, run_dir)
    if epoch_done:
        return max_epochs(step, train.epoch_limit, train.max_epochs is None, run_dir)
    if train.max_time and not fresh and elapsed >= train.max_time:
        return max_time(step, train.max_time, elapsed, run_dir)
    if train.patience and stale >= train.patience:
        return patience(step, stale, train.patience, best, run_dir)
    return None


def already_reached(progress: dict, train, run_dir: Path, best: float | None) -> Ending | None:
    """Resuming: the budget a checkpoint's progress has already used up, from its meta alone (the epoch
    budget needs the corpus, so the trainer says that one). None if there is training left."""
    step, elapsed = int(progress["step"]), float(progress["elapsed_s"])
    stale = progress.get("stale_evals", 0)
    if train.max_steps and step >= train.max_steps:
        return max_steps(step, train.max_steps, run_dir)
    if train.max_time and elapsed >= train.max_time:
        return max_time(step, train.max_time, elapsed, run_dir)
    if train.patience and isinstance(stale, int) and stale >= train.patience:
        return patience(step, stale, train.patience, math.inf if best is None else best, run_dir)
    return None

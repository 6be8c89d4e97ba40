"""One sweep worker process: asks the study for trials until its budget is spent, and trains each one
through `charrnn.train` (the same code path as `charrnn train`) in OUT/trial-NNNN/.

Started by `charrnn sweep` as `python -m charrnn.sweep.worker SPEC_JSON`, in its own process group
(the parent forwards Ctrl-C, so a worker sees it once) and with CHARRNN_THREADS set to its share of
the cores. A trial stopped by a signal writes its checkpoint, is marked failed and queued again, so
the next `charrnn sweep` on the study resumes it from that checkpoint.
"""
import json
import math
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np

from ..checkpoints import rundir
from ..errors import CharrnnError
from .spec import Spec, trial_config
from .storage import Store, original_number, retry

TIME_SLOTS = 20  # under a max_time budget, trials are compared at 20 equal points of it
POLL_S = 1.0  # waiting for running trials that might still fail and come back as retries


def suggest(trial, key: str, s: dict):
    kind = s["kind"]
    if kind == "choice":
        return trial.suggest_categorical(key, s["values"])
    if kind in ("int", "log_int"):
        return trial.suggest_int(key, s["low"], s["high"], step=s.get("step", 1), log=kind == "log_int")
    return trial.suggest_float(key, s["low"], s["high"], log=kind == "log_uniform")


def make_sampler(optuna, spec: Spec, seed: int):
    if spec.sampler == "grid":
        # Every worker must shuffle the grid the same way: trial N takes the grid's point N.
        return optuna.samplers.GridSampler(spec.grid(), seed=spec.seed)
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # constant_liar: a running trial counts as a bad result, so parallel workers spread out
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


def make_pruner(optuna, spec: Spec):
    t = spec.base.train
    if spec.pruner == "median":
        # Not before a quarter of the budget: early losses say little about where a run ends up.
        return optuna.pruners.MedianPruner(n_startup_trials=min(5, max(1, spec.trials // 4)),
                                           n_warmup_steps=(t.max_steps or TIME_SLOTS) // 4)
    if spec.pruner == "hyperband":
        if t.max_steps:
            return optuna.pruners.HyperbandPruner(min_resource=t.eval_every, max_resource=t.max_steps)
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=TIME_SLOTS)  # see on_eval
    return optuna.pruners.NopPruner()


def has_checkpoint(run_dir: Path) -> bool:
    return (run_dir / "last.npz").is_file() or bool(rundir.step_files(run_dir))


class Worker:
    def __init__(self, job: dict):
        self.spec = Spec.from_json(job["spec"])
        self.corpus, self.out, self.index = job["corpus"], Path(job["out"]), job["index"]
        self.store = Store(job["storage"], self.spec.heartbeat)
        import optuna
        self.optuna = optuna
        self.name = self.store.worker_name(self.index)
        study = self.store.load(self.spec.study)
        # Every worker the study ever had gets its own ordinal (under the ask lock, across machines),
        # and its sampler a seed from (seed, ordinal): workers never draw the same values, and a
        # one-worker sweep run again from scratch with the same seed proposes the same trials.
        with self.store.ask_lock(self.spec.study):
            ordinal = int(study.user_attrs.get("charrnn_workers", 0))
            study.set_user_attr("charrnn_workers", ordinal + 1)
        seed = int(np.random.SeedSequence([self.spec.seed, ordinal]).generate_state(1)[0])
        self.study = optuna.load_study(study_name=self.spec.study, storage=self.store.storage,
                                       sampler=make_sampler(optuna, self.spec, seed),
                                       pruner=make_pruner(optuna, self.spec))

    def should_ask(self) -> bool | None:
        """True: ask now; None: wait (trials running elsewhere may fail and come back); False: done."""
        T = self.optuna.trial.TrialState
        trials = self.study.get_trials(deepcopy=False)
        if any(t.state == T.WAITING for t in trials):
            return True
        if sum(1 for t in trials if "retry_history" not in t.system_attrs) < self.spec.budget():
            return True
        return None if any(t.state == T.RUNNING for t in trials) else False

    def run(self) -> None:
        fd = self.store.hold_worker(self.name)
        try:
            while True:
                with self.store.ask_lock(self.spec.study):
                    self.store.fail_dead_trials(self.study)
                    go = self.should_ask()
                    if go:
                        # optimize() fails stale trials (database heartbeats), asks, then calls
                        # objective, which releases the ask lock once the trial bears our name.
                        self.study.optimize(self.objective, n_trials=1, catch=(CharrnnError,))
                if go is False:
                    return
                if go is None:
                    time.sleep(POLL_S)
        finally:
            self.store.drop_worker(self.name, fd)

    def objective(self, trial) -> float:
        trial.set_user_attr("worker", self.name)
        self.store.release()
        if trial.user_attrs.get("interrupted"):  # copied from the attempt this retry continues
            trial.set_user_attr("interrupted", False)
        frozen = next(t for t in self.study.get_trials(deepcopy=False) if t.number == trial.number)
        run_dir = self.out / f"trial-{original_number(frozen):04d}"
        trial.set_user_attr("run", run_dir.name)
        params = {key: suggest(trial, key, s) for key, s in self.spec.space.items()}
        cfg = trial_config(self.spec.base, params)
        resume = run_dir if has_checkpoint(run_dir) else None
        pruned = []

        t = self.spec.base.train
        slot = None if t.max_steps else t.max_time / TIME_SLOTS
        reported = set(frozen.intermediate_values)  # a retry inherits its first attempt's values

        def on_eval(m: dict) -> bool:
            trial.set_user_attr("step", m["step"])
            # The pruner compares trials at equal steps, or under a time budget at equal training time:
            # TIME_SLOTS points of the budget (a large model must not be judged at a small one's step
            # count). Slots passed since the last evaluation get this evaluation's loss.
            if math.isfinite(m["val_loss"]):
                at = m["step"] if slot is None else int(m["elapsed_s"] / slot)
                first = at if slot is None else max(reported, default=-1) + 1
                for s in range(first, at + 1):
                    if s not in reported:
                        reported.add(s)
                        trial.report(m["val_loss"], s)
            if trial.should_prune():
                pruned.append(m["step"])
                return True
            return False

        from ..api import train
        try:
            # A retry resumes its first attempt's run dir; one that died before any checkpoint starts over.
            best = train(self.corpus, cfg, run_dir, resume=resume, force=resume is None, live=False,
                         on_eval=on_eval)
        except CharrnnError as e:
            if type(e).__name__ == "Interrupted":
                self._requeue(trial)
                raise KeyboardInterrupt from None
            trial.set_user_attr("error", e.one_line()[:500])
            raise
        except (KeyboardInterrupt, SystemExit):
            self._requeue(trial)
            raise KeyboardInterrupt from None
        from ..checkpoints.npz import read_meta
        last = best.with_name("last.npz")
        progress = (read_meta(last if last.is_file() else best) or {}).get("progress", {})
        losses = (read_meta(best) or {}).get("losses", {})
        trial.set_user_attr("step", progress.get("step"))
        trial.set_user_attr("elapsed_s", progress.get("elapsed_s"))
        if pruned:
            raise self.optuna.TrialPruned(f"pruned at step {pruned[0]}")
        value = losses.get("best_val_loss")
        if value is None:
            raise CharrnnError(f"{run_dir} has no validation loss", "give the corpus a longer validation split")
        return float(value)

    def _requeue(self, trial) -> None:
        """Stopped by a signal: its checkpoint is written; queue it again to resume from there."""
        trial.set_user_attr("interrupted", True)
        frozen = next(t for t in self.study.get_trials(deepcopy=True) if t.number == trial.number)
        retry(self.study, frozen, max_retry=None)


def _die_with_parent(parent: int) -> None:
    """A worker ends with its `charrnn sweep` (even a kill -9 of it), as the processes of one machine do."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent was already gone before the prctl
        os._exit(1)


def main() -> int:
    job = json.loads(sys.argv[1])
    _die_with_parent(job["parent"])
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
    try:
        Worker(job).run()
    except KeyboardInterrupt:
        return 130
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 1
    except CharrnnError as e:
        print(f"error: {e.one_line()}", file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())

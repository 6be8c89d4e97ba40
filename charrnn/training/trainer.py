"""The training loop: truncated BPTT over contiguous streams, evaluation, sampling, checkpoints, and
everything an exact resume needs (weights, optimizer moments, step/epoch/cursor, carried state, RNG).

One numpy Generator seeded from train.seed drives init, the per-epoch stream offset and dropout; the
samples shown during training use seeds derived from (seed, step), so changing the sample cadence on
resume cannot change the training numbers.
"""
import contextlib
import math
import signal
import threading
import time
from pathlib import Path

import numpy as np

from ..checkpoints import npz as checkpoint
from ..checkpoints import rundir, store
from ..config import Config
from ..data.batches import Batches, eval_batches, split
from ..data.vocab import Corpus
from ..engine.averaging import TRAIN_KEY, Averager
from ..engine.model import Model
from ..engine.optim import clip_grad_norm, clip_grad_value, lr_at, make_optimizer
from ..engine.params import Shape, check_memory, init_params, training_bytes
from ..errors import CharrnnError, UsageError
from . import endings, finetune, snapshot

EXIT_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143}


class Interrupted(CharrnnError):
    """Training stopped by Ctrl-C / SIGTERM after writing a checkpoint: a deliberate stop, not an error
    (the CLI prints it without "error:")."""
    deliberate = True


class Trainer:
    """Holds the run's whole state; `run()` trains until a stop condition and returns the best checkpoint."""

    def __init__(self, cfg: Config, corpus: Corpus, run_dir: Path, reporter, batch_shape: tuple[int, int],
                 started: float | None = None, *, splits: tuple | None = None, sources: list[str] | None = None,
                 origin: dict | None = None, on_eval=None, resume: store.Loaded | None = None,
                 transfer_from: store.Loaded | None = None):
        """started: the time.perf_counter() reading this session's clock (elapsed_s, max_time) counts from;
        the CLI passes the moment its process started, the API the moment train() was called. Default: the
        start of run(). splits: the corpus's (train, val, test), when the caller has split it already.
        sources: the corpus paths as given (absolute) for meta; origin: meta init_from (fine-tuning);
        on_eval(metrics of the step) -> True stops there (a sweep's pruner). resume: a checkpoint whose
        full training state this trainer continues; transfer_from: a checkpoint whose weights it starts
        from (fine-tuning, training/finetune.py)."""
        self.cfg, self.corpus, self.run_dir, self.reporter = cfg, corpus, run_dir, reporter
        self.sources, self.origin, self.on_eval = sources, origin, on_eval
        if started is not None:
            self._t0 = started
        m, t = cfg.model, cfg.train
        splits = splits or split(corpus.data, cfg.data.val_fraction, cfg.data.test_fraction)
        self.train_data, self.val_data = splits[0], splits[1]
        self.B, self.T = batch_shape
        self.batches = Batches(self.train_data, self.B, self.T)
        val = self.val_data[: t.eval_max_chars + 1] if t.eval_max_chars else self.val_data
        self.val_batches = eval_batches(val, self.B, self.T)
        self.rng = np.random.default_rng(t.seed)
        shape = Shape(m.cell, corpus.vocab.size, m.hidden_size, m.num_layers, m.embedding_size)
        check_memory(training_bytes(shape, self.B, self.T), f"training a {m.num_layers}x{m.hidden_size} model",
                     "choose a smaller model.hidden_size, num_layers or embedding_size")
        self.model = Model(shape)
        init_params(self.model.params, self.rng, m.init_scale, scheme=m.init, forget_bias=m.forget_bias,
                    orthogonal_recurrent=m.orthogonal_recurrent)
        self.grads = self.model.params.zeros_like()
        o = cfg.optim
        self.opt = make_optimizer(o.optimizer, len(self.model.params), beta1=o.beta1, beta2=o.beta2, eps=o.eps,
                                  momentum=o.momentum, alpha=o.alpha, weight_decay=o.weight_decay)
        self.averager = Averager(o.ema) if o.ema else None  # optim.ema: see averaging.py
        self.state = self.model.zero_state(self.B)
        self.step = self.epoch = self.batch_index = self.offset = 0
        self.elapsed_before = 0.0
        self.bad_steps = self.bad_in_row = 0
        self.best_val = math.inf
        self.stale_evals = 0  # evaluations in a row without a better val loss (train.patience)
        self.ending: endings.Ending | None = None  # why this session stopped, once it has (endings.py)
        self.last_loss = math.nan
        self.last_lr = math.nan  # the rate the latest update used (what metrics.jsonl logs)
        self.saved_step = -1
        self.stop_signal: int | None = None  # the signal this run stops for (ranks: agreed by every rank)
        self.signalled: int | None = None  # the first Ctrl-C/SIGTERM this process received
        self._writing = False  # inside save(): a second signal waits for the write to finish
        self._quit_signal: int | None = None
        if (cfg.optim.schedule in ("cosine", "linear") and cfg.optim.schedule_length == "steps"
                and self.total_steps is None):
            # Checked here, before any file is written, rather than at the first step.
            timed = " (or train.max_time with optim.schedule_length=auto)"
            raise UsageError(f"the {cfg.optim.schedule} schedule needs train.max_steps or train.max_epochs{timed}",
                             "set --max-steps or --max-epochs, or use another optim.schedule")
        if transfer_from is not None:
            finetune.transfer(self.model.params, transfer_from, corpus.vocab)
        if resume is not None:
            snapshot.restore(self, resume)

    # -- sizes and limits ---------------------------------------------------------------------
    @property
    def total_steps(self) -> int | None:
        t = self.cfg.train
        by_epochs = t.epoch_limit * self.batches.batches_per_epoch(0) if t.epoch_limit else None
        if t.max_steps and by_epochs:
            return min(t.max_steps, by_epochs)
        return t.max_steps or by_epochs

    @property
    def _time_bound(self) -> float | None:
        """max_time when the cosine/linear schedule is to follow it (optim.schedule_length=auto)."""
        t, o = self.cfg.train, self.cfg.optim
        return t.max_time if t.max_time and o.schedule_length == "auto" else None

    def lr(self) -> float:
        """The learning rate of the next update (0-based step self.step): a pure function of the step, and
        for a time-bounded schedule (optim.schedule_length=auto with max_time) of the elapsed time too,
        which checkpoints save (progress.elapsed_s), so a resumed run continues the schedule where it was."""
        o = self.cfg.optim
        bound = self._time_bound
        schedule = o.schedule
        if schedule in ("cosine", "linear") and self.total_steps is None and bound is None:
            schedule = "constant"  # schedule_length=auto with no budget at all (run until stopped): no decay
        return lr_at(self.step, lr=o.lr, schedule=schedule, warmup_steps=o.warmup_steps,
                     decay_rate=o.decay_rate, decay_every=o.decay_every, min_lr=o.min_lr,
                     total_steps=self.total_steps, decay_fraction=o.decay_fraction,
                     time_fraction=None if bound is None else min(1.0, self.elapsed() / bound))

    # -- one step -------------------------------------------------------------------------------
    def _next_batch(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The next (x, y), starting a new epoch (fresh state, new random offset) when one ends;
        None when max_epochs is reached."""
        if self.batch_index >= self.batches.batches_per_epoch(self.offset):
            if self.cfg.train.epoch_limit and self.epoch + 1 >= self.cfg.train.epoch_limit:
                return None
            self.epoch += 1
            self.batch_index = 0
            # A new cut point each epoch so streams are not always split at the same characters.
            room = self.batches.stream_len - self.T + 1
            self.offset = int(self.rng.integers(min(self.T, room)))
            self.state = self._fresh_state()
        return self.batches.batch(self.batch_index, self.offset)

    def _fresh_state(self):
        """The zero state of the streams this process trains (all B; a rank's share, training/ranks.py)."""
        return self.model.zero_state(self.B)

    def _gradients(self, x: np.ndarray, y: np.ndarray):
        """(loss, state after the chunk) with the batch's gradient in self.grads."""
        masks = self.model.dropout_masks(self.rng, self.cfg.model.dropout, self.B, self.T)
        return self.model.forward_backward(x, y, self.state, self.grads, masks)

    def train_step(self, x: np.ndarray, y: np.ndarray) -> float:
        """Forward, backward, clip, update. A non-finite loss or gradient never reaches the weights."""
        c = self.cfg
        loss, new_state = self._gradients(x, y)
        norm = clip_grad_norm(self.grads.flat, c.optim.grad_clip)
        self.last_lr = lr = self.lr()
        if math.isfinite(loss) and math.isfinite(norm):
            clip_grad_value(self.grads.flat, c.optim.grad_clip_value)
            self.opt.step(self.model.params.flat, self.grads.flat, lr)
            if self.averager is not None:
                self.averager.update(self.model.params.flat, self.opt.t)  # t: updates made so far
            self.state = new_state
            self.bad_in_row = 0
        else:
            self.bad_steps += 1
            self.bad_in_row += 1
            self.state = self._fresh_state()
            self.reporter.warn(f"step {self.step + 1}: non-finite loss or gradient, update skipped "
                               f"({self.bad_in_row} in a row)")
            if self.bad_in_row >= c.train.max_bad_steps:
                self.ending = endings.diverged(self.step + 1, self.bad_in_row)
                # No checkpoint is written: the weights are still the last good ones, and the files
                # already on disk (best.npz, last.npz) hold finite weights.
                kept = (f"checkpoints in {self.run_dir} keep the last good weights"
                        if rundir.last(self.run_dir).exists() else "no checkpoint had been written yet")
                raise CharrnnError(f"training diverged: {self.bad_in_row} non-finite steps in a row at step "
                                   f"{self.step + 1}; {kept}",
                                   "train again with a lower --lr or --grad-clip (--force to reuse the "
                                   "directory), or raise train.max_bad_steps")
        self.step += 1
        self.batch_index += 1
        self.last_loss = loss
        return loss

    # -- evaluation, samples, checkpoints --------------------------------------------------------
    def averaged(self):
        """Context: the model holds the weights a user gets (the average when optim.ema is on)."""
        if self.averager is None:
            return contextlib.nullcontext()
        return self.averager.swapped_in(self.model.params.flat)

    def evaluate(self, weights: str = "saved") -> float | None:
        """Mean loss over the validation split, as B contiguous streams from a zero state, of the weights
        a checkpoint saves ("saved") or of the weights being trained ("train"; they differ only with
        optim.ema)."""
        vb = self.val_batches
        if vb is None:
            return None
        state, total, n = self.model.zero_state(vb.batch_size), 0.0, 0
        with self.averaged() if weights == "saved" else contextlib.nullcontext():
            for i in range(vb.batches_per_epoch()):
                x, y = vb.batch(i)
                s, state = self.model.loss(x, y, state)
                total, n = total + s, n + x.size
        return float(total / n)

    def sample_text(self) -> str:
        from ..sampling.generate import sample  # lazy: only needed when samples are shown
        t = self.cfg.train
        seed = int(np.random.default_rng([t.seed, self.step]).integers(2**63))
        with self.averaged():
            return sample(self.model, self.corpus.vocab, t.sample_length, temperature=t.temperature,
                          seed=seed)[0]

    def save(self, val_loss: float | None) -> Path | None:
        """Write step{N}_val{loss}.npz atomically, refresh last.npz (and best.npz when val improved),
        prune old ones. Never writes weights that are not finite."""
        with self.averaged():
            # Copies: the buffer gets the training weights back before the file is written.
            arrays = {k: v.copy() for k, v in store.model_arrays(self.model).items()}
            train_weights = self.averager.train_weights() if self.averager is not None else None
        if train_weights is not None:
            arrays[TRAIN_KEY] = train_weights
        if not all(np.isfinite(a).all() for a in arrays.values()):
            self.reporter.warn(f"step {self.step}: weights are not finite; checkpoint not written")
            return None
        improved = val_loss is not None and val_loss < self.best_val
        if improved:
            self.best_val = val_loss
        path = self._write(arrays, val_loss, improved)
        self.saved_step = self.step
        return path

    def _write(self, arrays: dict, val_loss: float | None, improved: bool) -> Path:
        """Write the checkpoint of this step (arrays: the weights) and publish it as last (and best)."""
        arrays |= self.opt.state_arrays() | store.state_arrays(self.state)
        path = self.run_dir / rundir.checkpoint_name(self.step, val_loss)
        self._writing = True
        try:
            checkpoint.save(path, arrays, snapshot.checkpoint_meta(self, val_loss))
            rundir.publish(path, rundir.last(self.run_dir))
            if improved or self.val_batches is None:  # without a val split, best is simply the newest
                rundir.publish(path, rundir.best(self.run_dir))
            rundir.prune(self.run_dir, self.cfg.train.keep_last)
        except OSError as e:  # disk full, directory removed, ...: the files on disk are still whole
            raise CharrnnError(f"cannot write checkpoint {path}: {e.strerror or e}",
                               f"free disk space, then continue with: charrnn train --resume {self.run_dir}") from None
        finally:
            self._writing = False
        if self._quit_signal is not None:
            self._say_how_to_resume()
            _quit(self._quit_signal)
        return path

    # -- the loop ---------------------------------------------------------------------------------
    def elapsed(self) -> float:
        return self.elapsed_before + (time.perf_counter() - self._t0 if hasattr(self, "_t0") else 0.0)

    def run(self, reporter=None) -> Path:
        """Train until a stop condition; reporter (default: the constructor's) shows and logs each step."""
        self.reporter = reporter or self.reporter
        t = self.cfg.train
        if not hasattr(self, "_t0"):
            self._t0 = time.perf_counter()
        chars = self.B * self.T
        restore = self._install_signals()
        try:
            self.ending = self._ending()  # a resumed run may have nothing left to train
            while self.ending is None:
                xy = self._next_batch()
                if xy is None:
                    break
                t_step = time.perf_counter()
                loss = self.train_step(*xy)
                m = {"step": self.step, "epoch": self.epoch + 1, "train_loss": loss, "lr": self.last_lr,
                     "chars_per_sec": chars / max(time.perf_counter() - t_step, 1e-9),
                     "elapsed_s": self.elapsed()}
                # The last step is always evaluated here, so its evaluation (often the run's best: the
                # schedule ends annealed) is logged with it and `charrnn plot` agrees with best.npz.
                last = self._ending() is not None
                scheduled = bool(t.eval_every) and self.step % t.eval_every == 0
                evaluated = scheduled or last
                if evaluated:
                    m["val_loss"] = self.evaluate()
                    if self.averager is not None and m["val_loss"] is not None:
                        # metrics.jsonl only: what the average buys, measured on this very run (the
                        # weights being trained follow the same path with or without optim.ema)
                        m["val_loss_train_weights"] = self.evaluate("train")
                    # Only scheduled evaluations count for patience: a run stopped by a budget or a signal
                    # and resumed then stops early where the run left alone does.
                    if scheduled and m["val_loss"] is not None:
                        self.stale_evals = 0 if m["val_loss"] < self.best_val else self.stale_evals + 1
                self.reporter.step(m)
                if t.sample_every and self.step % t.sample_every == 0 and t.sample_length:
                    self.reporter.sample(self.step, self.sample_text())
                # Decided before this step's checkpoint, so its meta says why the run ended. A budget (or a
                # signal) ending here wins over patience running out at the same evaluation.
                self.ending = self._ending()
                if evaluated or (t.checkpoint_every and self.step % t.checkpoint_every == 0):
                    self.save(m.get("val_loss"))
                if evaluated and self.on_eval is not None and m["val_loss"] is not None and self.on_eval(m):
                    self.ending = endings.pruned(self.step)  # this evaluation's checkpoint is written
            if self.saved_step != self.step:
                self.save(self.evaluate())
        except CharrnnError:
            if self.ending is not None and self.ending.reason == "diverged":
                self.reporter.end(self.ending, self.epoch + 1, self.elapsed(), show=False)  # the error says it
            raise
        finally:
            restore()
        return self._finish()

    def _finish(self) -> Path:
        """Say why the run ended (terminal and metrics.jsonl) and return the checkpoint to use."""
        e = self.ending or endings.max_epochs(self.step, self.cfg.train.epoch_limit,
                                              self.cfg.train.max_epochs is None, self.run_dir)
        signalled = e.reason == "signal"
        self.reporter.end(e, self.epoch + 1, self.elapsed(), show=not signalled)  # a signal: the CLI says it
        if signalled:
            raise Interrupted(f"stopped at step {e.step:,}: {e.why}", e.go_on,
                              exit_code=EXIT_SIGNAL.get(self.stop_signal, 1))
        best = rundir.best(self.run_dir)
        return best if best.exists() else rundir.last(self.run_dir)

    def _ending(self) -> endings.Ending | None:
        """Why the loop stops before the next step (a signal, a budget, patience), or None."""
        t = self.cfg.train
        epoch_over = self.batch_index >= self.batches.batches_per_epoch(self.offset)
        return endings.reached(step=self.step, elapsed=self.elapsed(), signum=self.stop_signal,
                               epoch_done=epoch_over and bool(t.epoch_limit) and self.epoch + 1 >= t.epoch_limit,
                               stale=self.stale_evals if self.val_batches is not None else 0,
                               best=self.best_val, train=t, run_dir=self.run_dir, fresh=self.step == 0)

    def _on_signal(self, signum: int) -> None:
        """The first Ctrl-C/SIGTERM: stop after this step (ranks stop where they all agree to)."""
        self.stop_signal = signum
        self.reporter.warn("stopping after this step and writing a checkpoint (again to quit at once)")

    def parallel_header(self) -> dict[str, str]:
        """Lines of the run's header about how the work is shared beyond this process's threads."""
        return {}

    def _say_how_to_resume(self) -> None:
        """Before quitting at once: where the work that is not lost can be picked up."""
        if rundir.last(self.run_dir).exists():
            self.reporter.warn(f"quitting now; continue from the last checkpoint with: "
                               f"charrnn train --resume {self.run_dir}")
        else:
            self.reporter.warn("quitting now; no checkpoint had been written yet")

    def _install_signals(self):
        """First Ctrl-C/SIGTERM: finish the step, checkpoint, exit 130/143. Second: stop at once
        (checkpoints are written atomically, so nothing is left half-written)."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = {s: signal.getsignal(s) for s in EXIT_SIGNAL}

        def handler(signum, frame):
            if self.signalled is not None:  # the second one: out at once (writes are atomic)
                if self._writing:
                    # an exception raised inside numpy's zip writer can surface as another error
                    # (ValueError from zipfile's cleanup): leave right after this write instead
                    self._quit_signal = signum
                    return
                self._say_how_to_resume()
                _quit(signum)
            self.signalled = signum
            self._on_signal(signum)

        for s in EXIT_SIGNAL:
            signal.signal(s, handler)

        def restore():
            for s, h in previous.items():
                signal.signal(s, h)
        return restore


def _quit(signum: int):
    """Leave at once on a second signal: SystemExit(143) for SIGTERM, KeyboardInterrupt otherwise."""
    if signum == signal.SIGTERM:
        raise SystemExit(EXIT_SIGNAL[signum])
    raise KeyboardInterrupt

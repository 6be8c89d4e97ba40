"""Optimizers, gradient clipping and learning-rate schedules over one flat parameter vector.

A model keeps all its parameters in one contiguous 1-D vector; gradients and every optimizer moment
have the same length and layout. So everything here works on flat vectors, and each optimizer step is
one fused Numba pass (charrnn/engine/kernels/optim.py).

Semantics follow torch.optim (Adam, RMSprop, Adagrad, SGD) so results can be checked against PyTorch,
except weight decay, which is decoupled for every optimizer (AdamW-style: p -= lr * weight_decay * p
before the gradient step) rather than torch's L2 term added to the gradient.

Scalars are computed in Python (float64) and cast to the vectors' dtype once per call, so a float32
model gets float32 arithmetic in the kernels.
"""
from __future__ import annotations

import math

import numpy as np

from charrnn.engine.kernels.optim import (
    _adagrad_update,
    _adam_update,
    _clamp_inplace,
    _rmsprop_update,
    _scale_inplace,
    _sgd_momentum_update,
    _sgd_update,
    _sum_squares,
)
from charrnn.engine.team import chunks, run_shared
from charrnn.engine.threads import threads
from charrnn.errors import CharrnnError, UsageError

OPTIMIZERS = ("adam", "rmsprop", "adagrad", "sgd")
SCHEDULES = ("constant", "step", "cosine", "linear")
_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_STATE_PREFIX = "optim."


UPDATE_PIECE = 1 << 18  # elements per piece of the update at least (1 MB of float32 per vector)

def _check_vector(x: np.ndarray, what: str, n: int | None = None, dtype: np.dtype | None = None) -> None:
    """Raise ValueError unless x is a 1-D C-contiguous float32/float64 array (of length n and dtype).

    These are programming errors (the trainer hands the wrong buffer), not user errors, hence ValueError.
    """
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{what} must be a numpy array, got {type(x).__name__}")
    if x.ndim != 1:
        raise ValueError(f"{what} must be a flat 1-D vector, got shape {x.shape}")
    if x.dtype not in _FLOAT_DTYPES:
        raise ValueError(f"{what} must be float32 or float64, got {x.dtype}")
    if dtype is not None and x.dtype != dtype:
        raise ValueError(f"{what} has dtype {x.dtype}, expected {dtype}")
    if n is not None and x.shape[0] != n:
        raise ValueError(f"{what} has length {x.shape[0]}, expected {n}")
    if not x.flags.c_contiguous:
        raise ValueError(f"{what} must be C-contiguous")
    if not x.flags.writeable:
        raise ValueError(f"{what} must be writeable")


def _check_hyper(name: str, value: float, lo: float, hi: float, *, hi_open: bool = True,
                 lo_open: bool = False) -> float:
    """Validate one hyperparameter from the config; UsageError (exit 2) because the user set it."""
    value = float(value)
    below = value <= lo if lo_open else value < lo
    above = value >= hi if hi_open else value > hi
    if not math.isfinite(value) or below or above:
        lo_b = "(" if lo_open else "["
        hi_b = ")" if hi_open else "]"
        raise UsageError(f"optimizer setting {name}={value} is out of range",
                         f"{name} must be in {lo_b}{lo}, {hi}{hi_b}")
    return value


class Optimizer:
    """Base class: a step counter, named moment vectors and decoupled weight decay.

    Subclasses set `name` and `_moment_names` and implement `_update`. The moments are zero-initialised
    vectors of length n in the optimizer's dtype; `state_arrays` exposes them as `optim.<moment>` plus
    the step counter `optim.t` (int64, shape (1,)).
    """

    name: str = "optimizer"
    _moment_names: tuple[str, ...] = ()

    def __init__(self, n: int, *, weight_decay: float = 0.0, dtype=np.float32):
        if int(n) != n or n < 0:
            raise ValueError(f"parameter count must be a non-negative integer, got {n}")
        self.dtype = np.dtype(dtype)
        if self.dtype not in _FLOAT_DTYPES:
            raise ValueError(f"optimizer dtype must be float32 or float64, got {self.dtype}")
        self.n = int(n)
        self.weight_decay = _check_hyper("weight_decay", weight_decay, 0.0, math.inf)
        self.t = 0  # number of steps taken; bias corrections and checkpoints depend on it
        self._moments = {k: np.zeros(self.n, dtype=self.dtype) for k in self._moment_names}

    def _scalar(self, x: float):
        """Cast a Python scalar to the vectors' dtype so the kernel does not promote to float64."""
        return self.dtype.type(x)

    def step(self, params: np.ndarray, grads: np.ndarray, lr: float) -> None:
        """Update params in place from grads with learning rate lr. grads is read, never modified."""
        _check_vector(params, "params", self.n, self.dtype)
        _check_vector(grads, "grads", self.n, self.dtype)
        lr = float(lr)
        if not math.isfinite(lr) or lr < 0:
            raise ValueError(f"learning rate must be finite and >= 0, got {lr}")
        if np.may_share_memory(params, grads):  # bounds check only: cheap for flat vectors
            raise ValueError("params and grads must not share memory")
        self.t += 1
        decay = self._scalar(1.0 - lr * self.weight_decay)
        # Element-wise: cut into fixed pieces (the vector size alone decides them, so the numbers do
        # not depend on the thread count) that threads() threads share out.
        pieces = chunks(self.n, UPDATE_PIECE)

        def piece(i: int) -> None:
            a, b = pieces[i]
            self._update(params[a:b], grads[a:b], lr, decay, {k: v[a:b] for k, v in self._moments.items()})

        run_shared(threads(), len(pieces), piece)

    def _update(self, params: np.ndarray, grads: np.ndarray, lr: float, decay, mom: dict) -> None:
        """Update one piece: params, grads and the moments `mom` are the same slice of each vector."""
        raise NotImplementedError

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Copies of the optimizer state for a checkpoint: `optim.<moment>` vectors and `optim.t`.

        Copies, so a checkpoint being written (possibly on another thread) never sees a later step.
        """
        state = {_STATE_PREFIX + k: v.copy() for k, v in self._moments.items()}
        state[_STATE_PREFIX + "t"] = np.array([self.t], dtype=np.int64)
        return state

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        """Restore state saved by `state_arrays` of the same optimizer type, size and dtype.

        Keys without the `optim.` prefix are ignored, so a whole checkpoint dict can be passed. Everything
        is validated before anything is changed: on CharrnnError the optimizer is untouched.
        """
        hint = "the checkpoint was saved with a different optimizer, model size or dtype; " \
               "use the same settings or start a fresh run"
        expected = {_STATE_PREFIX + k for k in self._moment_names} | {_STATE_PREFIX + "t"}
        present = {k for k in arrays if k.startswith(_STATE_PREFIX)}
        if present != expected:
            missing = ", ".join(sorted(expected - present)) or "none"
            extra = ", ".join(sorted(present - expected)) or "none"
            raise CharrnnError(f"optimizer state does not match {self.name}: missing {missing}; "
                               f"unexpected {extra}", hint)
        t = np.asarray(arrays[_STATE_PREFIX + "t"])
        if t.size != 1 or t.dtype.kind not in "iu" or int(t.reshape(-1)[0]) < 0:
            raise CharrnnError(f"optimizer state optim.t must be one non-negative integer, "
                               f"got dtype {t.dtype} shape {t.shape}", hint)
        for k in self._moment_names:
            a = arrays[_STATE_PREFIX + k]
            if not isinstance(a, np.ndarray) or a.shape != (self.n,) or a.dtype != self.dtype:
                got = f"dtype {a.dtype} shape {a.shape}" if isinstance(a, np.ndarray) else type(a).__name__
                raise CharrnnError(f"optimizer state optim.{k} has {got}, expected dtype {self.dtype} "
                                   f"shape ({self.n},)", hint)
        for k in self._moment_names:
            # copy into our own buffers: keeps them contiguous, writeable and not aliased to the caller's
            np.copyto(self._moments[k], arrays[_STATE_PREFIX + k])
        self.t = int(t.reshape(-1)[0])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n={self.n}, t={self.t}, dtype={self.dtype})"


class Adam(Optimizer):
    """torch.optim.Adam (bias-corrected; eps added after sqrt of the bias-corrected v).

    With weight_decay > 0 this is AdamW (decoupled decay), matching torch.optim.AdamW.
    """

    name = "adam"
    _moment_names = ("m", "v")

    def __init__(self, n: int, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                 weight_decay: float = 0.0, dtype=np.float32):
        super().__init__(n, weight_decay=weight_decay, dtype=dtype)
        self.beta1 = _check_hyper("beta1", beta1, 0.0, 1.0)
        self.beta2 = _check_hyper("beta2", beta2, 0.0, 1.0)
        self.eps = _check_hyper("eps", eps, 0.0, math.inf, lo_open=True)

    def _update(self, params, grads, lr, decay, mom):
        # Bias corrections in float64 Python: beta**t underflows gracefully and stays accurate for large t.
        bias_correction1 = 1.0 - self.beta1 ** self.t
        bias_correction2 = 1.0 - self.beta2 ** self.t
        s = self._scalar
        _adam_update(params, grads, mom["m"], mom["v"], decay,
                     s(self.beta1), s(1.0 - self.beta1), s(self.beta2), s(1.0 - self.beta2),
                     s(lr / bias_correction1), s(1.0 / math.sqrt(bias_correction2)), s(self.eps))


class RMSprop(Optimizer):
    """torch.optim.RMSprop without momentum or centering: v = alpha*v + (1-alpha)*g^2; p -= lr*g/(sqrt(v)+eps).

    The default alpha=0.95 is char-rnn's decay rate (torch's default is 0.99).
    """

    name = "rmsprop"
    _moment_names = ("v",)

    def __init__(self, n: int, alpha: float = 0.95, eps: float = 1e-8, weight_decay: float = 0.0,
                 dtype=np.float32):
        super().__init__(n, weight_decay=weight_decay, dtype=dtype)
        self.alpha = _check_hyper("alpha", alpha, 0.0, 1.0)
        self.eps = _check_hyper("eps", eps, 0.0, math.inf, lo_open=True)

    def _update(self, params, grads, lr, decay, mom):
        s = self._scalar
        _rmsprop_update(params, grads, mom["v"], decay, s(lr), s(self.alpha),
                        s(1.0 - self.alpha), s(self.eps))


class Adagrad(Optimizer):
    """torch.optim.Adagrad with lr_decay=0 and a zero initial accumulator: sum += g^2; p -= lr*g/(sqrt(sum)+eps)."""

    name = "adagrad"
    _moment_names = ("sum",)

    def __init__(self, n: int, eps: float = 1e-10, weight_decay: float = 0.0, dtype=np.float32):
        super().__init__(n, weight_decay=weight_decay, dtype=dtype)
        self.eps = _check_hyper("eps", eps, 0.0, math.inf, lo_open=True)

    def _update(self, params, grads, lr, decay, mom):
        s = self._scalar
        _adagrad_update(params, grads, mom["sum"], decay, s(lr), s(self.eps))


class SGD(Optimizer):
    """torch.optim.SGD (no dampening, no Nesterov): buf = momentum*buf + g (g on step 1); p -= lr*buf.

    momentum=0 is plain SGD and keeps no moment vector (state_arrays then holds only optim.t).
    """

    name = "sgd"

    def __init__(self, n: int, momentum: float = 0.9, weight_decay: float = 0.0, dtype=np.float32):
        self.momentum = _check_hyper("momentum", momentum, 0.0, 1.0)
        # the moment set depends on the instance, so shadow the class attribute before the base allocates
        self._moment_names = ("buf",) if self.momentum > 0 else ()
        super().__init__(n, weight_decay=weight_decay, dtype=dtype)

    def _update(self, params, grads, lr, decay, mom):
        s = self._scalar
        if self.momentum > 0:
            _sgd_momentum_update(params, grads, mom["buf"], decay, s(lr), s(self.momentum))
        else:
            _sgd_update(params, grads, decay, s(lr))


def make_optimizer(name: str, n: int, *, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                   momentum: float = 0.9, alpha: float = 0.95, weight_decay: float = 0.0,
                   dtype=np.float32) -> Optimizer:
    """Build an optimizer from the config's field names; settings a given optimizer does not use are ignored.

    In particular `momentum` only affects sgd (RMSprop here has no momentum), `alpha` only rmsprop and
    `beta1`/`beta2` only adam.
    """
    key = str(name).lower()
    if key == "adam":
        return Adam(n, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay, dtype=dtype)
    if key == "rmsprop":
        return RMSprop(n, alpha=alpha, eps=eps, weight_decay=weight_decay, dtype=dtype)
    if key == "adagrad":
        return Adagrad(n, eps=eps, weight_decay=weight_decay, dtype=dtype)
    if key == "sgd":
        return SGD(n, momentum=momentum, weight_decay=weight_decay, dtype=dtype)
    raise UsageError(f"unknown optimizer {name!r}", f"choose one of: {', '.join(OPTIMIZERS)}")


def global_norm(grads: np.ndarray) -> float:
    """L2 norm of the flat gradient vector, accumulated in float64. inf/nan if any element is non-finite."""
    _check_vector(grads, "grads")
    return math.sqrt(_sum_squares(grads))


def clip_grad_norm(grads: np.ndarray, max_norm: float) -> float:
    """Scale grads in place so their norm is at most max_norm; return the norm before clipping.

    Like torch.nn.utils.clip_grad_norm_: factor max_norm / (norm + 1e-6), applied only when it is < 1.
    max_norm <= 0 disables clipping (the norm is still returned, for logging). A non-finite norm leaves
    grads untouched: scaling by 0 or nan would hide the divergence the trainer's guard is looking for.
    """
    norm = global_norm(grads)
    if max_norm > 0 and math.isfinite(norm):
        factor = max_norm / (norm + 1e-6)
        if factor < 1.0:
            _scale_inplace(grads, grads.dtype.type(factor))
    return norm


def clip_grad_value(grads: np.ndarray, clip_value: float) -> None:
    """Clamp every gradient element to [-clip_value, clip_value] in place; clip_value <= 0 disables it.

    NaN elements stay NaN (so the divergence guard still sees them).
    """
    _check_vector(grads, "grads")
    if clip_value > 0:
        v = grads.dtype.type(clip_value)
        _clamp_inplace(grads, -v, v)


def lr_at(step: int, *, lr: float, schedule: str = "constant", warmup_steps: int = 0,
          decay_rate: float = 1.0, decay_every: int = 1, min_lr: float = 0.0,
          total_steps: int | None = None, time_fraction: float | None = None,
          decay_fraction: float = 1.0) -> float:
    """Learning rate for the update at 0-based `step`; a pure function of its arguments.

    Warmup (all schedules): steps 0..warmup_steps-1 ramp linearly lr/warmup_steps*(step+1), reaching lr
    on the last warmup step. After warmup, with s = step - warmup_steps (the schedules start counting
    when warmup ends, so there is no jump at the end of warmup):

    - constant: lr.
    - step: max(min_lr, lr * decay_rate ** (s // decay_every)); min_lr acts as a floor.
    - cosine: min_lr + (lr - min_lr) * (1 + cos(pi * p)) / 2, and
    - linear: lr + (min_lr - lr) * p, where p in [0, 1] is how much of the run's budget is used:
      the step budget's p = s / (N - 1) with N = total_steps - warmup_steps post-warmup steps (so the first
      post-warmup step uses exactly lr and the last, step total_steps-1, exactly min_lr; 1 when N <= 1);
      time_fraction (elapsed / max_time, for a time-bounded run) is a second budget, and p is the larger
      of the two: the schedule ends at whichever limit comes first. Time counts from the run's start, so
      a run whose warmup ends at 10 % of its time starts its decay a little below lr. Later steps stay at
      min_lr. Needs total_steps or time_fraction.
    - decay_fraction f in (0, 1] confines the cosine/linear decay to the budget's last fraction f: lr stays
      constant while p <= 1 - f, then decays with p' = (p - (1 - f)) / f ("warmup-stable-decay"; 1 = the
      whole run).

    Never negative. Raises ValueError for an unknown schedule or invalid arguments.
    """
    _check_schedule(step, lr, schedule, warmup_steps, decay_rate, decay_every, min_lr, total_steps, time_fraction,
                    decay_fraction)
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    s = step - warmup_steps
    if schedule == "constant":
        rate = lr
    elif schedule == "step":
        rate = max(min_lr, lr * decay_rate ** (s // decay_every))
    else:
        progress = _budget_used(s, warmup_steps, total_steps, time_fraction, decay_fraction)
        if schedule == "cosine":
            rate = min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
        else:
            rate = lr + (min_lr - lr) * progress
    return max(0.0, rate)


def _check_schedule(step, lr, schedule, warmup_steps, decay_rate, decay_every, min_lr, total_steps, time_fraction,
                    decay_fraction) -> None:
    """ValueError for arguments lr_at cannot use."""
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if not (math.isfinite(lr) and lr >= 0):
        raise ValueError(f"lr must be finite and >= 0, got {lr}")
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
    if not (math.isfinite(min_lr) and min_lr >= 0):
        raise ValueError(f"min_lr must be finite and >= 0, got {min_lr}")
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown lr schedule {schedule!r}; choose one of: {', '.join(SCHEDULES)}")
    if schedule == "step" and (decay_every <= 0 or not (decay_rate >= 0 and math.isfinite(decay_rate))):
        raise ValueError(f"step schedule needs decay_every > 0 and decay_rate >= 0, "
                         f"got decay_every={decay_every}, decay_rate={decay_rate}")
    if not 0 < decay_fraction <= 1:
        raise ValueError(f"decay_fraction must be in (0, 1], got {decay_fraction}")
    if time_fraction is not None and not 0 <= time_fraction <= 1:
        raise ValueError(f"time_fraction must be in [0, 1], got {time_fraction}")
    if schedule in ("cosine", "linear") and total_steps is None and time_fraction is None:
        raise ValueError(f"the {schedule} schedule needs total_steps or time_fraction")


def _budget_used(s: int, warmup_steps: int, total_steps: int | None, time_fraction: float | None,
                 decay_fraction: float) -> float:
    """p of lr_at's cosine/linear schedules: how much of the budget post-warmup step s has used, the larger
    of the step and time budgets, within the decay's last fraction."""
    progress = 0.0
    if total_steps is not None:
        last = total_steps - warmup_steps - 1  # s of the last scheduled step (total_steps - 1)
        progress = 1.0 if s >= last else s / last
    if time_fraction is not None:
        progress = max(progress, time_fraction)
    if decay_fraction < 1.0:
        progress = max(0.0, (progress - (1.0 - decay_fraction)) / decay_fraction)
    return progress

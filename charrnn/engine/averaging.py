"""Weight averaging (`optim.ema`): an exponential moving average of the weights, kept beside them.

At a constant learning rate the weights jitter around the bottom of a valley; their running average sits
closer to it, which is much of what a learning-rate decay buys, but at every step of the run rather than
only at its end. The trainer evaluates, samples and saves the average: a checkpoint's model arrays are
the averaged weights (so `sample`, `eval`, `export` and fine-tuning read them unchanged), and the weights
the optimizer is moving are saved beside them as TRAIN_KEY, which makes a resume exact.

The decay warms up as in TensorFlow's ExponentialMovingAverage(num_updates): min(decay, (1+n)/(10+n)) after
n updates, so the average follows the weights closely early on instead of holding on to the init.
"""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np

TRAIN_KEY = "ema.train_weights"  # checkpoint array: the weights the optimizer moves, when optim.ema is on


def decay_at(decay: float, updates: int) -> float:
    """The decay of the update that makes `updates` updates in all (1-based)."""
    return min(decay, (1.0 + updates) / (10.0 + updates))


class Averager:
    """The average of one flat float32 weight buffer. `avg` is None until the first update: the weights
    it starts from are the ones the first step produced, whatever filled the buffer before (init, a
    fine-tuning transfer)."""

    def __init__(self, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.avg: np.ndarray | None = None
        self._held: np.ndarray | None = None  # the training weights while the average is swapped in
        self._diff: np.ndarray | None = None
        self._swapped = False

    def update(self, weights: np.ndarray, updates: int) -> None:
        """avg += (1 - d) * (weights - avg), after the optimizer's update number `updates` (1-based)."""
        if self._swapped:
            raise RuntimeError("update() while the average is swapped in")
        if self.avg is None:
            self.load(weights)
            return
        d = decay_at(self.decay, updates)
        np.subtract(weights, self.avg, out=self._diff)
        self._diff *= weights.dtype.type(1.0 - d)
        self.avg += self._diff

    def load(self, avg: np.ndarray) -> None:
        """Continue from a saved average (resume)."""
        self.avg = np.array(avg, dtype=np.float32)
        self._held, self._diff = np.empty_like(self.avg), np.empty_like(self.avg)

    @contextmanager
    def swapped_in(self, weights: np.ndarray):
        """Inside the block the buffer holds the average (evaluation, samples, checkpoints) and
        `train_weights()` the weights being trained; the buffer gets them back on exit. No-op before the
        first update."""
        if self.avg is None:
            yield
            return
        if self._swapped:  # a nested swap would save the average as the training weights
            raise RuntimeError("the average is already swapped in")
        self._held[:] = weights
        self._swapped = True
        try:
            weights[:] = self.avg
            yield
        finally:
            weights[:] = self._held
            self._swapped = False

    def train_weights(self) -> np.ndarray | None:
        """Inside `swapped_in`: a copy of the weights being trained (None before the first update)."""
        if self.avg is None:
            return None
        if not self._swapped:
            raise RuntimeError("train_weights() outside swapped_in()")
        return self._held.copy()

"""The encoded corpus cut for training: contiguous train/val/test splits, char-rnn style batches of B
streams, and the batch shape a short corpus can hold."""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ..errors import UsageError

MIN_SEQ_LEN = 8  # fit_batch_shape never shrinks seq_len below this
TARGET_BATCHES = 4  # fit_batch_shape aims for at least this many batches per epoch


def split(data: np.ndarray, val_fraction: float, test_fraction: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Contiguous (train, val, test) views: train is the start of data, then val, then test at the end.

    n_val = int(N * val_fraction) and n_test = int(N * test_fraction); train gets the rest. Contiguous
    (not shuffled) splits keep validation text unseen and keep streams of consecutive characters intact.
    """
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 <= value < 1:
            raise UsageError(f"{name} must be in [0, 1), got {value}", f"set {name} to e.g. 0.05")
    if val_fraction + test_fraction >= 1:
        raise UsageError(f"val_fraction + test_fraction must be below 1, got {val_fraction + test_fraction}",
                         "lower val_fraction or test_fraction")
    n = len(data)
    n_val, n_test = int(n * val_fraction), int(n * test_fraction)
    n_train = n - n_val - n_test
    return data[:n_train], data[n_train: n_train + n_val], data[n_train + n_val:]


class Batches:
    """char-rnn style batches: B parallel streams, each continuing from one batch to the next.

    The data is cut into B contiguous streams of stream_len = (len(data) - 1) // B characters; batch i
    holds window [offset + i*T, offset + (i+1)*T) of every stream, so row b of batch i+1 continues row b
    of batch i and the trainer can carry the hidden state across batches. y is x shifted by one char.
    """

    def __init__(self, data: np.ndarray, batch_size: int, seq_len: int):
        if batch_size < 1 or seq_len < 1:
            raise ValueError(f"batch_size and seq_len must be >= 1, got {batch_size}, {seq_len}")
        self.batch_size, self.seq_len = batch_size, seq_len
        self.stream_len = (len(data) - 1) // batch_size
        if self.stream_len < 1:
            raise ValueError(f"{len(data)} characters cannot make {batch_size} streams")
        n = batch_size * self.stream_len
        self.x_streams = data[:n].reshape(batch_size, self.stream_len)  # views: no copy of the corpus
        self.y_streams = data[1: n + 1].reshape(batch_size, self.stream_len)

    def batches_per_epoch(self, offset: int = 0) -> int:
        """Full batches that fit after skipping offset characters of every stream."""
        if not 0 <= offset <= self.stream_len:
            raise ValueError(f"offset must be in [0, {self.stream_len}], got {offset}")
        return (self.stream_len - offset) // self.seq_len

    def batch(self, i: int, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) as C-contiguous int32 arrays of shape (batch_size, seq_len)."""
        n = self.batches_per_epoch(offset)
        if not 0 <= i < n:
            raise ValueError(f"batch index {i} out of range [0, {n}) for offset {offset}")
        start = offset + i * self.seq_len
        window = slice(start, start + self.seq_len)
        return (np.ascontiguousarray(self.x_streams[:, window], dtype=np.int32),
                np.ascontiguousarray(self.y_streams[:, window], dtype=np.int32))

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The batches of one epoch with offset 0."""
        return (self.batch(i) for i in range(self.batches_per_epoch()))


def eval_batches(data: np.ndarray, batch_size: int, seq_len: int) -> Batches | None:
    """Batches for evaluating a (small) split: batch_size shrinks so at least one batch fits.

    None when not even one stream of seq_len + 1 characters fits (e.g. val_fraction is 0).
    """
    b = min(batch_size, (len(data) - 1) // seq_len)
    return Batches(data, b, seq_len) if b >= 1 else None


def fit_batch_shape(n_train: int, batch_size: int, seq_len: int) -> tuple[int, int, str | None]:
    """(batch_size, seq_len, warning): the requested shape if one full batch fits, else a smaller one.

    Shrinking lowers batch_size first, then seq_len (not below 8), aiming at TARGET_BATCHES batches
    per epoch; the warning says what changed. UsageError if not even batch_size 1, seq_len 8 fits.
    """
    if batch_size < 1 or seq_len < 1:
        raise UsageError(f"batch_size and seq_len must be >= 1, got {batch_size} and {seq_len}",
                         "set both to positive integers")
    usable = n_train - 1  # the last character is only ever a target
    if usable // batch_size >= seq_len:
        return batch_size, seq_len, None
    min_seq = min(seq_len, MIN_SEQ_LEN)  # never raise a seq_len the user set below 8
    if usable < min_seq:
        raise UsageError(f"corpus too small: {n_train} characters in the train split, need at least {min_seq + 1}",
                         "use a larger file or lower val_fraction/test_fraction")
    b = usable // (TARGET_BATCHES * seq_len)
    if b >= 1:
        t = seq_len
    else:
        b, t = 1, max(min_seq, min(seq_len, usable // TARGET_BATCHES))
    n_batches = (usable // b) // t
    warning = (f"the train split has only {n_train} characters, too few for batch_size {batch_size} x "
               f"seq_len {seq_len}; using batch_size {b}, seq_len {t} ({n_batches} batches per epoch)")
    return b, t, warning

"""Inverted-dropout masks from a counter-based hash: mask[i] = keep (= 1/(1-p)) or 0, decided by 32 bits
of splitmix64(key + (i // 2 + 1) * golden) (two masks per 64-bit hash).

Why not the Generator: `rng.random((T, B, H)) >= p`, cast and scaled, walks the masks four times and
draws 32-bit floats one by one: 11.6 ms per step for the default 2x256 LSTM (B64 T100, two layers) on
the Xeon of 2026-12-03, about 8 % of its training step. The hash fills them in one pass. The model
draws one 64-bit key per layer and step from the run's one Generator, so the masks still follow the
seed and resume exactly (the Generator's state is in every checkpoint).

`fill_masks` runs the jitted loop; under NUMBA_DISABLE_JIT the same arithmetic runs vectorized in numpy
(tests/test_kernels.py checks the two give the same masks).
"""
import numba
import numpy as np

from .jit import kernel

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_LOW = np.uint64(0xFFFFFFFF)


@kernel
def _fill_jit(out, key, threshold, keep):
    n = out.size
    s30, s27, s31, s32 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(32)
    for j in range((n + 1) // 2):
        z = key + np.uint64(j + 1) * _GOLDEN
        z = (z ^ (z >> s30)) * _M1
        z = (z ^ (z >> s27)) * _M2
        z = z ^ (z >> s31)
        out[2 * j] = keep if (z & _LOW) >= threshold else 0.0
        if 2 * j + 1 < n:
            out[2 * j + 1] = keep if (z >> s32) >= threshold else 0.0


def _fill_numpy(out, key, threshold, keep):
    n = out.size
    with np.errstate(over="ignore"):
        z = key + (np.arange((n + 1) // 2, dtype=np.uint64) + np.uint64(1)) * _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        z = z ^ (z >> np.uint64(31))
    bits = np.stack([z & _LOW, z >> np.uint64(32)], axis=1).reshape(-1)[:n]
    out[:] = np.where(bits >= threshold, keep, 0.0)


@kernel
def _fill_rows_jit(out, key, threshold, keep, row_len, first):
    # out (T, W): row t holds elements first .. first+W-1 of row t of the whole (T, row_len) mask
    s30, s27, s31, s32 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(32)
    for t in range(out.shape[0]):
        for k in range(out.shape[1]):
            g = t * row_len + first + k
            z = key + np.uint64(g // 2 + 1) * _GOLDEN
            z = (z ^ (z >> s30)) * _M1
            z = (z ^ (z >> s27)) * _M2
            z = z ^ (z >> s31)
            bits = (z & _LOW) if g % 2 == 0 else (z >> s32)
            out[t, k] = keep if bits >= threshold else 0.0


def _fill_rows_numpy(out, key, threshold, keep, row_len, first):
    g = (np.arange(out.shape[0], dtype=np.uint64)[:, None] * np.uint64(row_len) + np.uint64(first)
         + np.arange(out.shape[1], dtype=np.uint64)[None, :])
    with np.errstate(over="ignore"):
        z = key + (g // np.uint64(2) + np.uint64(1)) * _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        z = z ^ (z >> np.uint64(31))
    bits = np.where(g % np.uint64(2) == 0, z & _LOW, z >> np.uint64(32))
    out[:] = np.where(bits >= threshold, keep, 0.0)


def fill_mask_columns(out: np.ndarray, key: int, p: float, row_len: int, first: int) -> None:
    """out (T, W), C-contiguous: columns first .. first+W-1 of the (T, row_len) mask fill_masks(key, p)
    makes, bit for bit (a rank of a distributed run fills its streams' share of a (T, B, H) mask)."""
    if not out.flags.c_contiguous or out.ndim != 2 or not 0 <= first <= row_len - out.shape[1]:
        raise ValueError("fill_mask_columns needs a C-contiguous (T, W) array inside the row")
    threshold = np.uint64(min(int(round(p * 2.0 ** 32)), 2 ** 32))
    keep = out.dtype.type(1.0 / (1.0 - p))
    fill = _fill_rows_numpy if numba.config.DISABLE_JIT else _fill_rows_jit
    fill(out, np.uint64(key), threshold, keep, np.int64(row_len), np.int64(first))


def fill_masks(out: np.ndarray, key: int, p: float) -> None:
    """out (any shape, C-contiguous float): 1/(1-p) with probability 1-p, else 0, from the 64-bit key."""
    if not out.flags.c_contiguous:
        raise ValueError("fill_masks needs a C-contiguous array")
    threshold = np.uint64(min(int(round(p * 2.0 ** 32)), 2 ** 32))
    keep = out.dtype.type(1.0 / (1.0 - p))
    fill = _fill_numpy if numba.config.DISABLE_JIT else _fill_jit
    fill(out.reshape(-1), np.uint64(key), threshold, keep)

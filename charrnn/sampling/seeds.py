"""The random-stream policy of sampling: one xoroshiro128++ generator per stream, seeded so that stream i's
generator depends on (seed, i) only (charrnn.sampling.generate's module docstring says what that buys)."""
import numpy as np

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15


def _mix64(z):
    """splitmix64's output function on uint64 numpy arrays (wrapping arithmetic)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def seed_streams(seed: int, num_streams: int) -> np.ndarray:
    """(num_streams, 2) uint64 xoroshiro128++ states: stream i gets outputs 2i+1 and 2i+2 of the
    splitmix64 sequence whose state starts at splitmix64(seed mod 2**64), so row i depends on (seed, i)
    only: seed_streams(S, n)[j] == seed_streams(S, j + 1)[j] for every n > j."""
    s = seed & _MASK64
    s = (s + _GOLDEN) & _MASK64
    s = int(_mix64(np.array([s], dtype=np.uint64))[0])
    k = np.arange(1, 2 * num_streams + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        states = _mix64(np.uint64(s) + k * np.uint64(_GOLDEN)).reshape(num_streams, 2)
    zero = (states == 0).all(axis=1)  # the all-zero state is xoroshiro's one fixed point
    states[zero, 0] = np.uint64(_GOLDEN)
    return np.ascontiguousarray(states)

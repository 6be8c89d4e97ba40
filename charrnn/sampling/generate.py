"""Sampling text from a model, and evaluating a model's likelihood of a text.

The sampling loop runs entirely inside one Numba kernel (charrnn.kernels.sampler.run_steps), on
one thread or, for models big enough to gain, on two (the calling thread and one helper, each owning
half of the hidden units, in step through spin barriers); the text is the same either way. This
module packs the weights per part, validates options, warms the state with the prime, seeds the
per-stream generators, and streams decoded text out chunk by chunk.

Choices (documented here once, referred to from the docstrings below):

* First character without a prime: the state starts at zero and the kernel is fed the newline
  character '\\n' if the vocabulary has one (a natural document boundary), else the character of id
  0 (the vocabulary's smallest code point). That seed character is not emitted.
* With a prime: the state is the zero state after feeding every prime character but the last; the
  first generated character is drawn after feeding the last prime character. The prime is not
  part of the returned text (the CLI echoes it).
* Random numbers: each stream has its own xoroshiro128++ generator. Stream i of a run with seed S
  starts from outputs 2i+1 and 2i+2 of the splitmix64 sequence whose state starts at
  splitmix64(S mod 2**64). So stream 0 of an N-stream run is byte for byte the 1-stream run with
  the same seed, and streams i > 0 are independent continuations of the same prime. seed=None draws
  S from os.urandom. The generated text depends on the seed only (not on `chunk`).
* Greedy decoding (argmax=True or temperature == 0, or top_k == 1) uses no random numbers, so every
  stream yields the same text.
"""
from __future__ import annotations

import math
import os
import weakref
from collections.abc import Callable, Sequence

import numpy as np

from ..data.corpus import Vocab
from ..errors import UsageError
from ..engine.kernels import sampler as K
from ..engine.kernels.sync import STRIDE
from ..engine.model import Model, State
from ..engine.params import GATES
from .stops import StopCutter, check_stops
from ..engine.threads import pool, usable_cores

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15


def _mix64(z):
    """splitmix64's output function on uint64 numpy arrays (wrapping arithmetic)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def seed_streams(seed: int, num_streams: int) -> np.ndarray:
    """(num_streams, 2) uint64 xoroshiro128++ states: stream i gets outputs 2i+1 and 2i+2 of the
    splitmix64 sequence whose state starts at splitmix64(seed mod 2**64) (see the module docstring)."""
    s = seed & _MASK64
    s = (s + _GOLDEN) & _MASK64
    s = int(_mix64(np.array([s], dtype=np.uint64))[0])
    k = np.arange(1, 2 * num_streams + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        states = _mix64(np.uint64(s) + k * np.uint64(_GOLDEN)).reshape(num_streams, 2)
    zero = (states == 0).all(axis=1)  # the all-zero state is xoroshiro's one fixed point
    states[zero, 0] = np.uint64(_GOLDEN)
    return np.ascontiguousarray(states)


# The hidden units are split into this many parts (charrnn.kernels.sampler explains the layout). A
# constant, not the core count: with one thread or two, the same per-part arithmetic gives the same text.
SAMPLE_PARTS = 2
# Below this many weight bytes per character the barriers cost more than a second core saves (measured
# crossover 350-450 KB: LSTM 1x128 at 292 KB is faster on one thread, LSTM 2x96 at 462 KB on two).
THREADS_MIN_BYTES = 384 * 1024


def _page_aligned_rows(rows: int, cols: int, dtype) -> np.ndarray:
    """A zeroed C-contiguous (rows, cols') array, cols' >= cols, whose rows each start on a 2 MB
    boundary when a row is big (>= 256 KB). Such an allocation is >= 4 MB, which numpy marks for
    transparent huge pages on Linux: each part's weights then sit in physically contiguous memory
    and spread evenly over the L2 cache's sets, instead of colliding where random 4 KB pages happen
    to share sets (measured +5-10 % sampling speed at 2x256, within the run-to-run noise here)."""
    item = np.dtype(dtype).itemsize
    if cols * item < (256 << 10):
        return np.zeros((rows, cols), dtype)
    huge = (2 << 20) // item
    stride = -(-cols // huge) * huge
    buf = np.zeros(rows * stride + huge, dtype)
    start = (-buf.ctypes.data % (2 << 20)) // item
    return buf[start:start + rows * stride].reshape(rows, stride)  # a view: keeps buf alive


class Sampler:
    """The sampling kernel bound to one model and a fixed number of streams.

    Holds the per-stream state, the previous character `prev` (the one the next step feeds), the
    generators, the workspaces, and a copy of the weights packed per part of the hidden units
    (refreshed by every reset(), so a trainer's samples use its current weights). Repeated calls
    neither allocate much nor recompile. Invariant: the state is the one after consuming everything
    before `prev`.

    threads: None = two threads when the machine has two usable cores and the model is big enough
    to gain (THREADS_MIN_BYTES), else 1 or 2 as given. The text never depends on it. After a call
    that raised (e.g. KeyboardInterrupt), the state is undefined until the next reset().
    """

    def __init__(self, model: Model, num_streams: int = 1, threads: int | None = None):
        if num_streams < 1:
            raise ValueError("num_streams must be >= 1")
        if threads not in (None, 1, SAMPLE_PARTS):
            raise ValueError(f"threads must be None, 1 or {SAMPLE_PARTS}")
        shape = model.shape
        self.shape = shape
        self._model = weakref.ref(model)  # the module cache is keyed weakly by the model
        self.num_streams = N = int(num_streams)
        self.threads = threads
        H, L, V = shape.hidden_size, shape.num_layers, shape.vocab_size
        P, g = SAMPLE_PARTS, GATES[shape.cell]
        dt = model.params.dtype
        self.cell_code = K.CELL_CODES[shape.cell]
        self._gates = g
        # part p owns hidden units lo[p]:hi[p]; its packed rows start at poff[p, k] (kernels/sampler.py)
        cuts = [(H * i + P - 1) // P for i in range(P + 1)]
        self._lo = np.array(cuts[:-1], np.int64)
        self._hi = np.array(cuts[1:], np.int64)
        self._rows = [(np.arange(g)[:, None] * H + np.arange(a, b)[None, :]).reshape(-1)
                      for a, b in zip(cuts[:-1], cuts[1:])]
        Gmax = max(r.size for r in self._rows)
        self._poff = np.full((P, L, 4), -1, np.int64)
        size = 0
        for p, rows in enumerate(self._rows):
            off = 0
            for k in range(L):
                for j, n in enumerate((rows.size * H if k else 0, rows.size * H, rows.size, rows.size)):
                    self._poff[p, k, j] = off
                    off += n
            size = max(size, off)
        self._pk = _page_aligned_rows(P, size, dt)
        self._tab = np.zeros((P, V, Gmax), dt)
        self._dec = np.zeros(V * H + V, dt)  # decoder.weight (V, H) then decoder.bias (V)
        self._packed = False
        self._step_bytes = (size * P + V * H) * dt.itemsize  # weights read per character
        self._hb = np.zeros((2, L, N, H), dt)
        self._q = 0  # the current state is _hb[_q]
        self.c = np.zeros((L, N, H), dt) if shape.cell == "lstm" else np.zeros((0, 0, 0), dt)
        self._flags = np.zeros(P * STRIDE, np.int64)
        # per thread: its own copy of prev and the generators (every thread draws the same) + workspaces
        self._prevs = np.zeros((P, N), np.int32)
        self._rngs = np.zeros((P, N, 2), np.uint64)
        self._logits = np.zeros((P, N, V), dt)
        self._p = np.zeros((P, V), np.float64)
        self._keys = np.zeros((P, V), np.float64)
        self._order = np.zeros((P, V), np.int64)
        self._gx = np.zeros((P, N, Gmax), dt)
        self._gh = np.zeros((P, N, Gmax), dt)

    @property
    def model(self) -> Model:
        model = self._model()
        if model is None:
            raise ReferenceError("the sampler's model no longer exists")
        return model

    @property
    def prev(self) -> np.ndarray:
        """(N) int32: the id each stream feeds next."""
        return self._prevs[0]

    @property
    def rng(self) -> np.ndarray:
        """(N, 2) uint64: the xoroshiro128++ state of each stream."""
        return self._rngs[0]

    @property
    def state(self) -> State:
        """A copy of the current state as a Model State (h (L, N, H), c for LSTM)."""
        return State(self._hb[self._q].copy(), self.c.copy() if self.shape.cell == "lstm" else None)

    def start_id(self, vocab: Vocab | None) -> int:
        """The character fed first when there is no prime: '\\n' if in the vocabulary, else id 0."""
        if vocab is not None and "\n" in vocab.chars:
            return vocab.chars.index("\n")
        return 0

    def reset(self, prime_ids: np.ndarray | None = None, seed: int | None = 0, *, start: int = 0) -> None:
        """Re-read the model's weights; zero state; with a non-empty prime, feed all but its last id
        and make that last id `prev`; without one, `prev` = start (see the module docstring).
        seed None leaves the generators alone."""
        ids = np.asarray(prime_ids if prime_ids is not None else [], dtype=np.int32).reshape(-1)
        V = self.shape.vocab_size
        if ids.size and (ids.min() < 0 or ids.max() >= V):
            raise ValueError("prime ids outside the vocabulary")
        if not ids.size and not 0 <= start < V:
            raise ValueError("start id outside the vocabulary")
        self._pack()
        self._hb[:] = 0
        self._q = 0
        self.c[:] = 0
        if ids.size > 1:
            self._launch(np.empty((self.num_streams, 0), np.int32), np.ascontiguousarray(ids[:-1]),
                         1.0, 0, 1.0, True)
        self.prev[:] = ids[-1] if ids.size else start
        if seed is not None:
            self.rng[:] = seed_streams(int(seed), self.num_streams)

    def _pack(self) -> None:
        """Copy each part's weight rows (and its columns of layer 0's input table) and the decoder from
        the model: a call samples from the weights of the last reset(), whatever happened since."""
        model = self.model
        params = model.params
        if params.shape != self.shape or params.dtype != self._hb.dtype:
            raise ValueError("the model's parameter layout changed under the sampler")
        table = model.input_table() + params["rnn.bias_ih_l0"]
        for p, rows in enumerate(self._rows):
            self._tab[p, :, :rows.size] = table[:, rows]
            for k in range(self.shape.num_layers):
                names = (f"rnn.weight_ih_l{k}", f"rnn.weight_hh_l{k}", f"rnn.bias_ih_l{k}", f"rnn.bias_hh_l{k}")
                for j, name in enumerate(names):
                    if k == 0 and j in (0, 2):
                        continue  # layer 0's input side lives in the table
                    part = params[name][rows].reshape(-1)
                    o = self._poff[p, k, j]
                    self._pk[p, o:o + part.size] = part
        nd = params["decoder.weight"].size
        self._dec[:nd] = params["decoder.weight"].reshape(-1)
        self._dec[nd:] = params["decoder.bias"]
        self._packed = True

    def threads_for(self, steps: int) -> int:
        """How many threads a call of `steps` characters runs on (see the class docstring)."""
        if self.threads is not None:
            return self.threads
        if steps < 8 or self._step_bytes < THREADS_MIN_BYTES or usable_cores() < SAMPLE_PARTS:
            return 1
        return SAMPLE_PARTS

    def _launch(self, out: np.ndarray, forced: np.ndarray, temperature: float, top_k: int, top_p: float,
                greedy: bool) -> None:
        """Run kernels.sampler.run_steps on one thread or one per part (this thread is thread 0)."""
        steps = forced.shape[0] + out.shape[1]
        nthreads = self.threads_for(steps)
        self._flags[:] = 0
        self._prevs[1:] = self._prevs[0]
        self._rngs[1:] = self._rngs[0]

        def run(me: int) -> None:
            try:
                K.run_steps(me, nthreads, self._flags, out, forced, self._hb, self._q, self.c, self._prevs[me],
                            self._rngs[me], self._pk, self._poff, self._tab, self._lo, self._hi, self._gates,
                            self._dec, 0, self._dec.size - self.shape.vocab_size, self.cell_code, temperature, top_k, top_p, greedy,
                            self._gx, self._gh, self._logits[me], self._p[me], self._order[me],
                            self._keys[me])
            except BaseException:
                # never leave the other threads spinning at a barrier this one will not reach (e.g. a
                # KeyboardInterrupt before the kernel started): they run to the end on stale data
                self._flags[me * STRIDE] = np.iinfo(np.int64).max
                raise

        if nthreads == 1:
            run(0)
        else:
            futures = [pool().submit(run, me) for me in range(1, nthreads)]
            try:
                run(0)
            finally:
                for f in futures:
                    f.result()
        self._q ^= steps & 1

    def run(self, n: int, *, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
            greedy: bool = False, out: np.ndarray | None = None) -> np.ndarray:
        """Generate n ids per stream, (num_streams, n) int32, carrying state and generators."""
        if out is None or out.shape != (self.num_streams, n):
            out = np.empty((self.num_streams, n), np.int32)
        if not self._packed:
            self._pack()
        greedy = bool(greedy) or temperature == 0
        top_k = 0 if top_k >= self.shape.vocab_size else max(int(top_k), 0)  # all characters: one int64 type
        self._launch(out, np.zeros(0, np.int32), float(temperature) if not greedy else 1.0, top_k,
                     float(top_p), greedy)
        return out


_SAMPLERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def sampler_for(model: Model, num_streams: int = 1) -> Sampler:
    """A cached Sampler for (model, num_streams): the trainer's periodic samples reuse its buffers.
    Rebuilt if the model's shape or dtype changed. A few stream counts are kept per model."""
    per_model = _SAMPLERS.setdefault(model, {})
    s = per_model.get(num_streams)
    if s is None or s.c.dtype != model.params.dtype or s.shape != model.params.shape:
        if len(per_model) >= 4:
            per_model.clear()
        s = per_model[num_streams] = Sampler(model, num_streams)
    return s


def _check_int(name: str, value, minimum: int, hint: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise UsageError(f"{name} must be an integer >= {minimum}, got {value!r}", hint)
    return int(value)


def _check_float(name: str, value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise UsageError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v):
        raise UsageError(f"{name} must be a finite number, got {value!r}")
    return v


def sample(model: Model, vocab: Vocab, length: int, *, temperature: float = 1.0, prime: str = "",
           top_k: int = 0, top_p: float = 1.0, argmax: bool = False, seed: int | None = None,
           num_samples: int = 1, prime_unknown: str = "error",
           on_text: Callable[[int, str], object] | None = None, chunk: int | None = None,
           stop: str | Sequence[str] | None = None) -> list[str]:
    """num_samples continuations of `prime`, each `length` characters (the prime is not included).

    temperature >= 0 (0 = greedy); top_k 0 (off) or >= 1 (keep the k most probable, ties by lower
    id); 0 < top_p <= 1 (nucleus: keep the smallest most-probable set of cumulative probability
    >= top_p after top-k, at least one); argmax: greedy decoding (no seed needed). Filtering is
    applied to softmax(logits / temperature) and the kept probabilities are renormalised.
    prime_unknown: 'error' (UsageError listing prime characters missing from the vocabulary) or
    'skip' (drop them). seed: int for reproducible text, None for os.urandom. on_text(i, piece) is
    called with stream i's newly generated text after every `chunk` characters (for streaming;
    default 256 with on_text or stop, else 1024: fewer hand-offs to the sampler's second thread, while
    Ctrl-C still lands within a fraction of a second).
    stop: a string or several; each text ends just before the first occurrence of any of them in the
    generated text (the prime is not searched), so it can be shorter than `length`. Generation stops
    once every stream has met one; on_text never receives text past a stop string (stops.StopCutter).
    The first-character rule and the per-stream seed policy are in the module docstring.
    """
    length = _check_int("length", length, 1, "ask for at least one character")
    temperature = _check_float("temperature", temperature)
    if temperature < 0:
        raise UsageError(f"temperature must be >= 0, got {temperature:g}", "use 0 for greedy decoding")
    top_k = _check_int("top-k", top_k, 0, "use 0 to disable top-k filtering")
    top_p = _check_float("top-p", top_p)
    if not 0 < top_p <= 1:
        raise UsageError(f"top-p must be in (0, 1], got {top_p:g}", "use 1 to disable nucleus filtering")
    num_samples = _check_int("num-samples", num_samples, 1, "ask for at least one sample")
    if not isinstance(prime, str):
        raise UsageError(f"prime must be a str, got {type(prime).__name__}", "decode bytes first, e.g. b.decode()")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
        raise UsageError(f"seed must be an integer or None, got {seed!r}")
    if prime_unknown not in ("error", "skip"):
        raise UsageError(f"prime_unknown must be 'error' or 'skip', got {prime_unknown!r}")
    stops = check_stops(stop)
    if chunk is None:
        chunk = 256 if on_text is not None or stops else 1024
    chunk = _check_int("chunk", chunk, 1, "use a positive chunk size")
    if vocab.size != model.vocab_size:
        raise UsageError(f"the vocabulary has {vocab.size} characters but the model expects "
                         f"{model.vocab_size}", "use the vocabulary saved with the checkpoint")
    if prime and prime_unknown == "error":
        bad = vocab.unknown_chars(prime)
        if bad:
            shown = ", ".join(repr(ch) for ch in bad[:10]) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
            raise UsageError(f"the prime has {len(bad)} character(s) not in the model's vocabulary: {shown}",
                             "remove them from the prime or pass --prime-unknown skip")
    prime_ids = vocab.encode(prime, unknown="skip") if prime else np.zeros(0, np.int32)

    greedy = bool(argmax) or temperature == 0 or top_k == 1
    if seed is None and not greedy:
        seed = int.from_bytes(os.urandom(8), "little")
    sm = sampler_for(model, num_samples)
    sm.reset(prime_ids, 0 if seed is None else int(seed), start=sm.start_id(vocab))

    pieces: list[list[str]] = [[] for _ in range(num_samples)]
    cutters = [StopCutter(stops) for _ in range(num_samples)] if stops else None

    def emit(i: int, piece: str) -> None:
        pieces[i].append(piece)
        if on_text is not None and (piece or cutters is None):
            on_text(i, piece)

    buf = np.empty((num_samples, min(chunk, length)), np.int32)
    done = 0
    while done < length and not (cutters and all(c.done for c in cutters)):
        n = min(chunk, length - done)
        out = sm.run(n, temperature=temperature, top_k=top_k, top_p=top_p, greedy=greedy,
                     out=buf if n == buf.shape[1] else None)
        text = vocab.decode(out)  # all streams at once, then split
        for i in range(num_samples):
            piece = text[i * n:(i + 1) * n]
            emit(i, cutters[i].feed(piece) if cutters else piece)
        done += n
    for i, c in enumerate(cutters or ()):
        emit(i, c.finish())  # the text ended on what might have begun a stop string: it did not
    return ["".join(p) for p in pieces]


def evaluate(model: Model, ids: np.ndarray, chunk: int = 4096) -> tuple[float, int]:
    """(sum of the negative log-likelihood in nats, count) of ids read as one continuous stream
    (B = 1) from a zero state: N ids give N-1 predictions (ids[t+1] from ids[:t+1]). Runs Model.loss
    over chunks of `chunk` predictions, carrying the state; the chunk size does not change the result
    beyond float rounding."""
    ids = np.asarray(ids).reshape(-1)
    if ids.size < 2:
        raise UsageError(f"evaluation needs at least 2 characters, got {ids.size}",
                         "evaluate a longer text")
    if chunk < 1:
        raise ValueError("chunk must be >= 1")
    state = model.zero_state(1)
    total = 0.0
    n = ids.size - 1
    for i in range(0, n, chunk):
        T = min(chunk, n - i)
        x = ids[i:i + T].reshape(1, T)
        y = ids[i + 1:i + T + 1].reshape(1, T)
        loss, state = model.loss(x, y, state)
        total += float(loss)
    return total, n

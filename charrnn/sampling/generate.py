"""Sampling text from a model, and evaluating a model's likelihood of a text.

The sampling loop runs entirely inside one Numba kernel (charrnn.kernels.sampler.run_steps), driven by
charrnn.sampling.multistream.Sampler: one stream's hidden units split over as many threads as pay off, several
streams spread over the cores; the text is the same on any thread count. This module validates options,
warms the state with the prime, seeds the per-stream generators, and streams decoded text out chunk by
chunk.

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

from ..data.vocab import Vocab, unknown_error
from ..engine.model import Model
from ..errors import UsageError
from .multistream import Sampler, seed_streams
from .stops import StopCutter, check_stops

__all__ = ["Sampler", "evaluate", "sample", "sampler_for", "seed_streams"]

_SAMPLERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def sampler_for(model: Model, num_streams: int = 1) -> Sampler:
    """A cached Sampler for (model, num_streams): the trainer's periodic samples reuse its buffers.
    Rebuilt if the model's shape or dtype changed. A few stream counts are kept per model."""
    per_model = _SAMPLERS.setdefault(model, {})
    s = per_model.get(num_streams)
    if s is None or s._dtype != model.params.dtype or s.shape != model.params.shape:
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
    length, temperature, top_k, top_p, num_samples = _checked(length, temperature, top_k, top_p, num_samples,
                                                              prime, seed, prime_unknown)
    stops = check_stops(stop)
    if chunk is None:
        chunk = 256 if on_text is not None or stops else 1024
    chunk = _check_int("chunk", chunk, 1, "use a positive chunk size")
    prime_ids = _prime_ids(model, vocab, prime, prime_unknown)
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


def _checked(length, temperature, top_k, top_p, num_samples, prime, seed, prime_unknown) -> tuple:
    """sample()'s arguments checked (UsageError naming the one that is wrong), as (length, temperature,
    top_k, top_p, num_samples)."""
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
    return length, temperature, top_k, top_p, num_samples


def _prime_ids(model: Model, vocab: Vocab, prime: str, prime_unknown: str) -> np.ndarray:
    if vocab.size != model.vocab_size:
        raise UsageError(f"the vocabulary has {vocab.size} characters but the model expects "
                         f"{model.vocab_size}", "use the vocabulary saved with the checkpoint")
    if prime and prime_unknown == "error":
        bad = vocab.unknown_chars(prime)
        if bad:
            raise unknown_error(bad, "the prime", "the model's vocabulary",
                                "remove them from the prime or pass --prime-unknown skip")
    return vocab.encode(prime, unknown="skip") if prime else np.zeros(0, np.int32)


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

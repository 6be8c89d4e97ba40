"""What a request becomes in the sampler: a Job of streams (one per prompt and choice), and the slots of
one model version's multi-stream Sampler those streams run in (continuous batching: streams join with a
restart of their slots and leave by going inactive, between two calls)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from ..sampling.multistream import Sampler
from ..sampling.stops import StopCutter

__all__ = ["Job", "Settings", "Slots", "Stream", "random_seed"]


@dataclass(frozen=True)
class Settings:
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0

    @property
    def greedy(self) -> bool:
        """As generate.sample decides it: greedy decoding draws no random numbers."""
        return self.temperature == 0 or self.top_k == 1


@dataclass(eq=False)
class Stream:
    job: Job
    index: int          # the choice's index in the response
    prime: np.ndarray   # int32 ids
    choice: int         # j: it draws from generate.seed_streams(seed, n)[j]
    cutter: StopCutter | None
    done: int = 0       # characters drawn so far


@dataclass(eq=False)
class Job:
    """One request: for each prompt, n choices (choice index = prompt * n + j), each a stream."""

    version: object  # engine.Version (which imports this module): the model, its vocabulary, its name
    prompts: list[np.ndarray]
    n: int
    seed: int
    settings: Settings
    length: int
    stops: tuple[str, ...] = ()
    cancelled: bool = False
    streams: list[Stream] = field(default_factory=list)
    inbox: object = None  # the event loop's side: where its text goes (an asyncio.Queue)

    def __post_init__(self):
        self.streams = [Stream(self, p * self.n + j, ids, j, StopCutter(self.stops) if self.stops else None)
                        for p, ids in enumerate(self.prompts) for j in range(self.n)]


def random_seed() -> int:
    return int.from_bytes(os.urandom(8), "little")


class Slots:
    """The running streams of one model version: the slots of one multi-stream Sampler (sized to the
    server's capacity; a free slot is inactive and costs nothing)."""

    def __init__(self, version, capacity: int):
        self.version = version
        self.sampler = Sampler(version.model, capacity)
        self.sampler.pack()
        self.start = self.sampler.start_id(version.vocab)
        self.streams: dict[Stream, int] = {}
        self._free = list(range(capacity - 1, -1, -1))
        self._active = np.zeros(capacity, bool)
        self._temperature = np.ones(capacity)
        self._top_k = np.zeros(capacity, np.int64)
        self._top_p = np.ones(capacity)
        self._greedy = np.zeros(capacity, bool)

    def join(self, streams: list[Stream]) -> None:
        """Restart a free slot for each stream, every prime fed in one call (Sampler.restart_many)."""
        slots = [self._free.pop() for _ in streams]
        with self._one_thread():
            self.sampler.restart_many(slots, [s.prime for s in streams], [s.job.seed for s in streams],
                                      [s.choice for s in streams], start=self.start)
        for s, slot in zip(streams, slots):
            st = s.job.settings
            self._temperature[slot], self._top_k[slot], self._top_p[slot] = st.temperature, st.top_k, st.top_p
            self._greedy[slot] = st.greedy
            self._active[slot] = True
            self.streams[s] = slot

    def leave(self, s: Stream) -> None:
        slot = self.streams.pop(s)
        self._active[slot] = False
        self._free.append(slot)

    def run(self, k: int, only: list[Stream] | None = None) -> dict[Stream, np.ndarray]:
        """k characters for every stream, or for `only` these (on one thread: see _one_thread)."""
        active = self._active
        if only is not None:
            active = np.zeros_like(self._active)
            active[[self.streams[s] for s in only]] = True
        with self._one_thread(only is not None):
            out = self.sampler.run(k, temperature=self._temperature, top_k=self._top_k, top_p=self._top_p,
                                   greedy=self._greedy, active=active)
        return {s: out[self.streams[s]] for s in (self.streams if only is None else only)}

    class _Threads:
        def __init__(self, sampler: Sampler, threads):
            self.sampler, self.threads = sampler, threads

        def __enter__(self):
            self.saved, self.sampler.threads = self.sampler.threads, self.threads

        def __exit__(self, *exc):
            self.sampler.threads = self.saved

    def _one_thread(self, yes: bool = True) -> _Threads:
        """Newcomers' calls (their primes, their first characters) run on one thread: the other core is
        left to the event loop, which is parsing the requests that arrived with them, and no spin barrier
        waits for a descheduled partner on a busy machine (measured on 2 cores at load 10, LSTM 2x256, a
        32-character prime: 15-19 ms on one thread, 40-250 ms on two)."""
        return self._Threads(self.sampler, 1 if yes else self.sampler.threads)

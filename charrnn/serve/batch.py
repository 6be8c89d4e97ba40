"""What a request becomes in the sampler: a Job of streams (one per prompt and choice), and the slots of
one model version's multi-stream Sampler those streams run in (continuous batching: streams join with a
restart of their slots and leave by going inactive, between two calls)."""
from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from ..sampling.multistream import Sampler
from ..sampling.stops import StopCutter

__all__ = ["Job", "Settings", "Slots", "Stream", "random_seed"]

JOIN_THREADS_MIN = 4  # newcomers joining in one call from which their primes may use several threads
# States after a prime kept for reuse (an LSTM 2x256's is 4 KB): a server sees the same primes again
# (a page's default, an app's fixed prompt); at 32 clients feeding primes took 16 % of the engine's time.
PRIMED_KEPT = 256


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
    held: str = ""      # text drawn but not yet handed to the event loop (engine._take)
    handed: int | None = None  # `done` at the last hand-over (None: nothing handed over yet)


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
        self._primed: OrderedDict[bytes, tuple] = OrderedDict()  # prime ids but the last -> the state they leave

    def join(self, streams: list[Stream]) -> None:
        """Restart a free slot for each stream. A prime fed here before restarts from the state it left
        (kept in `_primed`, least recently used dropped first): the state after a prime depends only on
        its ids and the weights, never on the slot, the neighbours or the thread count, so it is exactly
        what feeding it again would give. The other primes are fed in one call (Sampler.restart_many)."""
        slots = [self._free.pop() for _ in streams]
        keys = [np.asarray(s.prime, np.int32)[:-1].tobytes() for s in streams]
        kept = [i for i, key in enumerate(keys) if key in self._primed]
        fresh = [i for i, key in enumerate(keys) if key not in self._primed]
        for group, primes in ((fresh, [streams[i].prime for i in fresh]),
                              (kept, [streams[i].prime[-1:] for i in kept])):  # last id only: nothing to feed
            with self._one_thread(len(group) < JOIN_THREADS_MIN):
                self.sampler.restart_many([slots[i] for i in group], primes, [streams[i].job.seed for i in group],
                                          [streams[i].choice for i in group], start=self.start)
        for i in kept:
            self.sampler.set_slot_state(slots[i], *self._primed[keys[i]])
            self._primed.move_to_end(keys[i])
        for i in fresh:
            if len(streams[i].prime) > 1:
                self._primed[keys[i]] = self.sampler.slot_state(slots[i])
                while len(self._primed) > PRIMED_KEPT:
                    self._primed.popitem(last=False)
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

    def run(self, k: int) -> dict[Stream, np.ndarray]:
        """k characters for every stream."""
        out = self.sampler.run(k, temperature=self._temperature, top_k=self._top_k, top_p=self._top_p,
                               greedy=self._greedy, active=self._active)
        return {s: out[slot] for s, slot in self.streams.items()}

    class _Threads:
        def __init__(self, sampler: Sampler, threads):
            self.sampler, self.threads = sampler, threads

        def __enter__(self):
            self.saved, self.sampler.threads = self.sampler.threads, self.threads

        def __exit__(self, *exc):
            self.sampler.threads = self.saved

    def _one_thread(self, yes: bool = True) -> _Threads:
        """A few newcomers' primes are fed on one thread: the other core is left to the event loop, which
        is parsing the requests that arrived with them, and no spin barrier waits for a descheduled
        partner on a busy machine (measured on 2 cores at load 10, LSTM 2x256, a 32-character prime:
        15-19 ms on one thread, 40-250 ms on two). From JOIN_THREADS_MIN streams on, the sampler's own
        plan splits them into groups of whole streams (no barriers) over its threads: at 32 clients
        one-thread joins of ~10 streams took 16 ms each, 15 % of the engine's time."""
        return self._Threads(self.sampler, 1 if yes else self.sampler.threads)

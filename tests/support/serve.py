"""A real `charrnn serve` for the tests: a subprocess on 127.0.0.1 at a free port (--port 0; the port is
read from its "listening on" line), tiny random-weight checkpoints, and an optional slowdown so a test
can catch a request in flight (a sitecustomize run at interpreter start, as tests/terminal.py does)."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from charrnn.checkpoints import meta as meta_of
from charrnn.checkpoints import npz as checkpoint
from charrnn.checkpoints import store
from charrnn.data.vocab import Vocab
from charrnn.engine.model import Model
from charrnn.engine.params import Params, Shape, init_params
from support.runs import ENGLISH_LINES

VOCAB = Vocab("".join(ENGLISH_LINES) + "\n")
START_TIMEOUT = 120.0  # a hang, not slowness: the first start compiles nothing (numba's cache) but imports a lot

# Each engine call sleeps this long first: about `chars` characters a second per stream, so a test can
# act while a request is in flight. The text is unchanged (it does not depend on the characters per call).
SLOW = """
import time
from charrnn.serve import batch, engine
_chunk, _run = engine.Engine._chunk, batch.Slots.run
engine.Engine._chunk = lambda self, seconds: min(_chunk(self, seconds), {chunk})
def run(self, k):
    time.sleep({delay})
    return _run(self, k)
batch.Slots.run = run
"""


def write_checkpoint(path, H: int = 24, L: int = 1, seed: int = 0, cell: str = "lstm", step: int = 7) -> Path:
    """A checkpoint of a model with random weights (scale 0.5), written the way charrnn writes its own."""
    shape = Shape(cell, VOCAB.size, H, L, 0)
    p = Params(shape)
    init_params(p, np.random.default_rng(seed), scale=0.5)
    meta = {"model": meta_of.shape_meta(shape), "vocab": VOCAB.chars, "progress": {"step": step},
            "losses": {"val_loss": 2.0 - step / 1000}}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.save(path, store.model_arrays(Model(shape, p)), meta)
    return path


class Server:
    """`charrnn serve ARGS --port 0` in a subprocess; .url once it listens; stderr kept in .log."""

    def __init__(self, *args, env: dict | None = None, slow: tuple[float, int] | None = None):
        self.args = [sys.executable, "-m", "charrnn", "serve", *map(str, args), "--port", "0"]
        full = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
        full.pop("CHARRNN_API_KEY", None) if "CHARRNN_API_KEY" not in (env or {}) else None
        self._site = None
        if slow is not None:
            self._site = tempfile.TemporaryDirectory(prefix="serve-slow-")
            Path(self._site.name, "sitecustomize.py").write_text(SLOW.format(delay=slow[0], chunk=slow[1]))
            full["PYTHONPATH"] = os.pathsep.join(filter(None, [self._site.name, full.get("PYTHONPATH")]))
        self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, env=full, text=True, encoding="utf-8")
        self.lines: list[str] = []
        self._seen = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        m = self.wait_for(r"listening on (http://\S+?)\s")
        self.url = m.group(1)

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self._seen:
                self.lines.append(line.rstrip("\n"))
                self._seen.notify_all()
        with self._seen:
            self.lines.append("")  # EOF marker: the process closed its output
            self._seen.notify_all()

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = START_TIMEOUT) -> re.Match:
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        with self._seen:
            while True:
                for line in self.lines:
                    m = rx.search(line + "\n")
                    if m:
                        return m
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and self.lines and self.lines[-1] == ""):
                    raise AssertionError(f"no line matching {pattern!r} from {self.args}:\n{self.log}")
                self._seen.wait(min(left, 0.5))

    def signal(self, sig=signal.SIGTERM) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            if self._site is not None:
                self._site.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

"""The models a server offers, by name (requests name models, never files), and --watch: a run that is
still training is served from its newest best.npz, switched to when it changes."""
from __future__ import annotations

import os
import re
import threading
from pathlib import Path

from .engine import CharrnnError, UsageError, Version, load_version, log, resolve_checkpoint

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")


def default_name(path: str) -> str:
    """A run directory's name; for a checkpoint file inside a run (best.npz, last.npz...), the run's."""
    p = Path(path).resolve()
    if p.is_file() and p.suffix == ".npz" and (p.stem in ("best", "last") or p.stem.startswith("step")):
        p = p.parent
    elif p.is_file():
        return re.sub(r"[^A-Za-z0-9._:-]", "-", p.stem).lstrip("-._:") or "model"
    return re.sub(r"[^A-Za-z0-9._:-]", "-", p.name).lstrip("-._:") or "model"


def _signature(path: Path) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class Registry:
    """name -> the Version served now. Watched runs are polled every `poll_s` seconds by one thread;
    a changed best.npz is loaded and verified there and swapped in with one assignment, so a request
    takes whichever version is current when it starts and keeps it to its end."""

    def __init__(self, paths: list[str], watch: list[str], names: list[str], poll_s: float = 1.0):
        sources = [(p, False) for p in paths] + [(p, True) for p in watch]
        if not sources:
            raise UsageError("no model to serve", "give a checkpoint or run directory, or --watch RUN")
        if len(names) > len(sources):
            raise UsageError(f"{len(names)} --name values for {len(sources)} model(s)",
                             "give at most one --name per model, in the order the models are given")
        self.poll_s = poll_s
        self.current: dict[str, Version] = {}
        self._watched: dict[str, tuple[Path, tuple | None]] = {}
        for i, (path, watched) in enumerate(sources):
            name = names[i] if i < len(names) else default_name(path)
            if not NAME.fullmatch(name):
                raise UsageError(f"model name {name!r} is not allowed",
                                 "use --name with 1-64 letters, digits, '.', '_', ':' or '-'")
            if name in self.current:
                raise UsageError(f"two models are named {name!r}", "give each one a --name")
            if watched and not Path(path).is_dir():
                raise UsageError(f"--watch {path}: not a run directory", "pass the run directory charrnn train writes")
            self.current[name] = v = load_version(name, path)
            if watched:
                self._watched[name] = (Path(path), _signature(v.path))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.switches = 0

    def get(self, name: str | None) -> Version | None:
        """The named model, or the first one when name is None; None if there is no such model."""
        if name is None:
            return next(iter(self.current.values()))
        return self.current.get(name)

    def watched(self, name: str) -> bool:
        return name in self._watched

    def start(self) -> None:
        if self._watched:
            self._thread = threading.Thread(target=self._poll, name="charrnn-serve-watch", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_s):
            for name, (run, seen) in list(self._watched.items()):
                try:
                    path = resolve_checkpoint(run)
                except CharrnnError:
                    continue  # between a rename and the next one: look again later
                sig = _signature(path)
                if sig is None or sig == seen:
                    continue
                self._watched[name] = (run, sig)
                try:
                    new = load_version(name, path)
                except CharrnnError as e:
                    log.warning("--watch %s: kept serving step %s: %s", run, self.current[name].step, e.one_line())
                    continue
                old, self.current[name] = self.current[name], new
                old.retired = True
                self.switches += 1
                log.warning("model %r now serves %s (%s)", name, path, new.describe())

"""Atomic file writes: every file charrnn writes under a real name (checkpoints, config.yaml, logs
rewritten on resume, the corpus cache, `sample --output`) goes to a temp file in the target's directory,
is fsynced and then renamed over the target, so a crash or `kill -9` leaves the old complete file, the
new complete file, or a temp file -- never half a file under a real name.

Temp files are named here and recognised here (`temp_owner`), so the run directory's cleanup
(checkpoints/rundir.py) removes exactly what a killed writer left.
"""
import contextlib
import os
import re
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import IO

from .userfiles import utf8

# ".{target name}.tmp-{pid}-{random hex}": hidden, and recognisable by temp_owner.
_TEMP_RE = re.compile(r"\..+\.tmp-(\d+)-[0-9a-f]+")


def temp_path(target: Path) -> Path:
    """A fresh temp name next to target: same directory, so os.replace is an atomic rename."""
    return target.with_name(f".{target.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")


def temp_owner(name: str) -> int | None:
    """The pid that wrote a temp file of this name, None if the name is not one of our temp files."""
    m = _TEMP_RE.fullmatch(name)
    return int(m.group(1)) if m else None


def fsync_dir(directory: Path) -> None:
    """Persist a rename by fsyncing its directory; best effort (not possible on every OS/FS)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None], mode: int | None = None) -> None:
    """Call write(f) on a temp file, fsync it, and rename it onto path; clean up on failure.
    mode: permission bits for the new file (default: what open() gives under the umask)."""
    target = Path(path)
    tmp = temp_path(target)
    # Open outside the try: if "x" mode fails the name belongs to someone else; don't unlink it.
    f = open(tmp, "xb")
    try:
        with f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:  # includes KeyboardInterrupt: still clean up, then re-raise
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(target.parent)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Atomically replace path with text (UTF-8, a lone surrogate escaped), e.g. config.yaml next to the
    checkpoints."""
    data = utf8(text)
    atomic_write(path, lambda f: f.write(data))

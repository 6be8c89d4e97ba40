"""The files a user names: read with a bound, written as text that survives any code point, and never
an output that is one of the same command's inputs.

Every file charrnn reads on a user's word (a text to evaluate, a prime, a config) goes through
read_bounded: a regular file is refused above a size cap before a byte is read; anything else (a pipe,
a FIFO, a device such as /dev/zero) is read up to the same cap and refused beyond it, and a stream
that sends nothing for STREAM_WAIT_S seconds (a FIFO nobody writes to) is refused instead of waited on.

refuse_input is the one rule for every file charrnn writes where a user points it (sample --output, eval
--per-char, the pictures and pages, export, a run directory's files against its corpus): never the same
file, by device and inode after following links, as an input of the same command.

A vocabulary may hold lone surrogates (a corpus read with `--encoding unicode_escape` turns `\\ud800`
into one), which UTF-8 cannot encode: every text charrnn writes is encoded with ENCODE_ERRORS, which
writes such a code point as its escape (`\\ud800`) instead of failing.
"""
from __future__ import annotations

import codecs
import errno
import os
import select
import stat
import time
from pathlib import Path

from .errors import UsageError

TEXT_CAP = 256 << 20  # bytes: a text to evaluate, a prime, an activations page's text
CONFIG_CAP = 1 << 20  # bytes: a YAML config (the bundled ones are about 4 KB)
HEAD_BYTES = 8  # what read_bounded's head() sees: enough for any magic number charrnn sniffs
STREAM_WAIT_S = 10.0  # seconds a stream may stay silent before it is refused
ENCODE_ERRORS = "backslashreplace"


def utf8(text: str) -> bytes:
    """text as UTF-8, a lone surrogate written as its escape (\\ud800) instead of an error."""
    return text.encode("utf-8", ENCODE_ERRORS)


def tolerant_streams() -> None:
    """Make stdout and stderr write a lone surrogate as its escape too (a sample, `info --json`)."""
    import sys
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors=ENCODE_ERRORS)
        except (AttributeError, ValueError, OSError):  # not a TextIOWrapper (closed, or a test's buffer)
            pass


def _mib(n: int) -> str:
    return f"{n / (1 << 20):g} MiB"


def read_bounded(path: str | os.PathLike, cap: int, what: str = "", head=None) -> bytes:
    """The bytes of path, at most `cap` of them; a one-line UsageError for a missing file, a directory,
    a file or stream longer than the cap, or a stream silent for STREAM_WAIT_S seconds. head(first bytes),
    if given, sees the first HEAD_BYTES (fewer at the end) and may stop the read there by returning False:
    what came so far is returned (a device that is not what was asked for is not read to the cap)."""
    shown = f"{what} {os.fspath(path)}".strip()
    try:
        # O_NONBLOCK: opening a FIFO that has no writer returns at once instead of blocking.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise UsageError(f"{shown} does not exist (file not found)", "check the path") from None
    except IsADirectoryError:
        raise UsageError(f"{shown} is a directory, not a file", "pass the path of a file") from None
    except OSError as e:
        raise UsageError(f"cannot read {shown}: {e.strerror or e}", "check the path and its permissions") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise UsageError(f"{shown} is a directory, not a file", "pass the path of a file")
        if stat.S_ISREG(st.st_mode):
            if st.st_size > cap:
                raise UsageError(f"{shown} is {_mib(st.st_size)}, more than the {_mib(cap)} charrnn reads "
                                 "from one such file", "pass a shorter file (e.g. cut it with head -c)")
            os.set_blocking(fd, True)
            return _read_all(fd, cap, shown, False, head)
        return _read_all(fd, cap, shown, True, head)
    except OSError as e:
        raise UsageError(f"cannot read {shown}: {e.strerror or e}", "check the path and its permissions") from None
    finally:
        os.close(fd)


def _read_all(fd: int, cap: int, shown: str, stream: bool, head) -> bytes:
    """Read fd to its end, refusing more than cap bytes; a stream waits at most STREAM_WAIT_S per read."""
    chunks, total = [], 0
    while True:
        if stream and not _wait_readable(fd):
            raise UsageError(f"{shown} sent no data for {STREAM_WAIT_S:g} s (a FIFO nobody writes to?)",
                             "start the writer first, or save the text to a file")
        try:
            chunk = os.read(fd, min(1 << 20, cap + 1 - total))
        except BlockingIOError:
            continue
        chunks.append(chunk)
        total += len(chunk)
        if head is not None and (total >= HEAD_BYTES or not chunk):
            if not head(b"".join(chunks)[:HEAD_BYTES]):
                return b"".join(chunks)
            head = None
        if not chunk:
            return b"".join(chunks)
        if total > cap:
            kind = "stream" if stream else "file"
            raise UsageError(f"{shown} is a {kind} of more than {_mib(cap)}, the most charrnn reads from one",
                             "save a shorter text to a regular file and pass that")


def _wait_readable(fd: int) -> bool:
    """Whether fd has data (or its end) within STREAM_WAIT_S seconds. A FIFO opened without a writer
    reads as readable only once one comes; a device such as /dev/zero always is."""
    deadline = time.monotonic() + STREAM_WAIT_S
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        try:
            ready, _, _ = select.select([fd], [], [], left)
        except InterruptedError:
            continue
        except (OSError, ValueError) as e:  # a descriptor select cannot watch: just read it
            if getattr(e, "errno", None) in (errno.EBADF, None):
                return True
            raise
        if ready:
            return True


def read_text(path: str | Path, encoding: str = "utf-8", errors: str = "strict", cap: int = TEXT_CAP,
              what: str = "") -> str:
    """A whole text file (a file to evaluate, a prime file), read with read_bounded and decoded. Unlike
    a training corpus, any text will do (one distinct character is fine here)."""
    try:
        codecs.lookup(encoding)
        codecs.lookup_error(errors)
    except LookupError as e:
        raise UsageError(f"{e}", "use a Python codec such as utf-8 or latin-1, and errors strict or replace") from None
    raw = read_bounded(path, cap, what)
    try:
        text = raw.decode(encoding, errors)
    except UnicodeDecodeError as e:
        raise UsageError(f"{path} is not valid {encoding}: {e.reason} at byte offset {e.start}",
                         "use --encoding <codec> or --errors replace") from None
    except UnicodeError as e:  # e.g. utf-16 without a BOM
        raise UsageError(f"{path} cannot be read as {encoding}: {e}",
                         "use --encoding <codec> with the file's real encoding") from None
    except (TypeError, AttributeError):  # a bytes-to-bytes codec such as rot13 or hex
        raise UsageError(f"{encoding} is not a text encoding", "use a codec such as utf-8 or latin-1") from None
    return text.removeprefix("\ufeff")


def _identity(path: str | os.PathLike) -> tuple[int, int] | None:
    """(device, inode) of the file path names after following every link, None if there is none."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return (st.st_dev, st.st_ino)


def refuse_input(output: str | os.PathLike | None, inputs: dict[str, object]) -> None:
    """UsageError when `output` is the same file (device and inode, links followed: a symlink, a hard
    link or another spelling of the path) as one of `inputs` ({what it is: path or paths}), the
    command's inputs, which writing would destroy. Streams (a pipe, a terminal, /dev/null) may be both
    read and written; only a regular file or a directory is refused."""
    if output is None:
        return
    try:
        st = os.stat(output)
    except (OSError, ValueError):  # not there yet (or unnamable): cannot be an existing input
        return
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        return
    mine = (st.st_dev, st.st_ino)
    for what, paths in inputs.items():
        for p in paths if isinstance(paths, (list, tuple)) else [paths]:
            if p is not None and _identity(p) == mine:
                same = "" if os.path.abspath(p) == os.path.abspath(output) else f" (the same file as {p})"
                raise UsageError(f"{output} is {what}{same}: writing it would destroy the input",
                                 "choose another output file")

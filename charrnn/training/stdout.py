"""Standard output for a training run that must not die of it: a stream that turns a failed write (a full
disk under `train > log`, a closed pipe) into one warning while training goes on, and the check whether
stdout and stderr are one terminal. report.py's Reporter writes through it; the CLI silences a stream
whose write failed."""

import os
import sys


def silence(stream) -> None:
    """Point a standard stream's descriptor at /dev/null after writing to it failed (full disk, closed
    pipe), so nothing written later, nor the interpreter's final flush at exit, fails again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, stream.fileno())
        finally:
            os.close(devnull)
    except (OSError, AttributeError, ValueError):
        pass


class GuardedStdout:
    """stdout for the progress lines: if it cannot be written (a full disk under `train > log`, a closed
    or broken pipe), training goes on with its files and stderr; the first failure is reported once.

    The stream is bound once, when the Reporter is made. It must not be looked up as ``sys.stdout`` at
    write time: while the live bar runs, rich replaces ``sys.stdout`` with a proxy that writes back into
    this very console, and every write then looped forever (issue 12: `charrnn train` hung in a terminal).
    """

    def __init__(self, warn, stream=None) -> None:
        self._warn = warn
        self._stream = sys.stdout if stream is None else stream
        self._failed = False

    @property
    def encoding(self) -> str:
        return getattr(self._stream, "encoding", None) or "utf-8"

    def isatty(self) -> bool:
        if self._failed or self._stream is None:
            return False
        try:
            return self._stream.isatty()
        except (OSError, ValueError, AttributeError):  # a closed stream is not a terminal
            return False

    def _guard(self, fn) -> None:
        if self._failed or self._stream is None:
            return
        try:
            fn()
        except (OSError, ValueError) as e:  # BrokenPipeError included; ValueError: a closed stream
            self._failed = True
            silence(self._stream)
            reason = getattr(e, "strerror", None) or e
            self._warn(f"cannot write progress to standard output ({reason}); training goes on, "
                       "metrics.jsonl and samples.txt keep the record")

    def write(self, text: str) -> int:
        self._guard(lambda: self._stream.write(text))
        return len(text)

    def flush(self) -> None:
        self._guard(lambda: self._stream.flush())


def same_terminal(a, b) -> bool:
    """Whether two output streams are one terminal (stderr not redirected away from stdout's tty)."""
    a, b = (getattr(f, "_stream", f) for f in (a, b))  # a GuardedStdout's stream
    try:
        return (a.isatty() and b.isatty()
                and os.fstat(a.fileno()).st_rdev == os.fstat(b.fileno()).st_rdev)
    except (OSError, ValueError, AttributeError):  # closed, or no descriptor (a StringIO)
        return False

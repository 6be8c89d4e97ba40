"""Run the installed `charrnn` command the way a person does: in a pseudo-terminal.

Every other test redirects stdout to a pipe or a file, where rich prints plain lines; a person sees
the live bar, panels and tables drawn on a terminal, which is a different code path (issue 12: train
hung only there). This module starts the venv's `charrnn` console script with a pty as its controlling
terminal (fixed size, TERM=xterm-256color, no COLUMNS/LINES), reads everything it draws in a
background thread, and fails with the screen as it was when a wait runs out, killing the process group.

    from support.pty import Terminal, run

    t = run(["info", "run/best.npz"], cwd=tmp)     # start, wait for the exit, return the Terminal
    assert t.code == 0 and "parameters" in t.text  # t.text: the output with escapes stripped

    with Terminal(["train", "corpus.txt", "--out", "r"], cwd=tmp) as t:
        t.expect(r"step \\d+")                      # a regex over t.text; fails on a hang
        t.send("\\x03")                              # Ctrl-C, through the terminal's line discipline
        assert t.wait() == 130
        print("\\n".join(t.screen()))               # what the person sees now, rendered by pyte

    Terminal(args, startup=CODE)  # run CODE in the command's interpreter first (a sitecustomize), e.g. to
                                  # slow each training step down so a test can pick its moment
    Terminal(args, stderr=path)   # stderr to a file, stdout (and stdin) the terminal; stdout=path: the reverse
    t.resize(40, 30)              # the window changes size: the kernel sends SIGWINCH to the foreground group

Waits are generous (DEFAULT_TIMEOUT) because they catch hangs, not slowness: nothing here asserts on speed.
"""
from __future__ import annotations

import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import tempfile
import termios
import threading
import time
from pathlib import Path

from support.exe import charrnn_command

__all__ = ["DEFAULT_TIMEOUT", "Hang", "Terminal", "charrnn_command", "render", "run", "run_in_pty", "strip_ansi"]

# A hang is the bug class this catches; a slow shared CI core is not: far longer than any command here takes.
DEFAULT_TIMEOUT = float(os.environ.get("CHARRNN_TERMINAL_TIMEOUT", "150"))
COLS, ROWS = 100, 30

# CSI (colours, cursor moves, erase), OSC (titles, hyperlinks; ended by BEL or ST) and two-byte escapes.
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
# Variables that would make rich ignore the terminal it is on (its size, or whether it is one).
_SCRUB = ("COLUMNS", "LINES", "JUPYTER_COLUMNS", "JUPYTER_LINES", "NO_COLOR", "FORCE_COLOR",
          "TTY_COMPATIBLE", "TTY_INTERACTIVE", "DATABRICKS_RUNTIME_VERSION")


class Hang(AssertionError):
    """A wait ran out: the message carries the command, what was awaited and the screen at that moment."""


def strip_ansi(text: str) -> str:
    """`text` without escape sequences (\\r and \\n kept: the stream, not the screen)."""
    return _ANSI.sub("", text)


def render(events, cols: int = COLS, rows: int = ROWS, *, history: bool = False) -> list[str]:
    """Replay recorded output through the pyte terminal emulator; return the screen's lines.

    events: Terminal.events ((time, bytes) chunks and (time, ("resize", cols, rows)) markers), or bytes.
    history=True renders on a screen as tall as the output, so lines a real terminal would have scrolled
    off the top are kept (the live bar only moves the cursor relative to itself, so this is the same
    picture): the whole session as a person could scroll back through it. Trailing blank lines dropped.
    """
    import pyte
    if isinstance(events, (bytes, bytearray)):
        events = [(0.0, bytes(events))]
    tall = 10_000 if history else rows
    screen = pyte.Screen(cols, tall)
    stream = pyte.ByteStream(screen)
    for _, item in events:
        if isinstance(item, tuple):  # ("resize", cols, rows)
            screen.resize(tall if history else item[2], item[1])
        else:
            stream.feed(item)
    lines = [line.rstrip() for line in screen.display]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def _set_size(fd: int, cols: int, rows: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _take_terminal() -> None:
    """In the child, after setsid (start_new_session): make the pty on fd 0 the controlling terminal, so
    Ctrl-C typed into it is a SIGINT for this process group, as in a shell."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Terminal:
    """`charrnn *args` running in a pseudo-terminal of cols x rows. Starts at once; use as a context
    manager (or call kill()) so a failing test never leaves it running.

    stdout / stderr: a path to redirect that stream to a file (truncated) instead of the terminal.
    env: extra environment variables (added to a copy of os.environ). cmd: argv prefix, default the
    installed charrnn. startup: Python source run at interpreter start (as sitecustomize.py, first on
    PYTHONPATH), before the command. Attributes: code (exit status once finished, -N for a signal),
    raw (bytes drawn), events (timestamped chunks, for render()), text (raw decoded, escapes stripped).
    """

    def __init__(self, args, *, cwd=None, cols: int = COLS, rows: int = ROWS, env=None, stdout=None, stderr=None,
                 timeout: float = DEFAULT_TIMEOUT, cmd=None, startup: str | None = None):
        self.argv = [*(cmd or [charrnn_command()]), *map(str, args)]
        self.cols, self.rows, self.timeout = cols, rows, timeout
        self.events: list[tuple[float, object]] = []
        self.code: int | None = None
        self._raw = bytearray()
        self._eof = False
        self._seen = 0  # expect() searches text after the end of its previous match
        self._cond = threading.Condition()
        full_env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
        # PYTHONFAULTHANDLER: a command that hangs is sent SIGABRT before it is killed, and Python then
        # writes every thread's stack to the terminal (see _hang), so the failure says where it hung.
        full_env.update(TERM="xterm-256color", PYTHONFAULTHANDLER="1", **(env or {}))
        self._startup_dir = None
        if startup is not None:
            self._startup_dir = tempfile.TemporaryDirectory(prefix="terminal-startup-")
            Path(self._startup_dir.name, "sitecustomize.py").write_text(startup, encoding="utf-8")
            first = [self._startup_dir.name, full_env.get("PYTHONPATH")]
            full_env["PYTHONPATH"] = os.pathsep.join(p for p in first if p)
        master, slave = os.openpty()
        _set_size(slave, cols, rows)
        files = [open(p, "wb") if p is not None else None for p in (stdout, stderr)]
        out, err = (slave if f is None else f for f in files)
        try:
            self.proc = subprocess.Popen(self.argv, cwd=cwd, env=full_env, stdin=slave, stdout=out, stderr=err,
                                         start_new_session=True, preexec_fn=_take_terminal, close_fds=True)
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)  # only the child holds the slave now: its exit gives the master EOF
            for f in files:
                if f is not None:
                    f.close()
        self.master = master
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    # -- reading ---------------------------------------------------------------------------------------
    def _read(self) -> None:
        """Drain the master all the time, so the child never blocks on a full pty buffer."""
        while True:
            try:
                ready, _, _ = select.select([self.master], [], [], 0.5)
                data = os.read(self.master, 65536) if ready else None
            except OSError:  # EIO: every slave descriptor closed (the command and its children exited)
                data = b""
            if data is None:
                continue
            with self._cond:
                if data:
                    self._raw += data
                    self.events.append((time.monotonic(), data))
                else:
                    self._eof = True
                self._cond.notify_all()
            if not data:
                return

    @property
    def raw(self) -> bytes:
        with self._cond:
            return bytes(self._raw)

    @property
    def text(self) -> str:
        return strip_ansi(self.raw.decode("utf-8", "replace"))

    def screen(self, *, history: bool = False) -> list[str]:
        """The terminal's lines as a person sees them now (see render())."""
        with self._cond:
            events = list(self.events)
        return render(events, self.cols, self.rows, history=history)

    def _hang(self, what: str, waited: float) -> Hang:
        shown = "\n".join(self.screen(history=True)[-60:])
        running = self.proc.poll() is None
        stacks = self._stacks() if running else ""
        self.kill()
        why = "still running, killed (a hang?)" if running else f"exit status {self.proc.returncode}"
        return Hang(f"`{' '.join(self.argv[1:])}` did not {what} within {waited:.0f} s; {why}; "
                    f"the terminal showed:\n{shown}{stacks}")

    def _stacks(self) -> str:
        """SIGABRT to a hung command: faulthandler (PYTHONFAULTHANDLER) writes every thread's Python stack
        to the terminal; what it wrote, for the Hang's message."""
        with self._cond:
            mark = len(self._raw)
        try:
            os.kill(self.proc.pid, signal.SIGABRT)
            self.proc.wait(timeout=5)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        self._reader.join(timeout=2)
        with self._cond:
            dump = strip_ansi(bytes(self._raw[mark:]).decode("utf-8", "replace"))
        lines = [ln for ln in dump.splitlines() if not ln.startswith("Extension modules:")]
        return "\nits threads when it was stopped (faulthandler):\n" + "\n".join(lines[-80:]) if lines else ""

    def expect(self, pattern: str, timeout: float | None = None) -> re.Match:
        """Wait until the regex appears in text after the previous match; return the match. A Hang
        (with the screen) when it does not appear in time, or the command ends without drawing it."""
        timeout = self.timeout if timeout is None else timeout
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                m = rx.search(strip_ansi(self._raw.decode("utf-8", "replace")), self._seen)
                if m:
                    self._seen = m.end()
                    return m
                left = deadline - time.monotonic()
                if left <= 0 or self._eof:
                    break
                self._cond.wait(min(left, 0.5))
        if self._eof:
            self.code = self.proc.wait()
            raise self._hang(f"show /{pattern}/ before it exited", time.monotonic() - deadline + timeout)
        raise self._hang(f"show /{pattern}/", timeout)

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the exit and for everything it drew; return the exit status (a Hang on time out)."""
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        try:
            self.code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise self._hang("exit", timeout) from None
        with self._cond:  # a child it left holding the terminal would delay EOF: do not wait for ever
            while not self._eof and time.monotonic() < deadline:
                self._cond.wait(0.5)
        return self.code

    # -- typing, resizing, ending ----------------------------------------------------------------------
    def send(self, keys: str | bytes) -> None:
        """Type keys into the terminal: "\\x03" is Ctrl-C (a SIGINT to the foreground process group)."""
        os.write(self.master, keys.encode() if isinstance(keys, str) else keys)

    def resize(self, cols: int, rows: int) -> None:
        """Change the window size as a terminal emulator does; the kernel then sends SIGWINCH."""
        _set_size(self.master, cols, rows)
        with self._cond:
            self.cols, self.rows = cols, rows
            self.events.append((time.monotonic(), ("resize", cols, rows)))

    def kill(self) -> None:
        """SIGKILL the command's whole process group if it is still running; close the terminal."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.code = self.proc.wait()
        self._reader.join(timeout=5)
        if self.master is not None:
            os.close(self.master)
            self.master = None
        if self._startup_dir is not None:
            self._startup_dir.cleanup()
            self._startup_dir = None

    def __enter__(self) -> Terminal:
        return self

    def __exit__(self, *exc) -> None:
        self.kill()


def run(args, **kwargs) -> Terminal:
    """Start `charrnn *args` in a terminal (Terminal's keywords), wait for it to end; return the Terminal."""
    t = Terminal(args, **kwargs)
    try:
        t.wait()
    finally:
        t.kill()
    return t


def run_in_pty(args, cwd, timeout: float = 180.0, keep_escapes: bool = False) -> tuple[int, str]:
    """(exit code, output with \r\n as \n) of `charrnn *args` run to its end on the terminal; escape
    sequences removed unless keep_escapes (then the bytes decoded as they came). A hang fails (Hang)."""
    t = run(args, cwd=cwd, timeout=timeout)
    out = t.raw.decode("utf-8", errors="replace") if keep_escapes else t.text
    return t.code, out.replace("\r\n", "\n")

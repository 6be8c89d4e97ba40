"""What the user sees while training, and the run's log files.

This is the only module below the CLI that prints. Training code hands every step's
numbers to a :class:`Reporter`, which shows them (a live rich progress bar on a terminal,
plain lines otherwise, so piped output and CI logs stay readable) and appends them to
``run_dir/metrics.jsonl`` and ``run_dir/samples.txt``.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from rich.cells import cell_len
from rich.console import Console
from rich.constrain import Constrain
from rich.panel import Panel
from rich.progress import BarColumn, Progress, TaskID, TextColumn
from rich.table import Table
from rich.text import Text

from ..checkpoints import rundir
from ..userfiles import ENCODE_ERRORS
from .stdout import GuardedStdout, same_terminal, silence

__all__ = ["Reporter", "estimate_eta", "format_duration"]


# Weight of the newest step in the smoothed train loss. Per-step losses on small batches
# are noisy; 0.1 averages over roughly the last 10-20 steps, so the shown loss still
# follows the fast early drop without jittering.
SMOOTHING = 0.1

# The narrowest bar worth drawing beside the numbers; with less room the numbers go under the bar.
MIN_BAR = 10

# Keys every step() dict must carry; they are written first, in this order.
REQUIRED_KEYS = ("step", "epoch", "train_loss", "lr", "chars_per_sec", "elapsed_s")


def format_duration(seconds: float | None) -> str:
    """``H:MM:SS`` for a number of seconds; ``-:--:--`` when unknown (None or not finite)."""
    if seconds is None or not math.isfinite(seconds):
        return "-:--:--"
    total = max(0, int(round(seconds)))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def estimate_eta(
    step: int,
    elapsed_s: float,
    *,
    total_steps: int | None,
    max_time: float | None,
    base_step: int = 0,
    base_elapsed: float = 0.0,
) -> float | None:
    """Seconds until training stops, or None when it cannot be known yet.

    The step rate is measured from a baseline (``base_step`` reached at ``base_elapsed``)
    rather than from zero: the Reporter sets the baseline at the first step it sees,
    which keeps Numba's JIT compile time in step 1, and the steps done before a resume,
    out of the rate. With both limits set, training stops at whichever comes first, so
    the smaller estimate wins.
    """
    estimates: list[float] = []
    if total_steps is not None:
        if step >= total_steps:
            return 0.0
        if step > base_step:
            per_step = (elapsed_s - base_elapsed) / (step - base_step)
            estimates.append(max(0.0, per_step) * (total_steps - step))
    if max_time is not None:
        estimates.append(max(0.0, max_time - elapsed_s))
    return min(estimates) if estimates else None


def _json_value(value: Any) -> Any:
    """Make one metric JSON-safe: numpy scalars become Python numbers, NaN/inf become null.

    Plain ``json.dumps`` would write ``NaN``, which is not valid JSON and breaks strict
    readers (jq, JavaScript) of a diverged run's log.
    """
    if hasattr(value, "item") and not isinstance(value, (str, bytes, list, dict)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _format_value(value: object) -> str:
    """A header value for display: thousands separators on ints (parameter counts)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _open_log(path: Path, append: bool) -> IO[str]:
    """Open a UTF-8 log file for appending or truncation, line-terminated with ``\\n``."""
    # a lone surrogate in a sample (a vocabulary read with an escape codec) is written as its escape
    handle = path.open("a" if append else "w", encoding="utf-8", errors=ENCODE_ERRORS, newline="\n")
    # A crash mid-write can leave a partial last line; start on a fresh line so the
    # first resumed record is not glued onto it.
    if append and handle.tell() > 0:
        with path.open("rb") as existing:
            existing.seek(-1, 2)
            if existing.read(1) != b"\n":
                handle.write("\n")
    return handle


class _TrainProgress(Progress):
    """The live bar: `step N/M ━━━━ epoch 1 | loss ... | eta 0:01:23` on one line when the terminal is
    wide enough, else the step and the bar on one line and the numbers wrapped on the lines below. One
    row cut to the width lost what matters most: a 40-column terminal showed `ste… epoch 1 | loss 3.36 |
    val 3.34…`, no step count, no speed, no ETA."""

    def get_renderables(self):
        # Two columns stay free on the right: the terminal echoes a typed Ctrl-C as "^C" after the bar,
        # and on a full-width line that echo wrapped, leaving a stale copy of the bar above the next one.
        step_column, bar_column, _ = self.columns
        for task in self.tasks:
            width = max(self.console.width - 2, 1)
            status = task.fields["status"]
            step = step_column(task)
            if cell_len(step.plain) + 1 + MIN_BAR + 1 + cell_len(status) <= width:
                yield Constrain(self.make_tasks_table([task]), width)
                continue
            row = Table.grid(step_column.get_table_column().copy(), bar_column.get_table_column().copy(),
                             padding=(0, 1))
            row.add_row(step, bar_column(task))
            yield Constrain(row, width)
            yield Constrain(Text(status), width)


class Reporter:
    """Shows training progress and writes ``metrics.jsonl`` / ``samples.txt`` in ``run_dir``.

    Use as a context manager (or call :meth:`close`) so the live display is stopped and
    the files are closed even when training fails.
    """

    def __init__(
        self,
        run_dir: Path,
        *,
        total_steps: int | None,
        max_time: float | None,
        live: bool | None = None,
        console: Console | None = None,
        log_every: int = 10,
        append: bool = False,
        err_console: Console | None = None,
    ) -> None:
        if log_every < 1:
            raise ValueError(f"log_every must be >= 1, got {log_every}")
        self.run_dir = Path(run_dir)
        self.total_steps = total_steps
        self.max_time = max_time
        self.log_every = log_every
        # Warnings go to stderr so they survive `charrnn train > log`. A Console writes to the real
        # stderr even while the live bar redirects sys.stderr, so when stderr is the bar's own terminal
        # warn() prints through the bar's console instead (above the bar, not into its line).
        self.err_console = err_console if err_console is not None else Console(stderr=True)
        self.console = console if console is not None else Console(file=GuardedStdout(self.warn))
        self._warn_above_bar = same_terminal(self.console.file, self.err_console.file)
        self.live = self.console.is_terminal if live is None else live
        self.smoothed_loss: float | None = None
        self.last_val_loss: float | None = None
        self._base: tuple[int, float] | None = None  # (step, elapsed_s) of the first step
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._closed = False
        # Files are opened here, not in start(), so step() works even without a header.
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._logs: dict[str, IO[str] | None] = {}
        try:
            for name in (rundir.METRICS, rundir.SAMPLES):
                self._logs[name] = _open_log(self.run_dir / name, append)
        except OSError as e:
            self.close()
            from ..errors import CharrnnError
            raise CharrnnError(f"cannot open {self.run_dir / name}: {e.strerror or e}",
                               "check the run directory (free space, permissions)") from None

    # -- context manager -------------------------------------------------------------
    def __enter__(self) -> Reporter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- public API ------------------------------------------------------------------
    def start(self, header: dict[str, object]) -> None:
        """Print the run header (model, parameters, corpus, ...) and start the live bar."""
        if self.live:
            table = Table.grid(padding=(0, 2))
            table.add_column(style="bold cyan", no_wrap=True)
            table.add_column()
            for key, value in header.items():
                table.add_row(Text(str(key)), Text(_format_value(value)))
            self.console.print(table)
            self._start_live()
        else:
            for key, value in header.items():
                self._plain(f"{key}: {_format_value(value)}")

    def step(self, m: dict[str, Any]) -> None:
        """Record one completed training step (called every step; cheap unless logged)."""
        step, elapsed = int(m["step"]), float(m["elapsed_s"])
        loss = float(m["train_loss"])
        if self.smoothed_loss is None or not math.isfinite(self.smoothed_loss):
            self.smoothed_loss = loss  # also restarts smoothing after a NaN step
        else:
            self.smoothed_loss += SMOOTHING * (loss - self.smoothed_loss)
        if self._base is None:
            self._base = (step, elapsed)
        val = m.get("val_loss")
        if val is not None:
            self.last_val_loss = float(val)
        logged = step % self.log_every == 0 or val is not None
        if logged:
            self._write_metrics(m)
        eta = estimate_eta(
            step,
            elapsed,
            total_steps=self.total_steps,
            max_time=self.max_time,
            base_step=self._base[0],
            base_elapsed=self._base[1],
        )
        if self.live:
            self._update_live(m, eta)
        elif logged:
            parts = [f"step {step:,}", f"epoch {m['epoch']}", f"loss {self.smoothed_loss:.4f}"]
            if val is not None:
                parts.append(f"val {float(val):.4f}")
            parts.append(f"{float(m['chars_per_sec']):,.0f} chars/s")
            parts.append(format_duration(elapsed))
            if eta is not None:
                parts.append(f"eta {format_duration(eta)}")
            self._plain(" | ".join(parts))

    def sample(self, step: int, text: str) -> None:
        """Show generated text and append it to ``samples.txt`` (printed literally)."""
        self._log(rundir.SAMPLES, f"=== step {step} ===\n{text}\n\n")
        if self.live:
            # Text(), not a markup string: a sample containing "[bold]" must show as is.
            self.console.print(Panel(Text(text), title=f"sample @ step {step}", expand=False))
        else:
            self._plain(f"--- sample @ step {step} ---")
            self._plain(text)

    def info(self, msg: str) -> None:
        """Print a one-line message (above the live bar when it runs)."""
        if self.live:
            self.console.print(Text(msg))
        else:
            self._plain(msg)

    def warn(self, msg: str) -> None:
        """Print ``warning: msg`` in yellow on the error console. A stderr that cannot be written (a
        closed pipe, a full disk under `2>&1`) never stops training: the run's files keep the record.
        While the live bar runs and stderr is its terminal, the warning goes above the bar instead."""
        text = Text(f"warning: {msg}", style="yellow")
        try:
            if self._progress is not None and self._warn_above_bar and self.console.is_terminal:
                self.console.print(text, soft_wrap=True)  # printed above the bar, which is redrawn below
            else:
                self.err_console.print(text, soft_wrap=True)
        except OSError:
            silence(sys.stderr)

    def end(self, ending, epoch: int, elapsed_s: float, show: bool = True) -> None:
        """The run ended (an endings.Ending): stop the bar, say why and how to go on, and end
        metrics.jsonl with a record {"event": "end", "reason": ...}."""
        self._log("metrics.jsonl", json.dumps(ending.record(epoch, _json_value(elapsed_s)), ensure_ascii=False) + "\n")
        if self._progress is not None:
            self._progress.stop()  # the line goes below the finished bar, not above it
            self._progress = None
        if show:
            for line in ending.line().splitlines():
                self._plain(line)

    def close(self) -> None:
        """Stop the live display and close the log files; safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        for handle in self._logs.values():
            if handle is not None:
                try:
                    handle.close()
                except OSError:  # the buffered rest could not be written: warned about already or now
                    pass

    # -- internals -------------------------------------------------------------------
    def _plain(self, line: str) -> None:
        # soft_wrap: a log file must not get newlines inserted at the console width;
        # Text: "[...]" and ":emoji:" in user text are printed literally.
        self.console.print(Text(line), soft_wrap=True)

    def _write_metrics(self, m: dict[str, Any]) -> None:
        record = {key: _json_value(m[key]) for key in REQUIRED_KEYS}
        for key, value in m.items():
            if key not in record and not (key == "val_loss" and value is None):
                record[key] = _json_value(value)
        record["train_loss_smooth"] = _json_value(self.smoothed_loss)
        # allow_nan=False: _json_value already mapped non-finite floats to null.
        self._log(rundir.METRICS, json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n")

    def _log(self, name: str, text: str) -> None:
        """Append to a log file and flush (a crash must not lose logged steps). A log that cannot be
        written (a full disk) is warned about once and then left alone: the checkpoints keep the run."""
        handle = self._logs.get(name)
        if handle is None:
            return
        try:
            handle.write(text)
            handle.flush()
        except OSError as e:
            self._logs[name] = None
            with contextlib.suppress(OSError):
                handle.close()
            self.warn(f"cannot write {self.run_dir / name} ({e.strerror or e}); training goes on without it")

    def _start_live(self) -> None:
        if self._progress is not None or self._closed:
            return
        self._progress = _TrainProgress(
            TextColumn("[bold]step[/] {task.fields[step_text]}"),
            BarColumn(),
            TextColumn("{task.fields[status]}", markup=False),
            console=self.console,
            refresh_per_second=4,  # the bar is for humans; spare the training loop
        )
        # Without total_steps, a max_time run shows the fraction of its time budget used.
        total = self.total_steps if self.total_steps is not None else self.max_time
        self._task = self._progress.add_task("train", total=total, step_text="0", status="")
        self._progress.start()

    def _update_live(self, m: dict[str, Any], eta: float | None) -> None:
        self._start_live()  # step() before start() still gets a bar
        if self._progress is None or self._task is None:
            return
        step = int(m["step"])
        step_text = f"{step:,}"
        if self.total_steps is not None:
            step_text += f"/{self.total_steps:,}"
            completed = float(step)
        elif self.max_time is not None:
            completed = min(float(m["elapsed_s"]), self.max_time)
        else:
            completed = float(step)
        val = "-" if self.last_val_loss is None else f"{self.last_val_loss:.4f}"
        status = (
            f"epoch {m['epoch']} | loss {self.smoothed_loss:.4f} | val {val} | "
            f"{float(m['chars_per_sec']):,.0f} chars/s | eta {format_duration(eta)}"
        )
        self._progress.update(self._task, completed=completed, step_text=step_text, status=status)

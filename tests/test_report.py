"""Tests for charrnn.training.report: log files, plain/live output and the ETA helper."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from charrnn.training.report import Reporter, estimate_eta, format_duration

BASE_KEYS = {"step", "epoch", "train_loss", "lr", "chars_per_sec", "elapsed_s", "train_loss_smooth"}


def plain_console() -> Console:
    return Console(file=io.StringIO(), force_terminal=False)


def live_console() -> Console:
    return Console(file=io.StringIO(), force_terminal=True, width=100)


def output(console: Console) -> str:
    return console.file.getvalue()  # type: ignore[attr-defined]


def metrics(step: int, loss: float, **extra: object) -> dict:
    m = {
        "step": step,
        "epoch": 1 + step // 100,
        "train_loss": loss,
        "lr": 0.002,
        "chars_per_sec": 31204.4,
        "elapsed_s": step * 0.5,
    }
    m.update(extra)
    return m


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def make(tmp_path: Path, console: Console, **kw: object) -> Reporter:
    kw.setdefault("total_steps", 100)
    kw.setdefault("max_time", None)
    err = plain_console()
    return Reporter(tmp_path, console=console, err_console=err, **kw)  # type: ignore[arg-type]


def test_metrics_only_on_log_every_and_val_steps(tmp_path: Path) -> None:
    losses = [2.0 + 0.01 * i for i in range(25)]
    with make(tmp_path, plain_console(), log_every=10) as r:
        for i, loss in enumerate(losses, start=1):
            r.step(metrics(i, loss, val_loss=1.5 if i == 7 else None))
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    assert [row["step"] for row in rows] == [7, 10, 20]
    assert set(rows[0]) == BASE_KEYS | {"val_loss"}
    assert set(rows[1]) == BASE_KEYS  # no val_loss key when not evaluated
    # Raw step loss with full float precision, smoothed loss as a separate key.
    assert rows[1]["train_loss"] == losses[9]
    assert rows[1]["train_loss_smooth"] != losses[9]
    assert rows[0]["val_loss"] == 1.5


def test_metrics_extra_keys_numpy_and_nan(tmp_path: Path) -> None:
    with make(tmp_path, plain_console(), log_every=1) as r:
        r.step(metrics(1, np.float32(2.5), grad_norm=np.float64(0.25), epoch=np.int64(1)))
        r.step(metrics(2, float("nan")))
    lines = (tmp_path / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    first, second = (json.loads(line) for line in lines)
    assert first["grad_norm"] == 0.25 and first["train_loss"] == 2.5 and first["epoch"] == 1
    assert second["train_loss"] is None  # NaN written as null, so the file stays valid JSON
    assert "NaN" not in lines[1]


def test_smoothed_loss_starts_at_first_value(tmp_path: Path) -> None:
    with make(tmp_path, plain_console()) as r:
        r.step(metrics(1, 3.0))
        assert r.smoothed_loss == 3.0
        r.step(metrics(2, 1.0))
        assert 1.0 < r.smoothed_loss < 3.0
        assert r.smoothed_loss > 2.5  # alpha is small


def test_truncate_vs_append(tmp_path: Path) -> None:
    with make(tmp_path, plain_console(), log_every=1) as r:
        r.step(metrics(1, 2.0))
        r.sample(1, "first")
    with make(tmp_path, plain_console(), log_every=1, append=True) as r:
        r.step(metrics(2, 1.9))
        r.sample(2, "second")
    assert [row["step"] for row in read_jsonl(tmp_path / "metrics.jsonl")] == [1, 2]
    assert (tmp_path / "samples.txt").read_text(encoding="utf-8").count("=== step") == 2
    with make(tmp_path, plain_console(), log_every=1) as r:
        r.step(metrics(3, 1.8))
    assert [row["step"] for row in read_jsonl(tmp_path / "metrics.jsonl")] == [3]
    assert (tmp_path / "samples.txt").read_text(encoding="utf-8") == ""


def test_append_after_partial_line_starts_fresh_line(tmp_path: Path) -> None:
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2, "tr', encoding="utf-8")
    with make(tmp_path, plain_console(), log_every=1, append=True) as r:
        r.step(metrics(3, 1.0))
    last = (tmp_path / "metrics.jsonl").read_text(encoding="utf-8").splitlines()[-1]
    assert json.loads(last)["step"] == 3


def test_sample_file_format_and_literal_printing(tmp_path: Path) -> None:
    console = plain_console()
    with make(tmp_path, console) as r:
        r.sample(100, "Tiếng Việt")
        r.sample(200, "[bold]not bold[/bold] :smile:")
    assert (tmp_path / "samples.txt").read_text(encoding="utf-8") == (
        "=== step 100 ===\nTiếng Việt\n\n=== step 200 ===\n[bold]not bold[/bold] :smile:\n\n"
    )
    out = output(console)
    assert "sample @ step 100" in out and "Tiếng Việt" in out
    assert "[bold]not bold[/bold] :smile:" in out


def test_sample_live_panel_is_literal(tmp_path: Path) -> None:
    console = live_console()
    with make(tmp_path, console) as r:
        r.start({"model": "lstm"})
        r.sample(5, "[bold]x[/bold]")
    out = output(console)
    assert "sample @ step 5" in out and "[bold]x[/bold]" in out


def test_plain_mode_lines(tmp_path: Path) -> None:
    console = plain_console()
    with make(tmp_path, console, log_every=100, total_steps=400) as r:
        assert r.live is False  # auto-detected: not a terminal
        r.start({"model": "lstm", "parameters": 1234567, "run dir": tmp_path})
        for i in range(1, 201):
            r.step(metrics(i, 1.8123, val_loss=1.9012 if i == 200 else None))
        r.info("checkpoint saved")
    out = output(console)
    assert "model: lstm" in out and "parameters: 1,234,567" in out
    step_lines = [line for line in out.splitlines() if line.startswith("step ")]
    assert len(step_lines) == 2
    expected = "step 200 | epoch 3 | loss 1.8123 | val 1.9012 | 31,204 chars/s | 0:01:40"
    assert step_lines[1].startswith(expected)
    assert "val" not in step_lines[0]
    assert "eta" in step_lines[1]
    assert "checkpoint saved" in out
    assert "\x1b[" not in out  # no ANSI codes in plain mode


def test_warn_goes_to_error_console(tmp_path: Path) -> None:
    console, err = plain_console(), plain_console()
    with Reporter(tmp_path, total_steps=None, max_time=None, console=console, err_console=err) as r:
        r.warn("low on [memory]")
    assert output(err).strip() == "warning: low on [memory]"
    assert output(console) == ""


@pytest.mark.parametrize("total_steps,max_time", [(50, None), (None, 30.0), (None, None)])
def test_live_mode_runs_and_close_is_idempotent(tmp_path: Path, total_steps, max_time) -> None:
    console = live_console()
    r = Reporter(
        tmp_path, total_steps=total_steps, max_time=max_time, console=console,
        err_console=plain_console(),
    )
    assert r.live is True
    r.start({"model": "gru", "vocab": 65})
    for i in range(1, 51):
        r.step(metrics(i, 2.0, val_loss=1.9 if i % 25 == 0 else None))
    r.info("hello [not markup]")
    r.close()
    r.close()
    out = output(console)
    assert "model" in out and "hello [not markup]" in out
    assert "chars/s" in out and "val 1.9000" in out
    logged = [row["step"] for row in read_jsonl(tmp_path / "metrics.jsonl")]
    assert logged == [10, 20, 25, 30, 40, 50]


def test_live_can_be_forced_off_on_terminal(tmp_path: Path) -> None:
    console = live_console()
    with make(tmp_path, console, live=False, log_every=1) as r:
        r.step(metrics(1, 2.0))
    assert "step 1 | epoch 1" in output(console)


def test_step_before_start_in_live_mode(tmp_path: Path) -> None:
    with make(tmp_path, live_console()) as r:
        r.step(metrics(1, 2.0))


def test_invalid_log_every(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        Reporter(tmp_path, total_steps=None, max_time=None, console=plain_console(), log_every=0)


def test_format_duration() -> None:
    assert format_duration(83) == "0:01:23"
    assert format_duration(3 * 3600 + 5) == "3:00:05"
    assert format_duration(None) == "-:--:--"
    assert format_duration(float("inf")) == "-:--:--"
    assert format_duration(-5) == "0:00:00"


def test_estimate_eta() -> None:
    # 10 steps in 20 s -> 2 s/step, 90 steps left.
    assert estimate_eta(10, 20.0, total_steps=100, max_time=None) == pytest.approx(180.0)
    # Baseline excludes the slow first (JIT-compiling) step from the rate.
    eta = estimate_eta(11, 15.0, total_steps=101, max_time=None, base_step=1, base_elapsed=10.0)
    assert eta == pytest.approx(0.5 * 90)
    # No rate yet at the baseline step itself.
    eta = estimate_eta(1, 10.0, total_steps=100, max_time=None, base_step=1, base_elapsed=10.0)
    assert eta is None
    # Time budget only.
    assert estimate_eta(10, 20.0, total_steps=None, max_time=60.0) == pytest.approx(40.0)
    assert estimate_eta(10, 90.0, total_steps=None, max_time=60.0) == 0.0
    # Both: whichever limit is hit first.
    assert estimate_eta(10, 20.0, total_steps=100, max_time=60.0) == pytest.approx(40.0)
    assert estimate_eta(10, 20.0, total_steps=None, max_time=None) is None
    assert estimate_eta(100, 20.0, total_steps=100, max_time=None) == 0.0


# -- on a terminal (issue 12) ---------------------------------------------------------------------------------
# A Reporter made as `charrnn train` makes it (its own Console on sys.stdout), with sys.stdout a terminal.
# In a child process: the bug this guards against was an endless loop, which a timeout can stop there.
ON_A_TTY = """
import io, sys
from pathlib import Path

class Tty(io.StringIO):
    def isatty(self):
        return True

tty = sys.stdout = Tty()
from charrnn.training.report import Reporter
with Reporter(Path(sys.argv[1]), total_steps=3, max_time=None) as r:
    assert r.live
    r.start({"model": "lstm"})
    for step in (1, 2, 3):
        r.step({"step": step, "epoch": 1, "train_loss": 2.0, "lr": 0.01, "chars_per_sec": 1000.0,
                "elapsed_s": step * 0.1, "val_loss": 1.5 if step == 3 else None})
    r.sample(3, "a sample")
    r.info("done")
sys.__stdout__.write(tty.getvalue())
"""


def test_live_bar_on_a_terminal_stdout_does_not_loop(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "NO_COLOR", "TTY_COMPATIBLE")}
    try:
        p = subprocess.run([sys.executable, "-c", ON_A_TTY, str(tmp_path)], capture_output=True, text=True,
                           timeout=60, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail("the live bar on a terminal stdout did not finish in 60 s (the issue 12 write loop)")
    assert p.returncode == 0, p.stderr
    shown = re.sub(r"\x1b\[[0-?]*[ -/]*[@-~]", "", p.stdout)
    assert "step 3/3" in shown and "a sample" in shown and "done" in shown
    assert [row["step"] for row in read_jsonl(tmp_path / "metrics.jsonl")] == [3]


class _Recording:
    """A text stream on a real descriptor that also remembers what was written to it."""

    def __init__(self, fd: int) -> None:
        self._file = open(fd, "w", encoding="utf-8", closefd=False)
        self.written: list[str] = []

    def write(self, text: str) -> int:
        self.written.append(text)
        return self._file.write(text)

    def flush(self) -> None:
        self._file.flush()

    def isatty(self) -> bool:
        return self._file.isatty()

    def fileno(self) -> int:
        return self._file.fileno()


@pytest.mark.parametrize("same_terminal", [True, False])
def test_warning_during_the_live_bar(tmp_path: Path, same_terminal: bool) -> None:
    """On the bar's own terminal a warning is printed above the bar (rich redraws the bar below it);
    stderr elsewhere (`2> err.txt`) gets it itself."""
    import os
    master, slave = os.openpty()
    try:
        console = Console(file=_Recording(slave), force_terminal=True, width=100)
        err_stream = _Recording(slave if same_terminal else os.open(tmp_path / "err", os.O_WRONLY | os.O_CREAT))
        with Reporter(tmp_path, total_steps=10, max_time=None, console=console,
                      err_console=Console(file=err_stream, width=100)) as r:
            r.start({"model": "lstm"})
            r.step(metrics(1, 2.0))
            r.warn("look out")
        shown, err = "".join(console.file.written), "".join(err_stream.written)
        assert ("look out" in shown) is same_terminal and ("look out" in err) is not same_terminal
    finally:
        os.close(master)
        os.close(slave)

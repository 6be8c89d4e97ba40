"""plot, diagnose, activations and eval --per-char as a person runs them: the installed `charrnn` script
in a pseudo-terminal of 100x30 with TERM=xterm-256color (colours on, rich sizing itself from the tty)."""
import os
import re

import pytest
from support.exe import CHARRNN
from support.pty import run_in_pty

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
pytestmark = pytest.mark.skipif(CHARRNN is None or os.name != "posix", reason="needs the installed script and a pty")


def _run_in_pty(args, cwd, timeout=300) -> tuple[int, str]:
    """(exit code, output with \r\n as \n, escapes kept) of `charrnn *args` on a 100x30 terminal."""
    return run_in_pty(args, cwd, timeout, keep_escapes=True)


def _plain(text: str) -> str:
    return ANSI.sub("", text)


def _fits(text: str, width: int = 100) -> None:
    long = [ln for ln in _plain(text).splitlines() if len(ln) > width]
    assert not long, long


def test_plot_in_a_terminal(trained, tmp_path):
    code, out = _run_in_pty(["plot", trained, "--terminal"], tmp_path)
    assert code == 0, out
    plain = _plain(out)
    assert "* best val" in plain and "best val @ step" in plain and "Traceback" not in plain
    assert "\x1b[" in out  # coloured
    _fits(out)
    code, out = _run_in_pty(["plot", trained, "-o", tmp_path / "l.png"], tmp_path)
    if (tmp_path / "l.png").exists():
        assert code == 0 and "wrote" in out
    else:  # no matplotlib in this environment: one line naming the extra
        assert code == 2 and "charrnn[plot]" in _plain(out) and len(_plain(out).strip().splitlines()) == 1


def test_diagnose_in_a_terminal(trained, tmp_path):
    code, out = _run_in_pty(["diagnose", trained, "--seq-len", 12, "--batch-size", 4, "--terminal"], tmp_path)
    assert code == 0, out
    plain = _plain(out)
    assert "gradient reaching h_t, LSTM 1x16" in plain and "gate saturation" in plain
    assert "0 trained" in plain and "0 init" in plain and "…" not in plain  # no cell cut short
    _fits(out)


def test_activations_in_a_terminal(trained, tmp_path):
    code, out = _run_in_pty(["activations", trained, "--text", "to be or not to be, that is the question.",
                             "--top", 2, "--terminal"], tmp_path)
    assert code == 0, out
    plain = _plain(out)
    assert "surprisal" in plain and "to be or not to be" in plain and "r = " in plain
    assert re.search(r"\x1b\[[0-9;]*48;[25];", out)  # characters on coloured backgrounds
    _fits(out)
    code, out = _run_in_pty(["activations", trained, "--text", "to be", "-o", tmp_path / "a.html"], tmp_path)
    assert code == 0 and (tmp_path / "a.html").is_file() and "wrote" in out


def test_eval_per_char_in_a_terminal(trained, corpus, tmp_path):
    code, out = _run_in_pty(["eval", trained, corpus, "--per-char", tmp_path / "pc.jsonl"], tmp_path)
    assert code == 0, out
    assert "loss (nats/char)" in _plain(out) and "wrote" in out
    assert len((tmp_path / "pc.jsonl").read_text().splitlines()) == len(corpus.read_text()) - 1


@pytest.mark.parametrize("args", [["plot", "nowhere"], ["diagnose"], ["activations", "nowhere", "--text", "ab"]])
def test_bad_input_in_a_terminal_is_one_line(tmp_path, args):
    code, out = _run_in_pty(args, tmp_path)
    lines = [ln for ln in _plain(out).splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), out

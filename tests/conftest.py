"""Shared fixtures for the end-to-end tests: tiny corpora, tiny model options, a CLI runner, one trained
run per session, and a snapshot helper for "nothing existing was changed" checks.

Everything is sized for 2 shared cores: hidden 16, one layer, 4 streams x 16 steps, a few KB of text.
"""
import hashlib
import os
import random
import signal
from pathlib import Path

import pytest
from click.testing import CliRunner

ENGLISH_LINES = [
    "the quick brown fox jumps over the lazy dog.",
    "a stitch in time saves nine, said the old tailor.",
    "all that glitters is not gold; all who wander are not lost.",
    "to be or not to be, that is the question.",
    "the rain in spain stays mainly in the plain.",
]
VIETNAMESE_LINES = [
    "Trăm năm trong cõi người ta, chữ tài chữ mệnh khéo là ghét nhau.",
    "Trải qua một cuộc bể dâu, những điều trông thấy mà đau đớn lòng.",
    "Lạ gì bỉ sắc tư phong, trời xanh quen thói má hồng đánh ghen.",
]
@pytest.fixture(autouse=True)
def _keep_signal_handlers():
    """In-process CLI runs change the process's SIGINT/SIGTERM handlers the way a real `charrnn` process
    would (the train command's SIGTERM exit, deaf-on-exit after an error); put them back after each
    test so Ctrl-C still stops pytest."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, h in saved.items():
        signal.signal(s, h)


# Small model, small batches: every CLI train in the tests uses these unless it says otherwise.
TINY = ["--hidden", "16", "--layers", "1", "--batch-size", "4", "--seq-len", "16", "--plain",
        "--sample-length", "20"]


def make_text(lines: list[str], n_lines: int, seed: int = 0) -> str:
    """n_lines lines drawn (reproducibly) from lines: repetitive enough for a tiny model to learn fast."""
    rng = random.Random(seed)
    return "".join(rng.choice(lines) + "\n" for _ in range(n_lines))


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """About 4 KB of repetitive English."""
    p = tmp_path / "corpus.txt"
    p.write_text(make_text(ENGLISH_LINES, 90), encoding="utf-8")
    return p


@pytest.fixture
def vi_corpus(tmp_path: Path) -> Path:
    """About 6 KB of Vietnamese (many precomposed accented letters, several bytes each in UTF-8)."""
    p = tmp_path / "vi.txt"
    p.write_text(make_text(VIETNAMESE_LINES, 100), encoding="utf-8")
    return p


@pytest.fixture(scope="session")
def cli():
    """invoke(*args) -> click Result; stdout and stderr are kept apart (result.stdout / result.stderr)."""
    from charrnn.cli import main

    def invoke(*args, **kwargs):
        return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False, **kwargs)
    return invoke


@pytest.fixture(scope="session")
def trained(tmp_path_factory, cli) -> Path:
    """One tiny trained run, shared read-only by the sample/eval/info tests: returns its run dir."""
    root = tmp_path_factory.mktemp("trained")
    corpus = root / "corpus.txt"
    corpus.write_text(make_text(ENGLISH_LINES, 90), encoding="utf-8")
    run = root / "run"
    r = cli("train", corpus, "--out", run, *TINY, "--max-steps", 60, "--eval-every", 20,
            "--sample-every", 30, "--checkpoint-every", 10, "--seed", 7, "--lr", 0.01)
    assert r.exit_code == 0, r.output
    return run


def step_records(run: Path) -> list[dict]:
    """metrics.jsonl's step records, without the final {"event": "end", ...} record of each session."""
    import json
    rows = [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    return [r for r in rows if "event" not in r]


def snapshot(root: Path, exclude: tuple[str, ...] = ()) -> dict[str, str]:
    """{relative path: sha256} of every file under root, skipping paths under any `exclude` prefix."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            if any(rel == e or rel.startswith(e.rstrip("/") + "/") for e in exclude):
                continue
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def one_line_error(result, code: int = 2) -> str:
    """Assert a CLI failure with exit `code`, no traceback, one non-empty line on stderr; return it."""
    assert result.exit_code == code, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip() and not ln.startswith("warning:")]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]

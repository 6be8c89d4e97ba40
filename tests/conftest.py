"""Shared fixtures for the end-to-end tests: tiny corpora, tiny model options, a CLI runner, one trained
run per session, and a snapshot helper for "nothing existing was changed" checks.

Everything is sized for 2 shared cores: hidden 16, one layer, 4 streams x 16 steps, a few KB of text.
"""
import signal
from pathlib import Path

import pytest
from click.testing import CliRunner
from support.runs import ENGLISH_LINES, TINY, VIETNAMESE_LINES, make_text


@pytest.fixture(autouse=True)
def _keep_signal_handlers():
    """In-process CLI runs change the process's SIGINT/SIGTERM handlers the way a real `charrnn` process
    would (the train command's SIGTERM exit, deaf-on-exit after an error); put them back after each
    test so Ctrl-C still stops pytest."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, h in saved.items():
        signal.signal(s, h)


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

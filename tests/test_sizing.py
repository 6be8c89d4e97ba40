"""The warning before a new run whose model is far larger than its text (charrnn/sizing.py)."""
from conftest import TINY

from charrnn.training.sizing import OVERFIT_PARAMS_PER_CHAR, too_big


def test_the_threshold():
    assert too_big(OVERFIT_PARAMS_PER_CHAR * 1000, 1000) is None
    said = too_big(OVERFIT_PARAMS_PER_CHAR * 1000 + 1, 1000)
    assert "1,000 training characters" in said and "--config tiny" in said and "--dropout" in said
    assert too_big(5, 0) is None  # no training text is refused elsewhere, not warned about here


def test_train_warns_at_the_start_of_a_run_far_too_big(cli, corpus, tmp_path):
    """The issue's case: a large model on a few KB of text trained without a word."""
    r = cli("train", corpus, "--out", tmp_path / "big", *TINY, "--hidden", 128, "--max-steps", 2)
    assert r.exit_code == 0, r.output
    warned = [line for line in r.stderr.splitlines() if "parameters for" in line]
    assert len(warned) == 1 and warned[0].startswith("warning: the model has ") and "more text" in warned[0]
    # a model the text can carry: no warning; a resume does not repeat it
    r = cli("train", corpus, "--out", tmp_path / "small", *TINY, "--max-steps", 2)
    assert r.exit_code == 0 and "parameters for" not in r.stderr, r.output
    r = cli("train", "--resume", tmp_path / "big", "--max-steps", 4, "--plain")
    assert r.exit_code == 0 and "parameters for" not in r.stderr, r.output

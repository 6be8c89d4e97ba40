"""Every way a run ends says why (charrnn/endings.py): in the terminal, as metrics.jsonl's last record and
in the meta of the checkpoint written at that step, with a command that goes on, and that command works."""
import json
import shlex

import pytest
from conftest import TINY, snapshot

from charrnn.checkpoints import npz as checkpoint

FAST = [*TINY, "--sample-every", 0, "--eval-every", 5]


def records(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def go_on(stdout: str) -> list[str]:
    """The arguments after `charrnn` of the 'go on with:' line."""
    line = next(ln for ln in stdout.splitlines() if ln.startswith("go on with: "))
    words = shlex.split(line.removeprefix("go on with: "))
    assert words[:2] == ["charrnn", "train"]
    return words[1:]


@pytest.mark.parametrize("budget, reason, why, step", [
    (["--max-steps", 12], "max_steps", "the step budget (max_steps 12) is reached", 12),
    (["--max-epochs", 1], "max_epochs", "the epoch budget (max_epochs 1) is reached", None),
    (["--max-time", 1], "max_time", "the time budget (max_time 1 s", None),
])
def test_a_budget_says_why_and_how_to_go_on(cli, corpus, tmp_path, budget, reason, why, step):
    run = tmp_path / "r"
    r = cli("train", corpus, "--out", run, *FAST, *budget)
    assert r.exit_code == 0, r.output
    end = records(run)[-1]
    assert end["event"] == "end" and end["reason"] == reason and why in end["why"]
    assert f"stopped at step {end['step']:,}: {end['why']}" in r.stdout
    if step is not None:
        assert end["step"] == step
    meta = checkpoint.load(run / "last.npz")[1]
    assert meta["ended"] == {k: end[k] for k in ("reason", "step", "why", "go_on")}
    assert meta["progress"]["step"] == end["step"]
    # the command it names trains on, and that run ends for the same reason, further along
    again = cli(*go_on(r.stdout))
    assert again.exit_code == 0, again.output
    later = records(run)[-1]
    assert later["reason"] == reason and later["step"] > end["step"]
    assert sum(1 for rec in records(run) if "event" in rec) == 1  # the earlier session's end is dropped


def test_plot_and_resume_read_past_the_end_record(cli, corpus, tmp_path):
    run = tmp_path / "r"
    assert cli("train", corpus, "--out", run, *FAST, "--max-steps", 10).exit_code == 0
    r = cli("plot", run, "--terminal")
    assert r.exit_code == 0 and "skipped" not in r.stderr, r.output


def test_a_resume_past_its_time_budget_says_so(cli, corpus, tmp_path):
    """The issue's case: --resume of a run that used its max_time printed the header and ended silently."""
    run = tmp_path / "r"
    assert cli("train", corpus, "--out", run, *FAST, "--max-time", 1).exit_code == 0
    # best.npz aside: the time-bound schedule ends at lr ~0, so the last evaluation can equal the best
    # one, and the resume's one repair (api.train: last.npz was the best) may republish it, same loss
    before = snapshot(tmp_path, exclude=("r/best.npz",))
    r = cli("train", "--resume", run, "--plain")
    assert r.exit_code == 0, r.output
    assert "nothing to train" in r.stderr and "the time budget (max_time 1 s" in r.stderr
    assert f"go on with: charrnn train --resume {run} --max-time 2" in r.stderr
    assert snapshot(tmp_path, exclude=("r/best.npz",)) == before


def test_a_resume_past_its_epoch_budget_says_so(cli, corpus, tmp_path):
    run = tmp_path / "r"
    assert cli("train", corpus, "--out", run, *FAST, "--max-epochs", 1).exit_code == 0
    r = cli("train", "--resume", run, "--plain")
    assert r.exit_code == 0, r.output
    assert "the epoch budget (max_epochs 1) is reached" in r.stdout
    assert f"go on with: charrnn train --resume {run} --max-epochs 2" in r.stdout


def test_the_default_epoch_budget_is_named(cli, corpus, tmp_path):
    run = tmp_path / "r"
    r = cli("train", corpus, "--out", run, *FAST, "--set", "train.max_epochs=auto", "--seq-len", 64,
            "--batch-size", 16, "--eval-every", 0)
    assert r.exit_code == 0, r.output
    assert "the epoch budget (max_epochs 20, the default when no --max-steps or --max-time is given)" in r.stdout

"""Early stopping: `train.patience` (--patience N) stops after N evaluations in a row without a better
validation loss; best.npz keeps the best weights, and the count survives an exact resume."""
import json

import pytest
from conftest import TINY, one_line_error

import charrnn
from charrnn.training.trainer import Trainer

# eval every 4 steps, a learning rate high enough that validation gets worse within a few evaluations
# A constant rate: the interrupted run below is stopped by a smaller --max-steps, which would move a
# schedule that follows the step budget (the default decays over its last 20 %).
ES = [*TINY, "--sample-every", 0, "--lr", 0.05, "--eval-every", 4, "--max-steps", 300,
      "--set", "optim.schedule=constant"]


def evals(run):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["val_loss"]) for r in rows if "val_loss" in r]


def check_stopped(run, patience):
    """The run ended on the patience-th evaluation in a row that did not beat the best, and best.npz
    holds that best one."""
    seen = evals(run)
    best_step, best_val = min(seen, key=lambda sv: (sv[1], sv[0]))
    after = [v for s, v in seen if s > best_step]
    assert len(after) == patience and all(v >= best_val for v in after)
    assert charrnn.load(run / "last.npz").meta["progress"]["step"] == seen[-1][0] < 300
    best = charrnn.load(run / "best.npz").meta
    assert best["progress"]["step"] == best_step and best["losses"]["val_loss"] == pytest.approx(best_val)
    return seen[-1][0]


def test_cli_patience_stops_early_and_keeps_the_best(cli, corpus, tmp_path):
    run = tmp_path / "run"
    r = cli("train", corpus, "--out", run, *ES, "--patience", 2)
    assert r.exit_code == 0, r.output
    stop = check_stopped(run, 2)
    assert f"stopped at step {stop}: no better validation loss in 2 evaluations (early stopping" in r.stdout
    assert json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["reason"] == "patience"
    # resuming with the same patience has nothing to do; a larger one goes on
    r = cli("train", "--resume", run, "--plain")
    assert r.exit_code == 0 and "nothing to train" in r.stderr
    assert f"go on with: charrnn train --resume {run} --patience 4" in r.stderr
    assert charrnn.load(run / "last.npz").meta["progress"]["step"] == stop
    r = cli("train", "--resume", run, "--plain", "--patience", 4)
    assert r.exit_code == 0, r.output
    check_stopped(run, 4)


def test_patience_survives_an_interrupted_run(cli, corpus, tmp_path):
    """Stopped part way (here by max_steps) and resumed, a run stops early at the same step with the
    same metrics as one left alone: the count of stale evaluations is in the checkpoint."""
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert cli("train", corpus, "--out", whole, *ES, "--patience", 3).exit_code == 0
    stop = check_stopped(whole, 3)
    r = cli("train", corpus, "--out", parts, *ES, "--patience", 3, "--max-steps", stop - 4)
    assert r.exit_code == 0, r.output
    r = cli("train", "--resume", parts, "--max-steps", 300, "--plain")
    assert r.exit_code == 0, r.output
    assert (parts / "metrics.jsonl").read_text().count("\n") == (whole / "metrics.jsonl").read_text().count("\n")
    # (the end record names its own run directory)
    strip = lambda run: [{k: v for k, v in json.loads(line).items()
                          if k not in ("chars_per_sec", "elapsed_s", "why", "go_on")}
                         for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert strip(parts) == strip(whole)


def test_api_patience_counts_evaluations_exactly(corpus, tmp_path, monkeypatch):
    scripted = iter([3.0, 2.8, 2.9, 2.8, 2.7, 2.75, 2.71, 2.7])
    monkeypatch.setattr(Trainer, "evaluate", lambda self: next(scripted))
    cfg = {"model": {"hidden_size": 16, "num_layers": 1},
           "train": {"batch_size": 4, "seq_len": 16, "max_steps": 100, "eval_every": 2, "sample_every": 0,
                     "patience": 3}}
    best = charrnn.train(corpus, cfg, tmp_path / "run", live=False)
    # evaluations at steps 2..16: 2.8 at step 4 is the best until 2.7 at step 10; then 2.75, 2.71, 2.7
    # (equal is not better) make three in a row without improvement: stop at step 16
    assert charrnn.load(best).meta["progress"]["step"] == 10
    last = charrnn.load(tmp_path / "run" / "last.npz").meta["progress"]
    assert last["step"] == 16 and last["stale_evals"] == 3


def test_patience_without_evaluations_warns(cli, corpus, tmp_path):
    r = cli("train", corpus, "--out", tmp_path / "run", *TINY, "--max-steps", 6, "--eval-every", 0,
            "--sample-every", 0, "--patience", 2)
    assert r.exit_code == 0, r.output
    assert "early stopping is off" in r.stderr


def test_bad_patience(cli, corpus, tmp_path):
    assert "train.patience must be >= 0" in one_line_error(cli("train", corpus, "--out", tmp_path / "r", *TINY,
                                                               "--patience", -1))

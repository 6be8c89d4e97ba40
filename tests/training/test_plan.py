"""training/plan.py: what a `charrnn.train` call is, decided before anything is written."""
import pickle
import shutil
from pathlib import Path

import pytest
from support.runs import snapshot

from charrnn.errors import UsageError
from charrnn.training.plan import FINETUNE, FRESH, RESUME, plan
from charrnn.training.run import execute

OLD = Path(__file__).resolve().parents[1] / "fixtures" / "checkpoints"


@pytest.fixture
def old_run(tmp_path) -> Path:
    run = tmp_path / "gru"
    shutil.copytree(OLD / "gru", run)
    return run


def test_planning_writes_nothing(old_run, tmp_path):
    before = snapshot(tmp_path)
    fresh = plan([str(OLD / "corpus.txt")], {"model": {"hidden_size": 8}}, tmp_path / "new", options={})
    resumed = plan(None, None, None, resume=old_run, options={"train.max_steps": 14})
    tuned = plan([str(OLD / "corpus.txt")], None, tmp_path / "tuned", init_from=old_run / "best.npz")
    assert snapshot(tmp_path) == before and not (tmp_path / "new").exists()
    assert (fresh.kind, fresh.config.model.hidden_size, fresh.checkpoint) == (FRESH, 8, None)
    assert (resumed.kind, resumed.run_dir, resumed.checkpoint.name, resumed.done) == (RESUME, old_run, "last.npz", None)
    assert len(resumed.corpus) == 1  # the corpus the run recorded
    assert (tuned.kind, tuned.config.model.cell) == (FINETUNE, "gru")


def test_a_finished_run_is_planned_as_done(old_run):
    p = plan(None, None, None, resume=old_run)
    assert p.kind == RESUME and "at step 12" in p.done


def test_a_plan_travels_without_its_checkpoint(old_run, tmp_path):
    """A portable plan (what a rank would receive) pickles small and executes like the original: the
    checkpoint is read again where it runs."""
    p = plan([str(OLD / "corpus.txt")], None, None, resume=old_run, options={"train.max_steps": 13}).portable()
    data = pickle.dumps(p)
    assert len(data) < 20_000 and pickle.loads(data) == p and p.loaded is None
    best = execute(pickle.loads(data), live=False)
    assert best.parent == old_run


def test_plan_refuses_before_anything_exists(tmp_path):
    with pytest.raises(UsageError, match="--resume continues a run"):
        plan(None, None, tmp_path / "r", resume=tmp_path / "a", init_from=tmp_path / "b")
    assert not (tmp_path / "r").exists()

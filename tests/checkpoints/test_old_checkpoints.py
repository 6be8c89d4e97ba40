"""Run directories written before the package was reorganised (tests/fixtures/checkpoints, made by main's
code at bdc686f) still load, sample, evaluate, export, fine-tune and resume to the very numbers recorded
when they were made."""
import importlib.util
import json
import shutil
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "checkpoints"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())


def _make():
    spec = importlib.util.spec_from_file_location("make_old_checkpoints", FIXTURES / "make.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("cell", sorted(EXPECTED))
def test_an_old_run_directory_gives_the_recorded_numbers(cell, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("safetensors")
    make = _make()
    run = tmp_path / "run"
    shutil.copytree(FIXTURES / cell, run)
    want = EXPECTED[cell]
    assert {n: make.arrays_digest(run / n) for n in ("best.npz", "last.npz")} == want["made"]
    got = make.measure(run, tmp_path)
    for key in ("best.npz", "last.npz", "export", "eval_val", "finetune", "resume", "resume_metrics"):
        assert got[key] == want[key], key


@pytest.mark.parametrize("cell", sorted(EXPECTED))
def test_an_old_checkpoint_evaluates_its_split_where_its_corpus_is(cell, tmp_path):
    """`eval --split val` reads the corpus at the path the checkpoint recorded: the recorded numbers where it
    still is (the checkout the fixtures were made in), else the one-line error naming that path."""
    import subprocess
    import sys
    run = tmp_path / "run"
    shutil.copytree(FIXTURES / cell, run)
    exe = Path(sys.executable).with_name("charrnn")
    r = subprocess.run([str(exe), "eval", str(run / "best.npz"), "--split", "val", "--json"],
                       capture_output=True, text=True)
    made_at = json.loads(subprocess.run([str(exe), "info", str(run / "best.npz"), "--json"], capture_output=True,
                                        text=True, check=True).stdout)
    recorded = Path(str(made_at["corpus"]["path"]))
    if recorded.exists():
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout) == EXPECTED[cell]["eval_val"]
    else:
        assert r.returncode == 2 and r.stdout == ""
        assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
        assert f"the training corpus {recorded} is no longer there" in r.stderr

"""The corners of `charrnn train` that a black-box review found: codecs that fail without a byte offset,
an empty --out, a run that diverged before its first checkpoint, two trainings on one directory, a corpus
edited in place with its size and mtime kept, option errors that must name where the value came from,
a model too big for memory, resuming from an earlier checkpoint of a run, and resuming a finished run. Each ends in the documented behaviour or a one-line error."""
import json
import os
import shutil
import warnings

import pytest
from conftest import TINY, one_line_error, snapshot, step_records

from charrnn.checkpoints import npz as checkpoint, rundir, store

SHORT = [*TINY, "--max-steps", "4", "--eval-every", "2", "--sample-every", "0"]


def test_utf16_without_bom_is_one_line(cli, corpus, tmp_path):
    line = one_line_error(cli("train", corpus, "--encoding", "utf-16", "--out", tmp_path / "run", *SHORT))
    assert "cannot be read as utf-16" in line and "--encoding" in line
    assert not (tmp_path / "run").exists()


def test_empty_out_is_refused(cli, corpus, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = sorted(os.listdir(tmp_path))
    assert "out_dir is an empty path" in one_line_error(cli("train", corpus, "--out", "", *SHORT))
    assert sorted(os.listdir(tmp_path)) == before


def test_divergence_before_the_first_checkpoint_says_so_and_points_at_force(cli, corpus, tmp_path):
    run = tmp_path / "run"
    with warnings.catch_warnings(record=True) as caught:  # numpy's overflow warnings would reach the user
        warnings.simplefilter("always")
        r = cli("train", corpus, "--out", run, *TINY, "--lr", "1e38", "--grad-clip", "0", "--optimizer", "sgd",
                "--max-steps", "40", "--eval-every", "0", "--sample-every", "0", "--set", "train.max_bad_steps=2")
    line = one_line_error(r, code=1)
    assert "training diverged" in line and "no checkpoint had been written yet" in line
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)]
    assert not (run / "last.npz").exists()
    line = one_line_error(cli("train", corpus, "--out", run, *SHORT))
    assert "never wrote a checkpoint" in line and "--force" in line
    assert cli("train", corpus, "--out", run, *SHORT, "--force").exit_code == 0


@pytest.mark.skipif(os.name != "posix", reason="the run lock is POSIX flock")
def test_a_run_directory_in_use_is_refused(cli, corpus, tmp_path):
    import fcntl
    run = tmp_path / "run"
    assert cli("train", corpus, "--out", run, *SHORT).exit_code == 0
    fd = os.open(run / ".lock", os.O_RDWR | os.O_CREAT)  # (a finished run removes its .lock)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running `charrnn train` holds it
        before = snapshot(run)
        for args in (("--resume", run, "--max-steps", "8"), (corpus, "--out", run, *SHORT, "--force"),
                     (corpus, "--out", run, *SHORT)):  # locked before it is inspected: "in use", not "holds a run"
            line = one_line_error(cli("train", *args))
            assert f"{run} is in use by another charrnn train" in line
        assert snapshot(run) == before
    finally:
        os.close(fd)
    assert cli("train", "--resume", run, "--max-steps", "8").exit_code == 0  # released: fine again


def test_corpus_edited_in_place_with_size_and_mtime_kept_is_caught(cli, corpus, tmp_path):
    run = tmp_path / "run"
    assert cli("train", corpus, "--out", run, *SHORT).exit_code == 0
    st = corpus.stat()
    data = bytearray(corpus.read_bytes())
    data[100:104] = b"zzzz" if bytes(data[100:104]) != b"zzzz" else b"yyyy"
    corpus.write_bytes(bytes(data))
    os.utime(corpus, ns=(st.st_atime_ns, st.st_mtime_ns))  # as cp -p / rsync -t leave it
    line = one_line_error(cli("train", "--resume", run, "--max-steps", "8"))
    assert "is not the corpus this run was trained on" in line


def test_a_bad_direct_option_names_the_command_line(cli, corpus, tmp_path):
    line = one_line_error(cli("train", corpus, "--out", tmp_path / "run", *SHORT, "--hidden", "-5"))
    assert "got -5 in the command-line options" in line


def test_a_model_too_big_for_memory_is_one_line(cli, corpus, tmp_path):
    # 4 * 1e7**2 float32 weights = 1.6 PB: refused against the machine's memory before anything is allocated
    line = one_line_error(cli("train", corpus, "--out", tmp_path / "run", *SHORT, "--hidden", "10000000"), code=2)
    assert "more than this machine's" in line
    assert not (tmp_path / "run").exists()


def test_resume_from_an_earlier_checkpoint_needs_out_or_force(cli, corpus, tmp_path):
    run = tmp_path / "run"
    args = [*TINY, "--eval-every", "2", "--checkpoint-every", "2", "--sample-every", "0", "--set", "train.keep_last=0",
            "--set", "train.log_every=1"]
    assert cli("train", corpus, "--out", run, *args, "--max-steps", "8").exit_code == 0
    step4 = next(run.glob("step4_*.npz"))
    before = snapshot(run)
    line = one_line_error(cli("train", "--resume", step4, "--max-steps", "8"))
    assert "has checkpoints from later steps" in line and "--out" in line and "--force" in line
    assert snapshot(run) == before

    # --out: a branch in a new directory, the run left as it was
    assert cli("train", "--resume", step4, "--out", tmp_path / "branch", "--max-steps", "6").exit_code == 0
    assert snapshot(run) == before

    # --force: the run rewinds to step 4 and trains the same steps again, bit for bit
    original = step_records(run)
    assert cli("train", "--resume", step4, "--max-steps", "6", "--force").exit_code == 0
    names = sorted(p.name for p in run.glob("step*.npz"))
    assert [n.split("_")[0] for n in names] == ["step2", "step4", "step6"]
    assert checkpoint.load(run / "last.npz")[1]["progress"]["step"] == 6
    assert checkpoint.load(run / "best.npz")[1]["progress"]["step"] <= 6
    again = step_records(run)
    assert len(original) == 8 and len(again) == 6
    assert [m["train_loss"] for m in again] == [m["train_loss"] for m in original if m["step"] <= 6]


def test_resume_of_a_finished_run_says_so_and_writes_nothing(cli, corpus, tmp_path):
    run = tmp_path / "run"
    assert cli("train", corpus, "--out", run, *SHORT).exit_code == 0
    before = snapshot(run)
    r = cli("train", "--resume", run, "--max-steps", "3")
    assert r.exit_code == 0 and "nothing to train" in r.stderr and "step 4" in r.stderr
    assert snapshot(run) == before


def test_resume_of_a_run_killed_between_its_step_file_and_last_npz(cli, corpus, tmp_path):
    run = tmp_path / "run"
    args = [*TINY, "--eval-every", "0", "--checkpoint-every", "2", "--sample-every", "0", "--set", "train.keep_last=0",
            "--set", "train.log_every=1"]
    assert cli("train", corpus, "--out", run, *args, "--max-steps", "8").exit_code == 0
    whole = [r["train_loss"] for r in step_records(run)]
    def kill_before_last_npz():  # as if killed after writing step8.npz, before refreshing last.npz
        (run / "last.npz").unlink()  # (a hard link to step8.npz: never write through it)
        shutil.copy(next(run.glob("step6*.npz")), run / "last.npz")
    kill_before_last_npz()
    r = cli("train", "--resume", run, "--max-steps", "8")
    assert r.exit_code == 0 and "nothing to train" in r.stderr and "step 8" in r.stderr, r.output  # step 8 file
    kill_before_last_npz()
    assert cli("train", "--resume", run, "--max-steps", "10").exit_code == 0
    assert checkpoint.load(run / "last.npz")[1]["progress"]["step"] == 10
    again = [r["train_loss"] for r in step_records(run)]
    assert len(whole) == 8 and again[:8] == whole and len(again) == 10


def test_a_validation_split_too_short_to_evaluate_is_announced(cli, tmp_path):
    (tmp_path / "small.txt").write_text("the quick brown fox jumps over the lazy dog\n" * 3)
    r = cli("train", tmp_path / "small.txt", "--out", tmp_path / "run", *SHORT)
    assert r.exit_code == 0, r.output
    assert "so validation is off and best.npz is simply the newest checkpoint" in " ".join(r.stderr.split())


def _rewind_setup(cli, corpus, tmp_path):
    """An 8-step run (eval and checkpoint every 2 steps, all kept) whose step-4 checkpoint is edited (meta
    only, which the checksum does not cover) so that the run's best up to step 4 is step 2's checkpoint."""
    run = tmp_path / "run"
    args = [*TINY, "--eval-every", "2", "--checkpoint-every", "2", "--sample-every", "0", "--set", "train.keep_last=0"]
    assert cli("train", corpus, "--out", run, *args, "--max-steps", "8").exit_code == 0
    step2, step4 = next(run.glob("step2_*.npz")), next(run.glob("step4_*.npz"))
    best2 = checkpoint.load(step2)[1]["losses"]["val_loss"]
    arrays, meta = checkpoint.load(step4)
    meta = {k: v for k, v in meta.items() if k not in ("checksum", "format_version")}
    meta["losses"].update(val_loss=best2 + 0.5, best_val_loss=best2)
    checkpoint.save(step4, arrays, meta)
    assert checkpoint.load(run / "best.npz")[1]["progress"]["step"] > 4  # so the rewind removes it
    return run, step2, step4


def _rewound(run, step4):
    """What --force does before training: delete the checkpoints after step 4, then republish."""
    for name in rundir.later_checkpoints(run, 4):
        (run / name).unlink()
    return rundir.republish(store.load(step4), False, run)


def test_a_rewind_takes_best_npz_from_the_surviving_best_step_file(cli, corpus, tmp_path):
    run, step2, step4 = _rewind_setup(cli, corpus, tmp_path)
    assert _rewound(run, step4) is None
    assert checkpoint.load(run / "best.npz")[1]["progress"]["step"] == 2
    assert checkpoint.load(run / "last.npz")[1]["progress"]["step"] == 4


def test_a_rewind_whose_best_was_pruned_says_so(cli, corpus, tmp_path):
    run, step2, step4 = _rewind_setup(cli, corpus, tmp_path)
    step2.unlink()
    assert "is gone (pruned)" in _rewound(run, step4)
    assert not (run / "best.npz").exists()
    r = cli("train", "--resume", step4, "--max-steps", "5")  # and training goes on from there
    assert r.exit_code == 0 and (run / "best.npz").exists()


def test_files_that_only_look_like_step_checkpoints_are_left_alone(cli, corpus, tmp_path):
    run = tmp_path / "run"
    args = [*TINY, "--eval-every", "2", "--checkpoint-every", "2", "--sample-every", "0", "--set", "train.keep_last=0"]
    assert cli("train", corpus, "--out", run, *args, "--max-steps", "4").exit_code == 0
    (run / "step900_backup.npz").write_bytes(b"mine")
    assert cli("train", "--resume", run, "--max-steps", "6").exit_code == 0  # not taken as a later checkpoint
    assert (run / "step900_backup.npz").read_bytes() == b"mine"


def test_nothing_to_train_into_a_new_directory_creates_nothing(cli, corpus, tmp_path):
    run = tmp_path / "run"
    assert cli("train", corpus, "--out", run, *SHORT).exit_code == 0
    r = cli("train", "--resume", run, "--out", tmp_path / "new" / "dir", "--max-steps", "4")
    assert r.exit_code == 0 and "nothing to train" in r.stderr
    assert not (tmp_path / "new").exists()


@pytest.mark.skipif(os.name != "posix", reason="closes a descriptor in the child")
def test_training_with_stdout_closed_succeeds(corpus, tmp_path):
    import subprocess
    import sys
    cmd = " ".join(f"'{a}'" for a in (sys.executable, "-m", "charrnn", "train", corpus, "--out", tmp_path / "run", *SHORT))
    r = subprocess.run(["bash", "-c", f"{cmd} >&-"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "run" / "best.npz").exists()


def test_only_evaluated_checkpoints_carry_a_val_loss_and_a_resume_keeps_the_real_best(cli, corpus, tmp_path):
    run = tmp_path / "run"
    args = [*TINY, "--eval-every", "4", "--checkpoint-every", "2", "--sample-every", "0", "--set", "train.keep_last=0"]
    assert cli("train", corpus, "--out", run, *args, "--max-steps", "10").exit_code == 0
    vals = {s: checkpoint.read_meta(run / n)["losses"]["val_loss"] for s, n in rundir.step_files(run)}
    # 2 and 6: checkpoints between evaluations; 10, the last step, is evaluated though off the schedule
    assert [s for s, v in vals.items() if v is not None] == [4, 8, 10]
    assert cli("train", "--resume", run, "--max-steps", "14").exit_code == 0
    best = checkpoint.read_meta(run / "best.npz")["losses"]
    assert best["val_loss"] is not None and best["val_loss"] == best["best_val_loss"]


def test_a_failed_start_removes_only_what_it_created(tmp_path):
    created = rundir.make(tmp_path / "runs" / "a")
    assert created == [tmp_path / "runs", tmp_path / "runs" / "a"]
    (tmp_path / "runs" / "b").mkdir()  # another run moved in meanwhile
    (tmp_path / "runs" / "b" / "last.npz").write_bytes(b"theirs")
    rundir.remove_created(created)
    assert not (tmp_path / "runs" / "a").exists()
    assert (tmp_path / "runs" / "b" / "last.npz").read_bytes() == b"theirs"


def test_a_failed_start_in_an_existing_directory_leaves_it_as_it_was(cli, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    before = snapshot(tmp_path)
    assert "not found" in one_line_error(cli("train", tmp_path / "missing.txt", "--out", tmp_path / "mine", *SHORT))
    assert snapshot(tmp_path) == before and sorted(os.listdir(tmp_path / "mine")) == ["notes.txt"]


def test_a_dangling_symlink_as_out_is_one_line(cli, corpus, tmp_path):
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    line = one_line_error(cli("train", corpus, "--out", tmp_path / "link", *SHORT))
    assert "exists and is not a directory" in line


def test_continuing_in_a_new_directory_brings_the_best_so_far(cli, corpus, tmp_path):
    run, step2, step4 = _rewind_setup(cli, corpus, tmp_path)
    new = tmp_path / "new"
    new.mkdir()
    assert rundir.republish(store.load(step4), False, new) is None
    assert checkpoint.load(new / "best.npz")[1]["progress"]["step"] == 2
    assert os.stat(new / "best.npz").st_ino != os.stat(step2).st_ino  # a copy: the runs share no inode


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_training_with_a_full_stdout_goes_on(corpus, tmp_path):
    import subprocess
    import sys
    with open("/dev/full", "w") as full:
        r = subprocess.run([sys.executable, "-m", "charrnn", "train", str(corpus), "--out", str(tmp_path / "run"),
                            *SHORT], stdout=full, stderr=subprocess.PIPE, text=True, timeout=300)
    assert r.returncode == 0 and "Traceback" not in r.stderr
    assert "cannot write progress to standard output (No space left on device); training goes on" in r.stderr
    assert (tmp_path / "run" / "best.npz").exists() and not (tmp_path / "run" / ".lock").exists()


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_training_with_stdout_and_stderr_full_goes_on(corpus, tmp_path):
    import subprocess
    import sys
    with open("/dev/full", "w") as full:
        r = subprocess.run([sys.executable, "-m", "charrnn", "train", str(corpus), "--out", str(tmp_path / "run"),
                            *SHORT], stdout=full, stderr=full, timeout=300)
    assert r.returncode == 0 and (tmp_path / "run" / "best.npz").exists()


def test_resume_of_a_run_killed_before_its_first_last_npz(cli, corpus, tmp_path):
    run = tmp_path / "run"
    args = [*TINY, "--eval-every", "0", "--checkpoint-every", "2", "--sample-every", "0"]
    assert cli("train", corpus, "--out", run, *args, "--max-steps", "2").exit_code == 0
    (run / "last.npz").unlink()  # as if killed right after writing step2.npz
    (run / "best.npz").unlink(missing_ok=True)
    r = cli("train", "--resume", run, "--max-steps", "4")
    assert r.exit_code == 0, r.output
    assert checkpoint.load(run / "last.npz")[1]["progress"]["step"] == 4


def test_a_finished_run_killed_between_last_and_best_gets_its_best_back(cli, corpus, tmp_path):
    run = tmp_path / "run"
    args = [*TINY, "--eval-every", "2", "--checkpoint-every", "2", "--sample-every", "0", "--set", "train.keep_last=0"]
    assert cli("train", corpus, "--out", run, *args, "--max-steps", "6").exit_code == 0
    if checkpoint.read_meta(run / "last.npz")["losses"]["val_loss"] != checkpoint.read_meta(run / "best.npz")["losses"]["val_loss"]:
        pytest.skip("the last evaluation was not the best here")
    (run / "best.npz").unlink()  # killed after refreshing last.npz, before best.npz: best.npz still step 4
    shutil.copy(next(run.glob("step4_*.npz")), run / "best.npz")
    r = cli("train", "--resume", run, "--max-steps", "6")
    assert r.exit_code == 0 and "nothing to train" in r.stderr
    assert checkpoint.read_meta(run / "best.npz")["progress"]["step"] == 6


def test_a_failed_start_leaves_no_cache_in_an_existing_directory(cli, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "tiny.txt").write_text("ab")
    one_line_error(cli("train", tmp_path / "tiny.txt", "--out", tmp_path / "mine", *SHORT))
    assert os.listdir(tmp_path / "mine") == []

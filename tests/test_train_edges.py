"""The corners of `charrnn train` that a black-box review found: codecs that fail without a byte offset,
an empty --out, a run that diverged before its first checkpoint, two trainings on one directory, a corpus
edited in place with its size and mtime kept, option errors that must name where the value came from,
and a model too big for memory. Each ends in the documented behaviour or a one-line error."""
import os

import pytest
from conftest import TINY, one_line_error, snapshot

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
    r = cli("train", corpus, "--out", run, *TINY, "--lr", "1e30", "--grad-clip", "0", "--optimizer", "sgd",
            "--max-steps", "40", "--eval-every", "0", "--sample-every", "0", "--set", "train.max_bad_steps=2")
    line = one_line_error(r, code=1)
    assert "training diverged" in line and "no checkpoint had been written yet" in line
    assert "RuntimeWarning" not in r.stderr
    assert not (run / "last.npz").exists()
    line = one_line_error(cli("train", corpus, "--out", run, *SHORT))
    assert "never wrote a checkpoint" in line and "--force" in line
    assert cli("train", corpus, "--out", run, *SHORT, "--force").exit_code == 0


@pytest.mark.skipif(os.name != "posix", reason="the run lock is POSIX flock")
def test_a_run_directory_in_use_is_refused(cli, corpus, tmp_path):
    import fcntl
    run = tmp_path / "run"
    assert cli("train", corpus, "--out", run, *SHORT).exit_code == 0
    fd = os.open(run / ".lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running `charrnn train` holds it
        before = snapshot(run)
        for args in (("--resume", run, "--max-steps", "8"), (corpus, "--out", run, *SHORT, "--force")):
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
    # 4 * 1e7**2 float32 weights = 1.6 PB: beyond any address space, so refused even with overcommit
    line = one_line_error(cli("train", corpus, "--out", tmp_path / "run", *SHORT, "--hidden", "10000000"), code=1)
    assert "not enough memory" in line
    assert not (tmp_path / "run").exists()

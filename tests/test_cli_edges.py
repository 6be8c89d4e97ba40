"""The corners of `charrnn sample/eval/info` and the API that a black-box review found: where --output
writes (symlinks, pipes, read-only files, permission bits), stdout that is full, closed or gone, paths
that look like rich markup, metadata edited by hand, non-seekable checkpoints, absurd option values, and
arguments of the wrong type. Each must end in the documented behaviour or a one-line error."""
import json
import os
import shutil
import stat
import subprocess
import sys
import threading

import pytest
from conftest import one_line_error, snapshot

import charrnn
from charrnn.checkpoints import npz as checkpoint, store
from charrnn.cli.outfile import write_user_file
from charrnn.errors import UsageError

SAMPLE = ["-n", "20", "--seed", "3"]


@pytest.fixture(scope="module")
def expected(cli, trained) -> str:
    r = cli("sample", trained, *SAMPLE)
    assert r.exit_code == 0
    return r.stdout


# -- --output ------------------------------------------------------------------------------------------------
def test_output_replaces_a_file_keeping_its_permission_bits(cli, trained, tmp_path, expected):
    out = tmp_path / "out.txt"
    out.write_text("old")
    out.chmod(0o600)
    assert cli("sample", trained, *SAMPLE, "-o", out).exit_code == 0
    assert out.read_text() == expected
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


def test_output_through_a_symlink_writes_its_target_and_keeps_the_link(cli, trained, tmp_path, expected):
    (tmp_path / "target.txt").write_text("old")
    (tmp_path / "link.txt").symlink_to("target.txt")
    assert cli("sample", trained, *SAMPLE, "-o", tmp_path / "link.txt").exit_code == 0
    assert (tmp_path / "link.txt").is_symlink()
    assert (tmp_path / "target.txt").read_text() == expected


def test_output_refuses_a_read_only_file_and_a_directory(cli, trained, tmp_path):
    ro = tmp_path / "ro.txt"
    ro.write_text("keep")
    ro.chmod(0o444)
    (tmp_path / "dir").mkdir()
    before = snapshot(tmp_path)
    assert "read-only" in one_line_error(cli("sample", trained, *SAMPLE, "-o", ro))
    assert "is a directory" in one_line_error(cli("sample", trained, *SAMPLE, "-o", tmp_path / "dir"))
    assert snapshot(tmp_path) == before and sorted(os.listdir(tmp_path)) == ["dir", "ro.txt"]


def test_output_dash_is_stdout(cli, trained, expected, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = cli("sample", trained, *SAMPLE, "-o", "-")
    assert r.exit_code == 0 and r.stdout == expected and os.listdir(tmp_path) == []


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_output_to_a_fifo_writes_into_it_and_leaves_it_a_fifo(cli, trained, tmp_path, expected):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()), daemon=True)  # never blocks exit
    reader.start()
    assert cli("sample", trained, *SAMPLE, "-o", fifo).exit_code == 0
    reader.join(10)
    assert got == [expected] and stat.S_ISFIFO(os.stat(fifo).st_mode)


@pytest.mark.skipif(not os.path.isdir("/dev/fd"), reason="needs /dev/fd")
def test_output_to_dev_fd_writes_to_the_descriptor():
    r, w = os.pipe()
    try:
        write_user_file(f"/dev/fd/{w}", "héllo\n")
        os.close(w)
        assert os.read(r, 100).decode() == "héllo\n"
    finally:
        os.close(r)


def test_output_to_a_regular_file_under_dev_is_replaced(tmp_path):
    shm = "/dev/shm"
    if not os.path.isdir(shm) or not os.access(shm, os.W_OK):
        pytest.skip("needs a writable /dev/shm")
    p = os.path.join(shm, f"charrnn-test-{os.getpid()}.txt")
    try:
        write_user_file(p, "one\n")
        write_user_file(p, "two\n")
        assert open(p).read() == "two\n"
    finally:
        os.unlink(p)


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_an_endless_device_is_not_a_checkpoint(cli):
    assert "not an .npz file" in one_line_error(cli("info", "/dev/zero"))


# -- stdout that is full, closed or gone ---------------------------------------------------------------------
def run_cli(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "charrnn", *map(str, args)], capture_output=False, text=True,
                          stderr=subprocess.PIPE, timeout=120, **kwargs)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("args", [("sample", *SAMPLE), ("info",), ("info", "--json")])
def test_full_disk_on_stdout_is_one_line(trained, args):
    with open("/dev/full", "w") as full:
        r = run_cli(args[0], trained, *args[1:], stdout=full)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    # (the last line: NUMBA_DISABLE_JIT=1 runs add numpy's uint64 wrap-around warnings from the RNG)
    assert r.stderr.strip().splitlines()[-1] == ("error: cannot write to standard output: No space left on "
                                                 "device (check the free space where it is redirected)")


@pytest.mark.skipif(os.name != "posix", reason="closes a descriptor in the child")
def test_closed_stdout_is_one_line(trained):
    r = subprocess.run(["bash", "-c", f'"{sys.executable}" -m charrnn sample "{trained}" -n 5 >&-'],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error: standard output is closed")


def test_info_into_a_closed_pipe_exits_quietly(trained):
    rd, wr = os.pipe()
    os.close(rd)  # the reader is gone before the first write: every write raises EPIPE
    try:
        r = run_cli("info", trained, stdout=wr)
    finally:
        os.close(wr)
    assert r.returncode == 0 and r.stderr == ""


# -- paths that look like markup -----------------------------------------------------------------------------
def test_markup_in_paths_is_shown_literally(cli, trained, tmp_path):
    d = tmp_path / "exp[final]" / "x["
    d.mkdir(parents=True)
    ckpt = d / "bold]y.npz"  # the path holds "x[/bold]y.npz": a closing tag with no opening one
    shutil.copy(trained / "best.npz", ckpt)
    text = tmp_path / "notes [draft].txt"
    text.write_text("the quick brown fox")
    r = cli("info", ckpt)
    assert r.exit_code == 0 and "exp[final]/x[/bold]y.npz" in "".join(r.stdout.split())  # titles wrap
    r = cli("eval", ckpt, text)
    assert r.exit_code == 0 and "notes[draft].txt" in "".join(r.stdout.split())


# -- metadata edited by hand ---------------------------------------------------------------------------------
@pytest.mark.parametrize("edit, field", [
    (lambda m: m.update(config="x"), "(config)"),
    (lambda m: m.update(corpus=5), "(corpus)"),
    (lambda m: m.update(losses=None), "(losses)"),
    (lambda m: m.update(progress=[1]), "(progress)"),
    (lambda m: m["losses"].update(val_loss="bad"), "(losses.val_loss)"),
    (lambda m: m["progress"].update(step="7"), "(progress.step)"),
    (lambda m: m["corpus"].update(path=None), "(corpus.path)"),
    (lambda m: m["config"].update(model=3), "(config)"),
])
def test_edited_meta_is_refused_in_one_line(cli, trained, tmp_path, edit, field):
    arrays, meta = checkpoint.load(trained / "best.npz")
    meta = {k: v for k, v in meta.items() if k not in ("checksum", "format_version")}
    edit(meta)
    checkpoint.save(tmp_path / "edited.npz", arrays, meta)  # a fresh checksum: only the meta is wrong
    for args in (("info",), ("info", "--json"), ("eval", "--split", "val"), ("sample", "-n", "3")):
        line = one_line_error(cli(args[0], tmp_path / "edited.npz", *args[1:]))
        assert "meta is missing or has a bad field " + field in line, line


# -- checkpoints that are not regular files ------------------------------------------------------------------
@pytest.mark.skipif(not os.path.isdir("/dev/fd"), reason="needs /dev/fd")
def test_checkpoint_from_a_pipe_loads(trained):
    data = (trained / "best.npz").read_bytes()
    r, w = os.pipe()

    def feed():
        with os.fdopen(w, "wb") as f:
            f.write(data)
    writer = threading.Thread(target=feed)
    writer.start()
    try:
        loaded = store.load(f"/dev/fd/{r}")
    finally:
        writer.join(10)
        os.close(r)
    assert loaded.model.params.flat.tobytes() == store.load(trained / "best.npz").model.params.flat.tobytes()


# -- absurd option values ------------------------------------------------------------------------------------
def test_top_k_beyond_the_vocabulary_means_all_characters(cli, trained, expected):
    for k in (65, 2**63, 2**64 + 1):
        r = cli("sample", trained, *SAMPLE, "--top-k", k)
        assert r.exit_code == 0 and r.stdout == expected


def test_impossible_num_samples_is_one_line(cli, trained):
    line = one_line_error(cli("sample", trained, "-n", 1, "-N", 10**12, "--seed", 1), code=1)
    assert "not enough memory" in line


def test_prime_file_encoding(cli, trained, tmp_path):
    (tmp_path / "latin.txt").write_bytes("the fox é".encode("latin-1"))
    line = one_line_error(cli("sample", trained, "--prime-file", tmp_path / "latin.txt", "-n", 3))
    assert "not valid utf-8" in line and "--encoding" in line
    r = cli("sample", trained, "--prime-file", tmp_path / "latin.txt", "--encoding", "latin-1",
            "--prime-unknown", "skip", "-n", 3, "--seed", 1)
    assert r.exit_code == 0 and r.stdout.startswith("the fox ")
    r = cli("sample", trained, "--prime-file", tmp_path / "latin.txt", "--errors", "replace",
            "--prime-unknown", "skip", "-n", 3, "--seed", 1)
    assert r.exit_code == 0 and r.stdout.startswith("the fox ")


# -- eval corners --------------------------------------------------------------------------------------------
def test_eval_text_that_is_all_unknown_says_so(cli, trained, tmp_path):
    (tmp_path / "greek.txt").write_text("αβγ")
    line = one_line_error(cli("eval", trained, tmp_path / "greek.txt", "--unknown", "skip"))
    assert "0 character(s) to evaluate once the 3 unknown one(s) are dropped" in line


def test_eval_split_when_the_corpus_moved(cli, trained):
    _, meta = checkpoint.load(trained / "best.npz")
    corpus = meta["corpus"]["path"]
    os.rename(corpus, corpus + ".moved")
    try:
        line = one_line_error(cli("eval", trained, "--split", "val"))
    finally:
        os.rename(corpus + ".moved", corpus)
    assert "is no longer there" in line and "put it back" in line


# -- the API with arguments of the wrong type ----------------------------------------------------------------
@pytest.mark.parametrize("call, expect", [
    (lambda m: m.sample(5, prime=b"the"), "prime must be a str"),
    (lambda m: m.sample(5, seed=1.5), "seed must be an integer"),
    (lambda m: m.sample(5, seed=True), "seed must be an integer"),
    (lambda m: m.sample(5, seed="abc"), "seed must be an integer"),
    (lambda m: m.loss(b"the fox"), "text must be a str"),
    (lambda m: m.loss(None), "text must be a str"),
    (lambda m: charrnn.train(123), "corpus_path must be a path"),
])
def test_api_type_errors_are_usage_errors(trained, call, expect):
    with pytest.raises(UsageError, match=expect):
        call(charrnn.load(trained))


def test_info_json_of_a_markup_path_is_valid_json(cli, trained, tmp_path):
    ckpt = tmp_path / "[red]x.npz"
    shutil.copy(trained / "best.npz", ckpt)
    r = cli("info", ckpt, "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["path"] == str(ckpt)


# -- click's own usage errors --------------------------------------------------------------------------------
@pytest.mark.parametrize("args, expect", [
    (("train", "--hidden", "abc"), "Invalid value for '--hidden': 'abc' is not a valid integer."),
    (("train", "--seed", "1.5"), "Invalid value for '--seed'"),
    (("train", "--model", "LSTM"), "Invalid value for '--model'"),
    (("train", "--foo"), "No such option '--foo'"),
    (("sample",), "Missing argument 'CHECKPOINT'."),
    (("nope",), "No such command 'nope'."),
])
def test_click_usage_errors_are_one_line(cli, args, expect):
    line = one_line_error(cli(*args))
    assert expect in line and "--help)" in line


def test_help_and_version_still_exit_0(cli):
    assert cli("--version").exit_code == 0
    r = cli("sample", "--help")
    assert r.exit_code == 0 and "--prime-file" in r.stdout

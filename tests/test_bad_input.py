"""Issue 5's bad-input table, one test per row: exit code 2 (usage) or 1, a one-line message on stderr,
no traceback, and every file that existed before the command byte-for-byte unchanged. Also pickle-bearing
checkpoints (never unpickled: a marker file their payload would create never appears)."""
import json
import os
import shutil

import numpy as np
import pytest
from conftest import ENGLISH_LINES, TINY, make_text, one_line_error, snapshot

from charrnn.checkpoints import npz as checkpoint

SHORT = [*TINY, "--max-steps", "2", "--eval-every", "0", "--sample-every", "0"]


def train_fails(cli, root, *args, code=2) -> str:
    """Run `charrnn train *args`, expect a one-line error, and that nothing under root changed (a new run
    directory must not be left behind either)."""
    before = snapshot(root)
    dirs_before = sorted(p for p in root.rglob("*") if p.is_dir())
    line = one_line_error(cli("train", *args), code)
    assert snapshot(root) == before
    assert sorted(p for p in root.rglob("*") if p.is_dir()) == dirs_before
    return line


# -- the corpus ----------------------------------------------------------------------------------------------
def test_corpus_missing(cli, tmp_path):
    line = train_fails(cli, tmp_path, tmp_path / "nope.txt", "--out", tmp_path / "run", *SHORT)
    assert "not found" in line and "nope.txt" in line


def test_corpus_is_an_empty_directory(cli, tmp_path):
    (tmp_path / "dir").mkdir()
    line = train_fails(cli, tmp_path, tmp_path / "dir", "--out", tmp_path / "run", *SHORT)
    assert "has no files" in line


def test_corpus_empty(cli, tmp_path):
    (tmp_path / "empty.txt").write_bytes(b"")
    line = train_fails(cli, tmp_path, tmp_path / "empty.txt", "--out", tmp_path / "run", *SHORT)
    assert "empty" in line


def test_corpus_one_distinct_character(cli, tmp_path):
    (tmp_path / "a.txt").write_text("a" * 5000)
    line = train_fails(cli, tmp_path, tmp_path / "a.txt", "--out", tmp_path / "run", *SHORT)
    assert "only 1 distinct character" in line


def test_corpus_invalid_utf8_reports_offset_and_options_work(cli, tmp_path):
    good = make_text(ENGLISH_LINES, 90).encode()
    bad = good[:1234] + b"\xff\xfe" + good[1234:]
    (tmp_path / "bad.txt").write_bytes(bad)
    line = train_fails(cli, tmp_path, tmp_path / "bad.txt", "--out", tmp_path / "run", *SHORT)
    assert "byte offset 1234" in line and "--encoding" in line and "--errors replace" in line
    r = cli("train", tmp_path / "bad.txt", "--out", tmp_path / "latin", *SHORT, "--encoding", "latin-1")
    assert r.exit_code == 0, r.output
    r = cli("train", tmp_path / "bad.txt", "--out", tmp_path / "replace", *SHORT, "--errors", "replace")
    assert r.exit_code == 0, r.output
    import charrnn
    assert "\ufffd" in charrnn.load(tmp_path / "replace").vocab.chars
    assert "ÿ" in charrnn.load(tmp_path / "latin").vocab.chars


def test_corpus_binary(cli, tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "blob.bin").write_bytes(rng.integers(0, 256, 20000, dtype=np.uint8).tobytes())
    line = train_fails(cli, tmp_path, tmp_path / "blob.bin", "--out", tmp_path / "run", *SHORT)
    assert "binary" in line


def test_corpus_control_characters_without_nul(cli, tmp_path):
    (tmp_path / "ctl.txt").write_bytes(bytes(range(1, 9)) * 500 + b"some text\n" * 20)
    line = train_fails(cli, tmp_path, tmp_path / "ctl.txt", "--out", tmp_path / "run", *SHORT)
    assert "binary" in line


def test_corpus_utf16_is_binary_until_its_encoding_is_given(cli, tmp_path):
    (tmp_path / "u16.txt").write_text(make_text(ENGLISH_LINES, 60), encoding="utf-16")
    line = train_fails(cli, tmp_path, tmp_path / "u16.txt", "--out", tmp_path / "run", *SHORT)
    assert "binary" in line and "--encoding" in line
    r = cli("train", tmp_path / "u16.txt", "--out", tmp_path / "run", *SHORT, "--encoding", "utf-16")
    assert r.exit_code == 0, r.output


def test_unknown_encoding(cli, tmp_path, corpus):
    line = train_fails(cli, tmp_path, corpus, "--out", tmp_path / "run", *SHORT, "--encoding", "klingon")
    assert "klingon" in line


def test_corpus_shorter_than_a_batch_shrinks_with_a_warning(cli, tmp_path):
    (tmp_path / "small.txt").write_text(make_text(ENGLISH_LINES, 12))  # ~550 chars
    r = cli("train", tmp_path / "small.txt", "--out", tmp_path / "run", "--hidden", 16, "--layers", 1,
            "--batch-size", 64, "--seq-len", 100, "--max-steps", 3, "--plain", "--sample-every", 0)
    assert r.exit_code == 0, r.output
    assert "warning:" in r.stderr and "using batch_size" in r.stderr
    _, meta = checkpoint.load(tmp_path / "run" / "last.npz")
    B, T = meta["batch"]["batch_size"], meta["batch"]["seq_len"]
    assert B * T < 64 * 100 and meta["progress"]["step"] == 3


def test_corpus_far_too_short_is_refused(cli, tmp_path):
    (tmp_path / "tiny.txt").write_text("abcab")
    line = train_fails(cli, tmp_path, tmp_path / "tiny.txt", "--out", tmp_path / "run", *SHORT)
    assert "too small" in line


# -- the config ----------------------------------------------------------------------------------------------
def test_yaml_syntax_error_names_the_line(cli, tmp_path, corpus):
    (tmp_path / "c.yaml").write_text("model:\n  hidden_size: 16\n  num_layers: [1, 2\ntrain:\n  seq_len: 8\n")
    line = train_fails(cli, tmp_path, corpus, "--out", tmp_path / "run", "--config", tmp_path / "c.yaml", *SHORT)
    assert "invalid YAML" in line and "line 4" in line


def test_unknown_key_suggests_the_closest(cli, tmp_path, corpus):
    (tmp_path / "c.yaml").write_text("model:\n  hiden_size: 16\n")
    line = train_fails(cli, tmp_path, corpus, "--out", tmp_path / "run", "--config", tmp_path / "c.yaml", *SHORT)
    assert "unknown config key" in line and "model.hidden_size" in line
    line = train_fails(cli, tmp_path, corpus, "--out", tmp_path / "run", "--set", "optim.learning_rat=3", *SHORT)
    assert "unknown config key" in line


def test_unknown_section(cli, tmp_path, corpus):
    line = train_fails(cli, tmp_path, corpus, "--out", tmp_path / "run", "--set", "modle.hidden_size=3", *SHORT)
    assert "model" in line


@pytest.mark.parametrize("item, what", [("model.hidden_size=abc", "integer"), ("model.hidden_size=1.5", "integer"),
                                        ("optim.lr=fast", "number"), ("model.cell=3", "string"),
                                        ("train.max_time=forever", "duration"), ("model.cell=transformer", "one of")])
def test_wrong_type(cli, tmp_path, corpus, item, what):
    line = train_fails(cli, tmp_path, corpus, "--out", tmp_path / "run", "--set", item, *SHORT)
    assert what in line


def test_wrong_type_in_yaml(cli, tmp_path, corpus):
    (tmp_path / "c.yaml").write_text("model:\n  num_layers: two\n")
    line = train_fails(cli, tmp_path, corpus, "--out", tmp_path / "run", "--config", tmp_path / "c.yaml", *SHORT)
    assert "model.num_layers must be an integer" in line and "c.yaml" in line


@pytest.mark.parametrize("args, key", [
    (["--lr", "0"], "optim.lr"), (["--lr", "-0.1"], "optim.lr"),
    (["--dropout", "1"], "model.dropout"), (["--dropout", "-0.1"], "model.dropout"),
    (["--hidden", "0"], "model.hidden_size"), (["--hidden", "-4"], "model.hidden_size"),
    (["--layers", "0"], "model.num_layers"), (["--batch-size", "0"], "train.batch_size"),
    (["--seq-len", "0"], "train.seq_len"), (["--max-steps", "-1"], "train.max_steps"),
    (["--set", "data.val_fraction=0.5", "--set", "data.test_fraction=0.5"], "val_fraction + data.test_fraction"),
    (["--set", "data.val_fraction=1.2"], "val_fraction"),
    (["--set", "optim.grad_clip=-1"], "optim.grad_clip"), (["--temperature", "-1"], "train.temperature"),
    (["--set", "train.max_bad_steps=0"], "train.max_bad_steps"), (["--seed", "-1"], "train.seed"),
    (["--set", "data.encoding=klingon"], "data.encoding"),
])
def test_out_of_range(cli, tmp_path, corpus, args, key):
    line = train_fails(cli, tmp_path, corpus, "--out", tmp_path / "run", *SHORT, *args)
    assert key in line and "must be" in line


@pytest.mark.parametrize("item", ["model.hidden_size", "=3", "hidden_size=3", "model.hidden_size=", "a.b.c=1"])
def test_malformed_set(cli, tmp_path, corpus, item):
    line = train_fails(cli, tmp_path, corpus, "--out", tmp_path / "run", "--set", item, *SHORT)
    assert "--set" in line


def test_config_file_missing_or_unknown_name(cli, tmp_path, corpus):
    line = train_fails(cli, tmp_path, corpus, "--out", tmp_path / "run", "--config", "tinny", *SHORT)
    assert "did you mean 'tiny'" in line
    line = train_fails(cli, tmp_path, corpus, "--out", tmp_path / "run", "--config", tmp_path / "x" / "c.yaml", *SHORT)
    assert "no config file" in line


def test_config_file_not_a_mapping_or_a_directory(cli, tmp_path, corpus):
    (tmp_path / "list.yaml").write_text("- model\n- train\n")
    line = train_fails(cli, tmp_path, corpus, "--out", tmp_path / "run", "--config", tmp_path / "list.yaml", *SHORT)
    assert "mapping" in line
    (tmp_path / "flat.yaml").write_text("hidden_size: 32\n")
    line = train_fails(cli, tmp_path, corpus, "--out", tmp_path / "run", "--config", tmp_path / "flat.yaml", *SHORT)
    assert "model.hidden_size" in line
    (tmp_path / "cfgdir").mkdir()
    train_fails(cli, tmp_path, corpus, "--out", tmp_path / "run", "--config", tmp_path / "cfgdir", *SHORT)


def test_bad_duration(cli, tmp_path, corpus):
    line = train_fails(cli, tmp_path, corpus, "--out", tmp_path / "run", *SHORT, "--max-time", "soon")
    assert "train.max_time" in line and "10m" in line


def test_cosine_without_limit(cli, tmp_path, corpus):
    line = train_fails(cli, tmp_path, corpus, "--out", tmp_path / "run", *TINY, "--max-steps", 0,
                       "--max-epochs", 0, "--set", "optim.schedule=cosine",
                       "--set", "optim.schedule_length=steps")
    assert "cosine" in line


# -- the output directory ------------------------------------------------------------------------------------
def test_output_directory_not_writable(cli, tmp_path, corpus):
    if os.geteuid() == 0:  # root ignores permission bits: use a path below a regular file instead
        (tmp_path / "file.txt").write_text("not a directory")
        out = tmp_path / "file.txt" / "run"
    else:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        out = locked / "run"
    try:
        line = train_fails(cli, tmp_path, corpus, "--out", out, *SHORT)
    finally:
        if os.geteuid() != 0:
            (tmp_path / "locked").chmod(0o700)
    assert "cannot write to output directory" in line


def test_output_path_is_a_file(cli, tmp_path, corpus):
    (tmp_path / "run").write_text("x")
    line = train_fails(cli, tmp_path, corpus, "--out", tmp_path / "run", *SHORT)
    assert "not a directory" in line


def test_run_directory_holds_another_run(cli, tmp_path, corpus):
    assert cli("train", corpus, "--out", tmp_path / "run", *SHORT).exit_code == 0
    line = train_fails(cli, tmp_path, corpus, "--out", tmp_path / "run", *SHORT, "--hidden", 8)
    assert "already holds a run" in line and "--force" in line and "--resume" in line


def test_resume_with_different_corpus(cli, tmp_path, corpus):
    assert cli("train", corpus, "--out", tmp_path / "run", *SHORT).exit_code == 0
    (tmp_path / "other.txt").write_text(make_text(ENGLISH_LINES[:3], 90, seed=4))
    # (--max-steps above the run's: a finished run has nothing to train, whatever the corpus)
    line = train_fails(cli, tmp_path, tmp_path / "other.txt", "--resume", tmp_path / "run", "--max-steps", "20")
    assert "not the corpus this run was trained on" in line
    # a different vocabulary (the corpus's characters) is one way of being a different corpus
    (tmp_path / "upper.txt").write_text(corpus.read_text().upper())
    line = train_fails(cli, tmp_path, tmp_path / "upper.txt", "--resume", tmp_path / "run", "--max-steps", "20")
    assert "not the corpus" in line


# -- checkpoint problems, for sample / eval / info / --resume -------------------------------------------------
class Evil:
    """Unpickling this calls open(marker, 'w'): proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _resave(src, dst, edit, keep_checksum=False):
    """Re-save src's arrays after edit(arrays, meta); with a valid checksum unless keep_checksum."""
    arrays, meta = checkpoint.load(src)
    edit(arrays, meta)
    if keep_checksum:  # write the stale checksum back as is
        np.savez(dst, meta=np.array(json.dumps(meta)), **arrays)
    else:
        meta = {k: v for k, v in meta.items() if k not in ("checksum", "format_version")}
        checkpoint.save(dst, arrays, meta)


def make_bad_checkpoint(kind: str, src, dst, marker):
    if kind == "missing":
        return
    if kind == "truncated":
        data = src.read_bytes()
        dst.write_bytes(data[: len(data) // 2])
    elif kind == "bad checksum":
        _resave(src, dst, lambda a, m: a["decoder.bias"].__setitem__(0, a["decoder.bias"][0] + 1), keep_checksum=True)
    elif kind == "wrong shape":
        _resave(src, dst, lambda a, m: a.__setitem__("decoder.bias", np.zeros(3, np.float32)))
    elif kind == "missing array":
        _resave(src, dst, lambda a, m: a.pop("rnn.weight_hh_l0"))
    elif kind == "newer format":
        arrays, meta = checkpoint.load(src)
        meta["format_version"] = checkpoint.FORMAT_VERSION + 1
        np.savez(dst, meta=np.array(json.dumps(meta)), **arrays)
    elif kind == "pickle":
        np.savez(dst, a=np.array([{"x": 1}], dtype=object))
    elif kind == "pickle payload":
        arrays, meta = checkpoint.load(src)
        np.savez(dst, meta=np.array(json.dumps(meta)), evil=np.array([Evil(marker)], dtype=object), **arrays)
    elif kind == "not a checkpoint":
        dst.write_text("hello")
    elif kind == "nan weights":
        _resave(src, dst, lambda a, m: a["decoder.weight"].__setitem__((0, 0), np.nan))
    else:
        raise AssertionError(kind)


KINDS = ["missing", "truncated", "bad checksum", "wrong shape", "missing array", "newer format", "pickle",
         "pickle payload", "not a checkpoint", "nan weights"]
EXPECT = {"missing": "does not exist", "truncated": "corrupt or truncated", "bad checksum": "checksum mismatch",
          "wrong shape": "decoder.bias has shape", "missing array": "missing array rnn.weight_hh_l0",
          "newer format": "newer charrnn", "pickle": "needs pickle", "pickle payload": "needs pickle",
          "not a checkpoint": "not a charrnn checkpoint", "nan weights": "NaN"}


@pytest.mark.parametrize("command", ["sample", "eval", "info", "resume"])
@pytest.mark.parametrize("kind", KINDS)
def test_bad_checkpoint(cli, trained, tmp_path, kind, command):
    shutil.copytree(trained, tmp_path / "run")  # a run dir, so --resume has its corpus and logs
    bad = tmp_path / "run" / "bad.npz"
    marker = tmp_path / "marker"
    make_bad_checkpoint(kind, trained / "last.npz", bad, marker)
    (tmp_path / "text.txt").write_text("the quick brown fox jumps over the lazy dog.\n")
    args = {"sample": ["sample", bad, "-n", 10, "--seed", 1], "eval": ["eval", bad, tmp_path / "text.txt"],
            "info": ["info", bad], "resume": ["train", "--resume", bad]}[command]
    before = snapshot(tmp_path)
    line = one_line_error(cli(*args), 2)
    assert EXPECT[kind] in line, line
    assert snapshot(tmp_path) == before
    assert not marker.exists()


def test_pickle_payload_would_really_run(tmp_path, trained):
    """The pickle fixture is live: numpy with allow_pickle=True does create the marker."""
    marker = tmp_path / "marker"
    make_bad_checkpoint("pickle payload", trained / "last.npz", tmp_path / "evil.npz", marker)
    with np.load(tmp_path / "evil.npz", allow_pickle=True) as z:
        z["evil"]
    assert marker.exists()


def test_resume_run_dir_with_a_pickle_last_npz(cli, trained, tmp_path):
    shutil.copytree(trained, tmp_path / "run")
    marker = tmp_path / "marker"
    (tmp_path / "run" / "last.npz").unlink()
    make_bad_checkpoint("pickle payload", trained / "last.npz", tmp_path / "run" / "last.npz", marker)
    before = snapshot(tmp_path)
    assert "needs pickle" in one_line_error(cli("train", "--resume", tmp_path / "run"))
    assert snapshot(tmp_path) == before and not marker.exists()


def test_run_dir_without_checkpoints(cli, tmp_path):
    (tmp_path / "empty").mkdir()
    for args in (["sample", tmp_path / "empty"], ["info", tmp_path / "empty"]):
        assert "holds no best.npz or last.npz" in one_line_error(cli(*args))


# -- sampling options ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args, expect", [
    (["-p", "the QUICK fox"], "not in the model's vocabulary: 'C', 'I', 'K', 'Q', 'U'"),
    (["-n", "0"], "length must be"), (["-n", "-5"], "length must be"),
    (["-t", "-0.5"], "temperature must be >= 0"),
    (["--top-p", "0"], "top-p must be in (0, 1]"), (["--top-p", "1.5"], "top-p must be in (0, 1]"),
    (["--top-p", "-0.2"], "top-p must be in (0, 1]"),
    (["--top-k", "0"], "--top-k must be >= 1"), (["--top-k", "-3"], "--top-k must be >= 1"),
    (["-N", "0"], "num-samples must be"),
    (["-t", "nan"], "temperature must be a finite number"),
])
def test_bad_sampling_options(cli, trained, tmp_path, args, expect):
    before = snapshot(trained)
    line = one_line_error(cli("sample", trained, *args))
    assert expect in line, line
    assert snapshot(trained) == before


def test_prime_unknown_is_listed_and_skip_works(cli, trained):
    line = one_line_error(cli("sample", trained, "-p", "naïve Ωmega", "-n", 5))
    assert "'Ω'" in line and "'ï'" in line and "--prime-unknown skip" in line
    r = cli("sample", trained, "-p", "naïve Ωmega", "-n", 5, "--prime-unknown", "skip", "--seed", 1)
    assert r.exit_code == 0 and r.stdout.startswith("nave mega")


def test_prime_file_missing(cli, trained, tmp_path):
    assert "does not exist" in one_line_error(cli("sample", trained, "--prime-file", tmp_path / "nope.txt"))


def test_output_file_unwritable(cli, trained, tmp_path):
    line = one_line_error(cli("sample", trained, "-n", 5, "--output", tmp_path / "no" / "dir" / "out.txt"))
    assert "cannot write" in line
    assert not (tmp_path / "no").exists()


# -- eval inputs ----------------------------------------------------------------------------------------------
def test_eval_file_problems(cli, trained, tmp_path):
    (tmp_path / "greek.txt").write_text("αβγ the fox")
    line = one_line_error(cli("eval", trained, tmp_path / "greek.txt"))
    assert "never seen" in line and "--unknown skip" in line
    r = cli("eval", trained, tmp_path / "greek.txt", "--unknown", "skip", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["chars"] == len(" the fox")
    assert "not found" in one_line_error(cli("eval", trained, tmp_path / "nope.txt"))
    (tmp_path / "one.txt").write_text("t")
    assert "1 character(s) to evaluate" in one_line_error(cli("eval", trained, tmp_path / "one.txt"))
    (tmp_path / "same.txt").write_text("eeeeeeee")  # one distinct character is fine to evaluate
    assert cli("eval", trained, tmp_path / "same.txt").exit_code == 0
    (tmp_path / "bad.txt").write_bytes(b"the \xff fox")
    assert "byte offset 4" in one_line_error(cli("eval", trained, tmp_path / "bad.txt"))


def test_eval_split_when_the_corpus_changed(cli, trained):
    _, meta = checkpoint.load(trained / "best.npz")
    corpus = meta["corpus"]["path"]
    original = open(corpus, "rb").read()
    try:
        with open(corpus, "ab") as f:
            f.write(b"more text\n")
        assert "has changed since training" in one_line_error(cli("eval", trained, "--split", "val"))
    finally:
        with open(corpus, "wb") as f:
            f.write(original)


def test_resume_from_a_weights_only_checkpoint(cli, trained, tmp_path):
    arrays, meta = checkpoint.load(trained / "last.npz")
    meta = {k: v for k, v in meta.items() if k not in ("progress", "rng", "checksum", "format_version")}
    checkpoint.save(tmp_path / "weights.npz", {k: v for k, v in arrays.items() if not k.startswith("optim.")}, meta)
    before = snapshot(tmp_path)
    assert "no complete training state" in one_line_error(cli("train", "--resume", tmp_path / "weights.npz"))
    assert snapshot(tmp_path) == before
    # it still samples and evaluates: only resuming needs the training state
    assert cli("sample", tmp_path / "weights.npz", "-n", 5, "--seed", 1).exit_code == 0


def test_disk_full_while_checkpointing(cli, corpus, tmp_path, monkeypatch):
    import errno

    from charrnn.training import trainer
    real = trainer.checkpoint.save

    def save(path, arrays, meta):
        if meta["progress"]["step"] >= 4:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, arrays, meta)
    monkeypatch.setattr(trainer.checkpoint, "save", save)
    r = cli("train", corpus, "--out", tmp_path / "run", *SHORT, "--max-steps", 10, "--checkpoint-every", 2)
    line = one_line_error(r, 1)
    assert "cannot write checkpoint" in line and "No space left" in line and "--resume" in line
    assert checkpoint.load(tmp_path / "run" / "last.npz")[1]["progress"]["step"] == 2

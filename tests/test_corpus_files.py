"""A corpus of many files: several paths, directories read recursively (`--glob`), in a stable sorted
order, joined by a separator (default a blank line), listed in the run header, cached by all of them."""
import json
import os

import numpy as np
import pytest
from conftest import ENGLISH_LINES, TINY, make_text, one_line_error, snapshot
from pty_run import run_in_pty

import charrnn
from charrnn.data import corpus as D
from charrnn.data.corpus import load_corpus
from charrnn.errors import UsageError
from charrnn.data.sources import decode_escapes, find_files

SHORT = [*TINY, "--max-steps", 12, "--eval-every", 6, "--sample-every", 0]


def tree(root, files: dict[str, str]):
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")
    return root


def text_of(corpus) -> str:
    return corpus.vocab.decode(corpus.data)


# -- which files, in what order ---------------------------------------------------------------------------
def test_directory_is_read_recursively_in_sorted_order(tmp_path):
    root = tree(tmp_path / "c", {"b.txt": "bee\n", "a.txt": "ay\n", "sub/z.txt": "zed\n", "B.txt": "big\n",
                                 ".hidden.txt": "no", ".git/x.txt": "no", "empty.txt": ""})
    found = find_files(root)
    assert [shown for _, shown in found] == [os.path.join(str(root), n) for n in ("B.txt", "a.txt", "b.txt", "sub/z.txt")]
    assert text_of(load_corpus(root)) == "big\n\nay\n\nbee\n\nzed\n"


def test_paths_keep_their_order_and_a_file_is_read_once(tmp_path):
    root = tree(tmp_path, {"d/one.txt": "one\n", "d/two.txt": "two\n", "x.txt": "ex\n"})
    corpus = load_corpus([root / "x.txt", root / "d", root / "d" / "two.txt"])
    assert text_of(corpus) == "ex\n\none\n\ntwo\n"
    assert [p.name for p in corpus.files] == ["x.txt", "one.txt", "two.txt"]


def test_glob_selects_files_at_any_depth(tmp_path):
    root = tree(tmp_path / "src", {"a.py": "print(1)\n", "b.md": "# b\n", "pkg/c.py": "x = 2\n"})
    assert text_of(load_corpus(root, glob="*.py")) == "print(1)\n\nx = 2\n"
    assert text_of(load_corpus(root, glob="pkg/*.py")) == "x = 2\n"


@pytest.mark.parametrize(("sep", "texts", "joined"), [
    ("\n\n", ["ab\n", "cd\n"], "ab\n\ncd\n"),  # a file's final newline is the separator's first one
    ("\n\n", ["ab", "cd"], "ab\n\ncd"),  # either way: one blank line between files
    ("\n", ["ab\n", "cd"], "ab\ncd"),
    ("", ["ab\n", "cd"], "ab\ncd"),
    ("<|end|>", ["ab\n", "cd"], "ab\n<|end|>cd"),
])
def test_separator(tmp_path, sep, texts, joined):
    paths = []
    for i, t in enumerate(texts):
        paths.append(tmp_path / f"{i}.txt")
        paths[-1].write_text(t, encoding="utf-8")
    assert text_of(load_corpus(paths, separator=sep)) == joined


def test_decode_escapes():
    assert decode_escapes(r"\n\n") == "\n\n" and decode_escapes(r"a\tb\\n") == "a\tb\\n" and decode_escapes("\\") == "\\"


@pytest.mark.parametrize(("make", "kwargs", "needle"), [
    (lambda d: [d / "empty"], {}, "has no files"),
    (lambda d: [d / "full"], {"glob": "*.nothing"}, "no files matching '*.nothing'"),
    (lambda d: [d / "full" / "a.txt"], {"glob": "*.txt"}, "no corpus path is a directory"),
    (lambda d: [d / "full", d / "missing.txt"], {}, "not found"),
    (lambda d: [d / "full", d / "bin"], {}, "looks like binary data"),
    (lambda d: [], {}, "no corpus path given"),
])
def test_bad_corpus_paths_are_one_line_errors(tmp_path, make, kwargs, needle):
    (tmp_path / "empty").mkdir()
    tree(tmp_path, {"full/a.txt": "hello there\n"})
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "x.dat").write_bytes(b"\x00\x01\x02binary")
    with pytest.raises(UsageError) as e:
        load_corpus(make(tmp_path), **kwargs)
    assert needle in e.value.message
    if "binary" in needle:
        assert "x.dat" in e.value.message  # which file of the directory it was


# -- the cache ------------------------------------------------------------------------------------------
def test_cache_is_keyed_by_every_file_and_the_separator(tmp_path, monkeypatch):
    root = tree(tmp_path / "c", {"a.txt": "alpha\n", "b.txt": "beta\n"})
    cache = tmp_path / "cache"
    first = load_corpus(root, cache_dir=cache)
    meta = json.loads((cache / "corpus.json").read_text())
    assert meta["source"] == [str(root / "a.txt"), str(root / "b.txt")] and len(meta["files_sha256"]) == 2
    assert load_corpus(root, cache_dir=cache).from_cache
    assert not load_corpus(root, cache_dir=cache, separator="\n").from_cache
    load_corpus(root, cache_dir=cache)
    # an edit that keeps size and mtime (cp -p, rsync -t) is still seen: every file is re-hashed
    st = (root / "b.txt").stat()
    (root / "b.txt").write_text("BETA\n", encoding="utf-8")
    os.utime(root / "b.txt", ns=(st.st_atime_ns, st.st_mtime_ns))
    edited = load_corpus(root, cache_dir=cache)
    assert not edited.from_cache and text_of(edited) == "alpha\n\nBETA\n" and edited.sha256 != first.sha256
    (root / "c.txt").write_text("gamma\n", encoding="utf-8")  # a new file in the directory
    grown = load_corpus(root, cache_dir=cache)
    assert not grown.from_cache and text_of(grown).endswith("gamma\n")
    monkeypatch.setattr(D, "_build", lambda *a, **k: pytest.fail("read again"))
    again = load_corpus(root, cache_dir=cache)
    assert again.from_cache and again.sha256 == grown.sha256 and again.files == grown.files
    np.testing.assert_array_equal(again.data, grown.data)


def test_one_file_keeps_its_own_sha256(tmp_path):
    """A single file's identity is still the SHA-256 of its bytes (old runs resume as before)."""
    import hashlib
    p = tmp_path / "a.txt"
    p.write_text("hello world\n", encoding="utf-8")
    assert load_corpus(p).sha256 == hashlib.sha256(p.read_bytes()).hexdigest()
    assert load_corpus([tmp_path]).sha256 == load_corpus(p).sha256


# -- training ----------------------------------------------------------------------------------------------
@pytest.fixture
def corpus_dir(tmp_path):
    return tree(tmp_path / "books", {f"part{i}.txt": make_text(ENGLISH_LINES, 30, seed=i) for i in range(3)}
                | {"notes/extra.md": make_text(ENGLISH_LINES, 20, seed=9)})


def test_cli_train_on_a_directory_lists_the_files_and_resumes(cli, corpus_dir, tmp_path):
    run = tmp_path / "run"
    r = cli("train", corpus_dir, "--out", run, *SHORT, "--glob", "*.txt")
    assert r.exit_code == 0, r.output
    assert "corpus: 3 files" in r.stdout and "part0.txt, part1.txt, part2.txt (--glob '*.txt')" in r.stdout
    meta = charrnn.load(run / "last.npz").meta
    assert meta["corpus"]["sources"] == [str(corpus_dir)] and len(meta["corpus"]["files"]) == 3
    assert meta["config"]["data"]["glob"] == "*.txt"
    assert "3 file(s) from" in cli("info", run).stdout
    assert cli("eval", run, "--split", "val").exit_code == 0
    r = cli("train", "--resume", run, "--max-steps", 18, "--plain")  # the corpus comes from the checkpoint
    assert r.exit_code == 0, r.output
    assert charrnn.load(run / "last.npz").meta["progress"]["step"] == 18
    (corpus_dir / "part1.txt").write_text("something else entirely\n" * 40, encoding="utf-8")
    before = snapshot(run)
    line = one_line_error(cli("train", "--resume", run, "--max-steps", 24, "--plain"))
    assert "is not the corpus this run was trained on" in line
    assert snapshot(run) == before


def test_cli_train_several_paths_and_separator(cli, corpus_dir, tmp_path):
    run = tmp_path / "run"
    r = cli("train", corpus_dir / "part2.txt", corpus_dir / "notes", "--out", run, *SHORT, "--separator", r"\n")
    assert r.exit_code == 0, r.output
    corpus = charrnn.load(run / "last.npz").meta["corpus"]
    assert [os.path.basename(f) for f in corpus["files"]] == ["part2.txt", "extra.md"]
    assert charrnn.load(run / "last.npz").meta["config"]["data"]["separator"] == "\n"


@pytest.mark.parametrize(("args", "needle"), [
    (["{root}/empty"], "has no files"),
    (["{root}/books", "--glob", "*.rst"], "no files matching '*.rst'"),
])
def test_cli_bad_directories(cli, corpus_dir, tmp_path, args, needle):
    (tmp_path / "empty").mkdir()
    line = one_line_error(cli("train", *[a.format(root=tmp_path) for a in args], "--out", tmp_path / "run", *SHORT))
    assert needle in line
    assert not (tmp_path / "run").exists()


def test_the_run_directory_inside_the_corpus_directory_is_not_read(cli, corpus_dir):
    run = corpus_dir / "run"
    assert cli("train", corpus_dir, "--out", run, *SHORT).exit_code == 0
    # again: the first run's checkpoints and cache (binary) are not corpus files
    r = cli("train", corpus_dir, "--out", run, *SHORT, "--force")
    assert r.exit_code == 0, r.output
    assert all("/run/" not in f for f in charrnn.load(run / "last.npz").meta["corpus"]["files"])


def test_api_train_on_a_list_of_paths(corpus_dir, tmp_path):
    best = charrnn.train([corpus_dir / "part0.txt", corpus_dir / "notes"],
                         {"model": {"hidden_size": 16, "num_layers": 1},
                          "train": {"batch_size": 4, "seq_len": 16, "max_steps": 6, "eval_every": 3, "sample_every": 0},
                          "data": {"separator": "\n---\n"}}, tmp_path / "run", live=False)
    assert "-" in charrnn.load(best).vocab.chars  # the separator is part of the text
    with pytest.raises(UsageError, match="must be a path"):
        charrnn.train([corpus_dir, 3], out_dir=tmp_path / "bad")


def test_train_on_a_directory_in_a_terminal(corpus_dir, tmp_path):
    live = [a for a in SHORT if a != "--plain"]  # the live progress bar, as at a terminal
    code, out = run_in_pty(["train", corpus_dir, "--out", tmp_path / "run", *live], tmp_path)
    assert code == 0, out
    assert "4 files" in out and "notes/extra.md" in out and "best checkpoint:" in out
    assert "Traceback" not in out

"""Issue 30: hostile and broken input, round 2. Every file is built here: metas edited and re-saved with
a recomputed checksum, a zip-bomb member, a YAML alias bomb, /dev/zero and a FIFO without a writer as
inputs, a full tmpfs (where mounting one is allowed). Each case asserts the exit code, one line on
stderr, no traceback, and that every file that was there before is unchanged; the cases that would read
without end run as a real process under an address-space limit and a timeout, so an unbounded read or
allocation fails the test instead of eating the machine.

Classes (counted in the closing note): outputs onto inputs, failing resumes, unbounded memory or time,
tracebacks, unclear messages."""
import json
import os
import resource
import shutil
import struct
import subprocess
import sys
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import ENGLISH_LINES, TINY, make_text, one_line_error, snapshot

from charrnn.checkpoints import npz as checkpoint

MEMORY_LIMIT = 1 << 30  # address space of a child: a normal command needs about 0.5 GB of it
TIMEOUT = 60  # seconds: catches a hang, not slowness


def run(*args, cwd, input=None, env=None) -> subprocess.CompletedProcess:
    """The real CLI in a child process limited to MEMORY_LIMIT bytes of address space and TIMEOUT seconds."""
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    started = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "charrnn", *map(str, args)], cwd=cwd, capture_output=True,
                       text=True, timeout=TIMEOUT, preexec_fn=limit, input=input, env=env)
    r.seconds = time.monotonic() - started
    return r


def refused(r: subprocess.CompletedProcess, code: int = 2) -> str:
    """Assert a child's one-line refusal (exit code, no traceback, one error line); return the line."""
    assert r.returncode == code, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr + r.stdout
    lines = [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith("warning:")]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr[-2000:]
    return lines[0]


def resave(src, dst, edit) -> None:
    """src's arrays and meta after edit(arrays, meta), saved by checkpoint.save: a valid checksum."""
    arrays, meta = checkpoint.load(src)
    edit(arrays, meta)
    checkpoint.save(dst, arrays, {k: v for k, v in meta.items() if k not in ("checksum", "format_version")})


@pytest.fixture
def run_copy(trained, tmp_path):
    """A private copy of the session's trained run, and a text file beside it."""
    shutil.copytree(trained, tmp_path / "run")
    (tmp_path / "text.txt").write_text("the quick brown fox jumps over the lazy dog.\n")
    # Other tests touch the shared corpus (its mtime), which makes a resume rebuild the cache: bring it up
    # to date now, so "unchanged" below means what the command under test did.
    from charrnn.data.corpus import load_corpus
    load_corpus(checkpoint.read_meta(trained / "last.npz")["corpus"]["path"], cache_dir=tmp_path / "run" / "cache")
    return tmp_path / "run"


# -- an output aimed at an input ----------------------------------------------------------------------------
def output_onto_input_cases(run, tmp):
    ckpt, text = run / "best.npz", tmp / "text.txt"
    os.link(ckpt, tmp / "hard.npz")
    os.symlink(text, tmp / "link.txt")
    return {
        "sample --output CKPT": ["sample", run, "-n", 5, "--output", ckpt],
        "sample --output hard link of CKPT": ["sample", ckpt, "-n", 5, "--output", tmp / "hard.npz"],
        "sample --output link to --prime-file": ["sample", ckpt, "-n", 5, "--prime-file", text, "-o", tmp / "link.txt"],
        "eval --per-char FILE": ["eval", ckpt, text, "--per-char", text],
        "eval --per-char CKPT": ["eval", ckpt, text, "--per-char", ckpt],
        # the corpus the checkpoint records (the session's trained run's, outside tmp)
        "eval --split --per-char corpus": ["eval", ckpt, "--split", "val", "--per-char",
                                           checkpoint.read_meta(ckpt)["corpus"]["path"]],
        "activations -o FILE": ["activations", ckpt, tmp / "page.html", "-o", tmp / "page.html"],
        "train --force: corpus is a run file": ["train", run / "samples.txt", "--out", run, "--force", *TINY],
        "plot -o link to metrics.jsonl": ["plot", run, "-o", tmp / "loss.png"],
        "diagnose -o link to --text": ["diagnose", ckpt, "--text", text, "-o", tmp / "d.png", "--seq-len", 8],
    }


OUTPUT_CASES = ["sample --output CKPT", "sample --output hard link of CKPT", "sample --output link to --prime-file",
                "eval --per-char FILE", "eval --per-char CKPT", "eval --split --per-char corpus",
                "activations -o FILE", "train --force: corpus is a run file", "plot -o link to metrics.jsonl",
                "diagnose -o link to --text"]


@pytest.mark.parametrize("case", OUTPUT_CASES)
def test_an_output_never_overwrites_an_input(cli, run_copy, tmp_path, case):
    if case.startswith(("plot", "diagnose")):
        pytest.importorskip("matplotlib")  # -o needs the plot extra
    (tmp_path / "page.html").write_text("the lazy dog. the quick fox.\n")
    os.symlink(run_copy / "metrics.jsonl", tmp_path / "loss.png")
    os.symlink(tmp_path / "text.txt", tmp_path / "d.png")
    args = output_onto_input_cases(run_copy, tmp_path)[case]
    corpus = Path(checkpoint.read_meta(run_copy / "best.npz")["corpus"]["path"])
    before = snapshot(tmp_path), corpus.read_bytes()
    line = one_line_error(cli(*args), 2)
    assert "would destroy the input" in line, line
    assert (snapshot(tmp_path), corpus.read_bytes()) == before


# -- edited metas with a valid checksum -----------------------------------------------------------------------
META_EDITS = {
    "num_layers 10^9": (lambda m: m["model"].__setitem__("num_layers", 10**9), "model.num_layers"),
    "hidden_size 32.7": (lambda m: m["model"].__setitem__("hidden_size", 32.7), "model.hidden_size"),
    'hidden_size "16"': (lambda m: m["model"].__setitem__("hidden_size", "16"), "model.hidden_size"),
    "embedding_size -5": (lambda m: m["model"].__setitem__("embedding_size", -5), "model.embedding_size"),
    "step NaN": (lambda m: m["progress"].__setitem__("step", float("nan")), "progress.step"),
    "step -5": (lambda m: m["progress"].__setitem__("step", -5), "progress.step"),
    "step 6.5": (lambda m: m["progress"].__setitem__("step", 6.5), "progress.step"),
    "batch_size 10^12": (lambda m: m["batch"].__setitem__("batch_size", 10**12), "batch.batch_size"),
    "cell contradicts config": (lambda m: m["model"].__setitem__("cell", "gru"), "contradicts itself"),
}


@pytest.mark.parametrize("edit", list(META_EDITS))
@pytest.mark.parametrize("command", ["info", "resume"])
def test_edited_meta_is_refused_before_anything_changes(cli, run_copy, edit, command):
    change, expect = META_EDITS[edit]
    resave(run_copy / "last.npz", run_copy / "last.npz", lambda a, m: change(m))
    (run_copy / "metrics.jsonl").open("a").write('{"step": 999, "train_loss": 1.0}\n')  # a resume would trim it
    before = snapshot(run_copy.parent)
    args = ["info", run_copy / "last.npz"] if command == "info" else ["train", "--resume", run_copy / "last.npz"]
    line = one_line_error(cli(*args), 2)
    assert expect in line, line
    assert snapshot(run_copy.parent) == before  # metrics.jsonl not emptied, best.npz not rewritten


RESUME_EDITS = {
    "rng state 10^60": (lambda m: m["rng"]["state"].__setitem__("state", 10**60), "training state"),
    "train_loss_smooth a string": (lambda m: m["progress"].__setitem__("train_loss_smooth", "low"),
                                   "progress.train_loss_smooth"),
}


@pytest.mark.parametrize("edit", list(RESUME_EDITS))
def test_edited_training_state_is_refused_before_a_resume_changes_anything(cli, run_copy, edit):
    change, expect = RESUME_EDITS[edit]
    resave(run_copy / "last.npz", run_copy / "last.npz", lambda a, m: change(m))
    (run_copy / "metrics.jsonl").open("a").write('{"step": 999, "train_loss": 1.0}\n')
    before = snapshot(run_copy.parent)
    line = one_line_error(cli("train", "--resume", run_copy / "last.npz", "--max-steps", 100), 2)
    assert expect in line, line
    assert snapshot(run_copy.parent) == before


def test_a_huge_meta_model_costs_no_time_or_memory(run_copy):
    def huge(a, m):
        for section in (m["model"], m["config"]["model"]):  # consistent with its config
            section.update(num_layers=1000, hidden_size=60000)
    resave(run_copy / "last.npz", run_copy / "huge.npz", huge)
    r = run("info", run_copy / "huge.npz", cwd=run_copy)
    assert "the file's arrays hold only" in refused(r)


# -- zip bomb -------------------------------------------------------------------------------------------------
def _deflate_zeros(n_units: int) -> tuple[bytes, int]:
    """A raw deflate stream of one 0 byte then 258 * (1 + 8 * n_units) more zeros, built by hand (a fixed
    Huffman block of length-258 distance-1 matches: 13 bits each), so a gigabyte costs milliseconds."""
    head = zlib.compressobj(9, zlib.DEFLATED, -15)
    start = head.compress(b"\0") + head.flush(zlib.Z_SYNC_FLUSH)  # byte-aligned, not final

    def bits(fields) -> bytes:
        acc = n = 0
        for value, width, msb_first in fields:
            if msb_first:  # Huffman codes go most significant bit first
                value = int(f"{value:0{width}b}"[::-1], 2)
            acc |= value << n
            n += width
        assert n % 8 == 0
        return acc.to_bytes(n // 8, "little")

    match = [(0b11000101, 8, True), (0, 5, True)]  # length 258 (code 285), distance 1 (code 0)
    first = bits([(1, 1, False), (1, 2, False), *match])  # BFINAL, fixed Huffman, one match: 16 bits
    unit = bits(match * 8)  # 104 bits = 13 bytes
    end = bits([(0, 7, True), (0, 1, False)])  # end of block, padded
    return start + first + unit * n_units + end, 1 + 258 * (1 + 8 * n_units)


def _write_zip(path, members: list[tuple[str, bytes, int, int, int]]) -> None:
    """A zip of (name, stored bytes, method, crc, uncompressed size), written by hand."""
    out, central = bytearray(), bytearray()
    for name, data, method, crc, size in members:
        header = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0x21, crc, len(data), size,
                             len(name), 0)
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0x21, crc, len(data),
                               size, len(name), 0, 0, 0, 0, 0, len(out)) + name.encode()
        out += header + name.encode() + data
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(central), len(out), 0)
    path.write_bytes(bytes(out + central + end))


def test_zip_bomb_member_is_refused_before_it_is_inflated(run_copy):
    members = []
    with zipfile.ZipFile(run_copy / "last.npz") as z:
        for info in z.infolist():
            data = z.read(info)
            members.append((info.filename, data, 0, zlib.crc32(data), len(data)))
    body, size = _deflate_zeros(1_000_000)  # 2 GB of zeros in 13 MB
    header = np.lib.format  # an .npy header declaring every byte of it, as a real bomb would
    import io
    f = io.BytesIO()
    header.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": (size,)})
    npy_header = f.getvalue()
    # the header's bytes then the zeros: stored header block + the hand-made stream
    pre = zlib.compressobj(9, zlib.DEFLATED, -15)
    lead = pre.compress(npy_header) + pre.flush(zlib.Z_SYNC_FLUSH)
    members.append(("optim.bomb.npy", lead + body, 8, 0, len(npy_header) + size))
    _write_zip(run_copy / "bomb.npz", members)
    with zipfile.ZipFile(run_copy / "bomb.npz") as z:  # the bomb is real: it inflates as declared
        with z.open("optim.bomb.npy") as m:
            assert m.read(1 << 20)[len(npy_header):] == bytes((1 << 20) - len(npy_header))
    before = snapshot(run_copy)
    r = run("info", run_copy / "bomb.npz", cwd=run_copy)
    assert "more than a checkpoint of this model can" in refused(r)
    assert snapshot(run_copy) == before


# -- endless streams and silent FIFOs ---------------------------------------------------------------------------
@pytest.mark.parametrize("args", [["eval", "CKPT", "/dev/zero"], ["activations", "CKPT", "/dev/zero", "--terminal"],
                                  ["diagnose", "CKPT", "--text", "/dev/zero", "--terminal"],
                                  ["sample", "CKPT", "--prime-file", "/dev/zero"],
                                  ["train", "--config", "/dev/zero", "CORPUS"]],
                         ids=["eval", "activations", "diagnose --text", "sample --prime-file", "train --config"])
def test_an_endless_stream_is_read_with_a_bound(run_copy, tmp_path, args):
    args = [run_copy / "best.npz" if a == "CKPT" else tmp_path / "text.txt" if a == "CORPUS" else a for a in args]
    before = snapshot(tmp_path)
    r = run(*args, *(["--out", tmp_path / "new"] if args[0] == "train" else []), cwd=tmp_path)
    assert "the most charrnn reads" in refused(r)
    assert snapshot(tmp_path) == before and not (tmp_path / "new").exists()


@pytest.mark.parametrize("args", [["eval", "CKPT", "FIFO"], ["info", "FIFO"], ["sample", "CKPT", "--prime-file", "FIFO"],
                                  ["train", "CORPUS", "--config", "FIFO", "--out", "new"]],
                         ids=["eval FILE", "info CKPT", "sample --prime-file", "train --config"])
def test_a_fifo_without_a_writer_is_refused_in_bounded_time(cli, run_copy, tmp_path, monkeypatch, args):
    from charrnn import userfiles
    monkeypatch.setattr(userfiles, "STREAM_WAIT_S", 0.5)  # in-process, so the wait need not be the real 10 s
    os.mkfifo(tmp_path / "fifo")
    names = {"CKPT": run_copy / "best.npz", "FIFO": tmp_path / "fifo", "CORPUS": tmp_path / "text.txt",
             "new": tmp_path / "new"}
    before = snapshot(tmp_path, exclude=("fifo",))
    started = time.monotonic()
    line = one_line_error(cli(*[names.get(a, a) for a in args]), 2)
    assert "sent no data" in line and time.monotonic() - started < 30
    assert snapshot(tmp_path, exclude=("fifo",)) == before and not (tmp_path / "new").exists()


def test_a_device_as_checkpoint_is_not_read_on(tmp_path):
    assert "not a charrnn checkpoint" in refused(run("info", "/dev/zero", cwd=tmp_path))


def test_a_pipe_with_a_writer_is_read(run_copy, tmp_path):
    r = run("sample", run_copy / "best.npz", "-n", 5, "--seed", 1, "--prime-file", "/dev/stdin", cwd=tmp_path,
            input="the ")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("the ")


# -- configs: an alias bomb, sizes beyond memory ----------------------------------------------------------------
def alias_bomb() -> str:
    levels = ["&a0 [" + ",".join(["lol"] * 9) + "]"]
    levels += [f"&a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    return "data:\n  glob: [" + ", ".join(levels) + "]\n"


@pytest.mark.parametrize("case", ["yaml alias bomb", "--set alias bomb", "--hidden 99999999999",
                                  "yaml hidden_size 1e26"])
def test_configs_that_would_eat_memory(tmp_path, case):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(make_text(ENGLISH_LINES, 90))
    (tmp_path / "bomb.yaml").write_text(alias_bomb())
    (tmp_path / "big.yaml").write_text("model:\n  hidden_size: 100000000000000000000000000\n")
    extra = {"yaml alias bomb": ["--config", "bomb.yaml"],
             "--set alias bomb": ["--set", "data.glob=" + alias_bomb().split("glob: ")[1].strip()],
             "--hidden 99999999999": ["--hidden", "99999999999"],
             "yaml hidden_size 1e26": ["--config", "big.yaml"]}[case]
    before = snapshot(tmp_path)
    r = run("train", corpus, "--out", tmp_path / "run", "--max-steps", 1, *extra, cwd=tmp_path)
    line = refused(r)
    assert ("aliases expand" in line) if "alias" in case else ("more than this machine's" in line), line
    assert snapshot(tmp_path) == before and not (tmp_path / "run").exists()


def test_safe_yaml_keeps_ordinary_anchors_and_refuses_recursive_ones():
    from charrnn.errors import UsageError
    from charrnn.yamlread import safe_yaml
    assert safe_yaml("a: &x {b: 1}\nc: *x\n", "t") == {"a": {"b": 1}, "c": {"b": 1}}
    with pytest.raises(UsageError, match="refers to the node that holds it"):
        safe_yaml("a: &x [1, *x]\n", "t")
    with pytest.raises(UsageError, match="expand it to more than"):
        safe_yaml(alias_bomb(), "t")


# -- lone surrogates in the vocabulary --------------------------------------------------------------------------
def test_lone_surrogates_survive_every_text_output(cli, tmp_path, monkeypatch):
    text = make_text(ENGLISH_LINES, 60).replace("fox", "f\\ud800x")  # unicode_escape makes \ud800 one char
    (tmp_path / "esc.txt").write_text(text)
    monkeypatch.chdir(tmp_path)
    r = cli("train", "esc.txt", "--out", "run", *TINY, "--max-steps", 4, "--eval-every", 2, "--sample-every", 2,
            "--sample-length", 200, "--temperature", 3, "--encoding", "unicode_escape")
    assert r.exit_code == 0, r.output
    import charrnn
    assert "\ud800" in charrnn.load(tmp_path / "run").vocab.chars
    in_process = [["info", "run"], ["sample", "run", "-n", 300, "-t", 3, "--seed", 2, "--output", "out.txt"],
                  ["eval", "run", "esc.txt", "--encoding", "unicode_escape", "--per-char", "chars.jsonl"]]
    import importlib.util
    for fmt, module in (("onnx", "onnx"), ("safetensors", "safetensors")):  # the export extra, where installed
        if importlib.util.find_spec(module):
            in_process.append(["export", "run", "-o", f"model.{fmt}"])
    for args in in_process:
        r = cli(*args)
        assert r.exit_code == 0, (args, r.output)
    # a real process's stdout: the escape, in valid UTF-8
    r = run("sample", "run", "-n", 300, "-t", 3, "--seed", 2, cwd=tmp_path)
    assert r.returncode == 0 and "Traceback" not in r.stderr and "\\ud800" in r.stdout, r.stderr
    r = run("info", "run", "--json", cwd=tmp_path)
    assert r.returncode == 0 and "\\ud800" in r.stdout, r.stderr
    assert "\\ud800" in (tmp_path / "out.txt").read_bytes().decode("utf-8")
    assert (tmp_path / "run" / "samples.txt").read_bytes().decode("utf-8")  # valid UTF-8 throughout


# -- a resume checks everything before it changes a file ---------------------------------------------------------
def test_a_foreign_cell_dropped_in_as_last_npz_is_refused(cli, run_copy, tmp_path, corpus):
    r = cli("train", corpus, "--out", tmp_path / "gru", *TINY, "--model", "gru", "--max-steps", 2)
    assert r.exit_code == 0, r.output
    shutil.copy(tmp_path / "gru" / "last.npz", run_copy / "last.npz")
    before = snapshot(tmp_path)
    line = one_line_error(cli("train", "--resume", run_copy / "last.npz", "--max-steps", 100), 2)
    assert "not this run's checkpoint" in line and "cell" in line, line
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("bad", ["metrics.jsonl is a directory", "samples.txt is a directory",
                                 "metrics.jsonl is a dangling link"])
def test_a_broken_log_is_refused_before_the_resume_changes_anything(cli, run_copy, bad):
    name = bad.split()[0]
    (run_copy / name).unlink()
    if "directory" in bad:
        (run_copy / name).mkdir()
    else:
        os.symlink(run_copy / "nowhere", run_copy / name)
    before = snapshot(run_copy, exclude=(name,))
    line = one_line_error(cli("train", "--resume", run_copy, "--max-steps", 70), 2)
    assert name in line, line
    assert snapshot(run_copy, exclude=(name,)) == before
    assert (run_copy / name).is_dir() if "directory" in bad else (run_copy / name).is_symlink()


def test_invalid_utf8_in_the_logs_does_not_stop_a_resume(cli, run_copy):
    with (run_copy / "metrics.jsonl").open("ab") as f:
        f.write(b'{"step": 61, "note": "\xff\xfe"}\n')
    with (run_copy / "samples.txt").open("ab") as f:
        f.write(b"=== step 61 ===\n\xff\xfe broken\n\n")
    r = cli("train", "--resume", run_copy, "--max-steps", 62)
    assert r.exit_code == 0, r.output
    assert b"\xff" not in (run_copy / "metrics.jsonl").read_bytes()  # the later lines were trimmed
    assert b"\xff" not in (run_copy / "samples.txt").read_bytes()


def test_a_tampered_corpus_cache_is_rebuilt(cli, run_copy):
    meta_path = run_copy / "cache" / "corpus.json"
    meta = json.loads(meta_path.read_text())
    data = np.load(run_copy / "cache" / "corpus.npy")
    data[:50] = data[50:100]  # another text under the same file hashes
    np.save(run_copy / "cache" / "corpus.npy", data)
    meta_path.write_text(json.dumps(meta))
    r = cli("train", "--resume", run_copy, "--max-steps", 62)
    assert r.exit_code == 0, r.output
    assert not np.array_equal(np.load(run_copy / "cache" / "corpus.npy"), data)  # rebuilt from the text


# -- a full disk --------------------------------------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    """A 4 MB tmpfs at tmp_path/disk (skipped where mounting is not allowed)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], capture_output=True, text=True)
    if r.returncode != 0:
        why = f"cannot mount a tmpfs here ({r.stderr.strip() or r.returncode}): needs root and CAP_SYS_ADMIN"
        pytest.skip(why)
    yield disk
    subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def fill(disk):
    """Fill the file system to its last byte. tmpfs counts its pages per CPU with some slack, so the
    last pages are taken from every CPU in turn (else a process on another CPU still finds a few)."""
    cpus = os.sched_getaffinity(0)
    try:
        for i, cpu in enumerate(sorted(cpus) * 2):
            os.sched_setaffinity(0, {cpu})
            with open(disk / f"filler{i}", "wb", buffering=0) as f:
                for size in (1 << 16, 1):
                    try:
                        while f.write(bytes(size)):
                            pass
                    except OSError:
                        pass
    finally:
        os.sched_setaffinity(0, cpus)


def test_resume_on_a_full_disk_leaves_the_logs_whole(run_copy, small_disk):
    shutil.copytree(run_copy, small_disk / "run", ignore=shutil.ignore_patterns("step*"))
    run_dir = small_disk / "run"
    with (run_dir / "metrics.jsonl").open("a") as f:  # a line past the checkpoint: the resume must trim
        f.write('{"step": 61, "train_loss": 1.0}\n')
    fill(small_disk)
    # the cache is derived data: if another test touched the corpus, the resume rebuilds it (and fails)
    before = snapshot(small_disk, exclude=("run/cache",))
    r = run("train", "--resume", run_dir, "--max-steps", 62, cwd=small_disk)
    assert "free disk space" in refused(r)
    assert snapshot(small_disk, exclude=("run/cache",)) == before


def test_a_full_disk_while_logging_is_one_warning_then_one_error(run_copy, small_disk):
    subprocess.run(["cp", "-a", run_copy, small_disk / "run"], check=True)  # -a: best.npz stays a hard link
    run_dir = small_disk / "run"
    checkpoints = snapshot(run_dir, exclude=("metrics.jsonl", "samples.txt", "config.yaml"))
    # the step records; the resume drops the earlier session's {"event": "end"} record (issue 31)
    logged = b"".join(line for line in (run_dir / "metrics.jsonl").read_bytes().splitlines(keepends=True)
                      if b'"event": "end"' not in line)
    (small_disk / "spare").write_bytes(bytes(8192))
    fill(small_disk)
    (small_disk / "spare").unlink()  # two pages: the run's lock and config.yaml; the logs fill up as it goes
    # 640 records of metrics.jsonl, about 140 KB: more than the few pages tmpfs may still find
    r = run("train", "--resume", run_dir, "--max-steps", 700, "--eval-every", 0, "--checkpoint-every", 0,
            "--sample-every", 0, "--set", "train.log_every=1", cwd=small_disk)
    line = refused(r, 1)
    assert "cannot write checkpoint" in line and "free disk space" in line, line
    assert "warning: cannot write" in r.stderr and "metrics.jsonl" in r.stderr, r.stderr
    assert snapshot(run_dir, exclude=("metrics.jsonl", "samples.txt", "config.yaml")) == checkpoints
    assert (run_dir / "metrics.jsonl").read_bytes().startswith(logged)

"""Tests for charrnn.checkpoints.npz: round trips, atomicity, refusals, and run-directory housekeeping."""

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

import charrnn
from charrnn.checkpoints import npz as ckpt
from charrnn.errors import CharrnnError

TEMP_RE = re.compile(r"\..+\.tmp-\d+-[0-9a-f]+")
DEAD_PID = 2**22 + 12345  # above Linux's maximum pid_max, so never a live process


def sample_arrays():
    rng = np.random.default_rng(0)
    return {
        "rnn.weight_ih_l0": rng.standard_normal((8, 4)).astype(np.float32),
        "decoder.weight": rng.standard_normal((5, 3)),  # float64
        "optim.t": np.array(7, dtype=np.int64),  # 0-d
        "state.h": np.zeros((0, 3), dtype=np.float32),  # empty
        "fortran": np.asfortranarray(rng.standard_normal((3, 4)).astype(np.float32)),
    }


def save_sample(path, meta=None):
    arrays = sample_arrays()
    ckpt.save(path, arrays, {"step": 10, "vocab": "Tiếng Việt ∑ 🙂"} if meta is None else meta)
    return arrays


def listing(d):
    return sorted(p.name for p in Path(d).iterdir())


def write_raw_npz(path, meta=None, **arrays):
    """Write an npz behind save()'s back, to forge bad checkpoints."""
    if meta is not None:
        arrays["meta"] = np.array(json.dumps(meta) if isinstance(meta, dict) else meta)
    np.savez(path, **arrays)


def refused(path, *fragments, verify=True):
    """Assert load(path) raises a one-line exit-code-2 CharrnnError naming the file."""
    with pytest.raises(CharrnnError) as info:
        ckpt.load(path, verify=verify)
    err = info.value
    assert err.exit_code == 2
    assert "\n" not in err.one_line()
    assert str(path) in err.message
    for fragment in fragments:
        assert fragment in err.message
    return err


# --------------------------------------------------------------------------- round trip


def test_round_trip_preserves_arrays_dtypes_and_meta(tmp_path):
    path = tmp_path / "c.npz"
    arrays = save_sample(path)
    loaded, meta = ckpt.load(path)
    assert set(loaded) == set(arrays)
    for name, a in arrays.items():
        assert loaded[name].dtype == a.dtype
        assert loaded[name].shape == a.shape
        np.testing.assert_array_equal(loaded[name], a)
    assert loaded["optim.t"].ndim == 0
    assert meta["vocab"] == "Tiếng Việt ∑ 🙂"
    assert meta["step"] == 10
    assert meta["format_version"] == ckpt.FORMAT_VERSION
    assert re.fullmatch(r"[0-9a-f]{64}", meta["checksum"])


def test_file_opens_with_plain_numpy_and_meta_is_a_0d_string(tmp_path):
    path = tmp_path / "c.npz"
    save_sample(path)
    with np.load(path, allow_pickle=False) as npz:
        assert "rnn.weight_ih_l0" in npz.files
        meta = npz["meta"]
        assert meta.ndim == 0 and meta.dtype.kind == "U"
        assert json.loads(meta.item())["vocab"] == "Tiếng Việt ∑ 🙂"


def test_save_does_not_mutate_callers_meta(tmp_path):
    meta = {"step": 1}
    ckpt.save(tmp_path / "c.npz", {"a": np.ones(2)}, meta)
    assert meta == {"step": 1}


def test_checksum_depends_on_values_names_dtypes_and_shapes(tmp_path):
    def checksum(arrays):
        ckpt.save(tmp_path / "c.npz", arrays, {})
        return ckpt.load(tmp_path / "c.npz")[1]["checksum"]

    base = checksum({"a": np.arange(6, dtype=np.float32)})
    assert checksum({"a": np.arange(6, dtype=np.float32)}) == base
    assert checksum({"a": np.arange(6, dtype=np.float32) + 1}) != base
    assert checksum({"b": np.arange(6, dtype=np.float32)}) != base
    assert checksum({"a": np.arange(6, dtype=np.float64)}) != base
    assert checksum({"a": np.arange(6, dtype=np.float32).reshape(2, 3)}) != base


@pytest.mark.parametrize("name", ["a/b", "../x", "", "meta", "file", "allow_pickle", ".hidden", "a b", 3])
def test_save_rejects_bad_array_names(tmp_path, name):
    with pytest.raises(ValueError):
        ckpt.save(tmp_path / "c.npz", {name: np.ones(2)}, {})
    assert listing(tmp_path) == []


def test_save_rejects_object_arrays_and_bad_meta(tmp_path):
    with pytest.raises(ValueError, match="object"):
        ckpt.save(tmp_path / "c.npz", {"a": np.array([{"x": 1}], dtype=object)}, {})
    with pytest.raises(ValueError, match="JSON"):
        ckpt.save(tmp_path / "c.npz", {"a": np.ones(2)}, {"bad": object()})
    with pytest.raises(ValueError):
        ckpt.save(tmp_path / "c.npz", {"a": np.ones(2)}, ["not", "a", "dict"])
    assert listing(tmp_path) == []


# --------------------------------------------------------------------------- atomicity


def test_overwrite_replaces_target_and_leaves_no_temp(tmp_path):
    path = tmp_path / "c.npz"
    ckpt.save(path, {"a": np.zeros(3)}, {"n": 1})
    ckpt.save(path, {"a": np.ones(3)}, {"n": 2})
    arrays, meta = ckpt.load(path)
    np.testing.assert_array_equal(arrays["a"], np.ones(3))
    assert meta["n"] == 2
    assert listing(tmp_path) == ["c.npz"]


def test_failure_mid_save_keeps_old_file_and_removes_temp(tmp_path, monkeypatch):
    path = tmp_path / "c.npz"
    ckpt.save(path, {"a": np.zeros(3)}, {"n": 1})
    before = path.read_bytes()

    def broken_savez(f, **arrays):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save(path, {"a": np.ones(3)}, {"n": 2})
    assert path.read_bytes() == before
    assert listing(tmp_path) == ["c.npz"]


def test_failure_on_first_save_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(np, "savez", lambda f, **a: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        ckpt.save(tmp_path / "c.npz", {"a": np.ones(3)}, {})
    assert listing(tmp_path) == []


def test_write_text_atomic(tmp_path):
    path = tmp_path / "config.yaml"
    ckpt.write_text_atomic(path, "model: lstm\n")
    ckpt.write_text_atomic(path, "model: gru\nnote: Tiếng Việt\n")
    assert path.read_text(encoding="utf-8") == "model: gru\nnote: Tiếng Việt\n"
    assert listing(tmp_path) == ["config.yaml"]


KILL_CHILD = r"""
import sys
import numpy as np
from charrnn.checkpoints import npz as ckpt
path = sys.argv[1]
w = np.random.default_rng(1).standard_normal(1_250_000).astype(np.float32)  # ~5 MB
i = 0
while True:
    w[:1000] = i  # new content (and checksum) every time
    ckpt.save(path, {"w": w, "optim.t": np.array(i)}, {"i": i})
    if i == 0:
        print("ready", flush=True)
    i += 1
"""


@pytest.mark.skipif(os.name != "posix", reason="needs SIGKILL")
def test_sigkill_during_repeated_saves_never_leaves_a_partial_file(tmp_path):
    target = tmp_path / "last.npz"
    env = {**os.environ, "PYTHONPATH": str(Path(charrnn.__file__).resolve().parent.parent)}
    rng = random.Random(1234)
    for _ in range(3):
        child = subprocess.Popen([sys.executable, "-c", KILL_CHILD, str(target)], env=env,
                                 stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout.readline().strip() == "ready"
            time.sleep(rng.uniform(0.0, 0.3))
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
            child.stdout.close()
        # The target is always a complete checkpoint; anything else is one of our temp files.
        arrays, meta = ckpt.load(target, verify=True)
        assert arrays["w"].shape == (1_250_000,)
        assert int(arrays["optim.t"]) == meta["i"] == int(arrays["w"][0])
        for name in listing(tmp_path):
            assert name == "last.npz" or TEMP_RE.fullmatch(name), name
    ckpt.remove_stale_temps(tmp_path)  # the children are dead, so their temps are stale
    assert listing(tmp_path) == ["last.npz"]


# --------------------------------------------------------------------------- refusals


def test_refuses_missing_file(tmp_path):
    refused(tmp_path / "nope.npz", "does not exist")


def test_refuses_directory(tmp_path):
    refused(tmp_path, "is a directory")


def test_refuses_text_file(tmp_path):
    path = tmp_path / "notes.npz"
    path.write_text("hello, I am not a checkpoint\n")
    refused(path, "not an .npz")


def test_refuses_npy_file(tmp_path):
    path = tmp_path / "weights.npy"
    np.save(path, np.ones(3))
    refused(path, ".npy")


def test_refuses_zip_that_is_not_npz(tmp_path):
    path = tmp_path / "c.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("readme.txt", "hi")
    refused(path, "not a numpy array")


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.999])
def test_refuses_truncated_file(tmp_path, keep):
    path = tmp_path / "c.npz"
    save_sample(path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    refused(path, "corrupt")


def test_refuses_flipped_byte_in_array_payload(tmp_path):
    path = tmp_path / "c.npz"
    payload = np.arange(1000, dtype=np.float32)
    ckpt.save(path, {"a": payload}, {})
    data = bytearray(path.read_bytes())
    offset = data.find(payload.tobytes())
    assert offset > 0  # uncompressed, so the raw bytes are in the file
    data[offset + 2001] ^= 0x40
    path.write_bytes(bytes(data))
    # zipfile's CRC check may fire before our checksum does; either way it is a clean refusal.
    err = refused(path)
    assert "corrupt" in err.message


def test_refuses_checksum_mismatch_with_valid_zip(tmp_path):
    path = tmp_path / "c.npz"
    ckpt.save(path, {"a": np.arange(10.0)}, {"n": 1})
    arrays, meta = ckpt.load(path)
    arrays["a"][3] = -1.0  # tamper, then rewrite with intact zip CRCs and the old meta
    write_raw_npz(path, meta=meta, **arrays)
    refused(path, "checksum mismatch: the file is corrupt")
    loaded, _ = ckpt.load(path, verify=False)  # verify=False skips only the checksum
    assert loaded["a"][3] == -1.0


def test_refuses_newer_format_version(tmp_path):
    path = tmp_path / "c.npz"
    write_raw_npz(path, meta={"format_version": ckpt.FORMAT_VERSION + 1, "checksum": "0"}, a=np.ones(2))
    err = refused(path, "newer charrnn", "format version")
    assert "upgrade" in err.hint
    refused(path, "newer charrnn", verify=False)


@pytest.mark.parametrize("version", [None, "1", 0, True])
def test_refuses_bad_format_version(tmp_path, version):
    meta = {"checksum": "0"} if version is None else {"format_version": version}
    path = tmp_path / "c.npz"
    write_raw_npz(path, meta=meta, a=np.ones(2))
    refused(path, "format_version", verify=False)


def test_refuses_missing_meta(tmp_path):
    path = tmp_path / "c.npz"
    write_raw_npz(path, a=np.ones(2))
    refused(path, "no 'meta'")


@pytest.mark.parametrize("meta", [np.array("{not json"), np.array("[1, 2]"), np.array(["{}"]), np.array(3.0)])
def test_refuses_invalid_meta(tmp_path, meta):
    path = tmp_path / "c.npz"
    np.savez(path, a=np.ones(2), meta=meta)
    refused(path, "JSON object")


def test_missing_checksum_refused_unless_verify_is_off(tmp_path):
    path = tmp_path / "c.npz"
    write_raw_npz(path, meta={"format_version": 1, "step": 3}, a=np.ones(2))
    refused(path, "no checksum")
    arrays, meta = ckpt.load(path, verify=False)
    assert meta["step"] == 3 and arrays["a"].shape == (2,)


def test_refuses_object_array(tmp_path):
    path = tmp_path / "c.npz"
    np.savez(path, a=np.array([{"x": 1}], dtype=object))
    refused(path, "needs pickle to load; charrnn never unpickles", "'a'")


class MarkerOnUnpickle:
    """Unpickling this opens (creates) a marker file: a stand-in for arbitrary code execution."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_load_never_executes_a_pickle_payload(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.npz"
    meta = {"format_version": 1}
    write_raw_npz(path, meta=meta, w=np.ones(2), evil=np.array([MarkerOnUnpickle(marker)], dtype=object))
    refused(path, "needs pickle", verify=False)
    refused(path, "needs pickle")
    assert not marker.exists()
    # Control: the payload is live, so the assertion above means something.
    with np.load(path, allow_pickle=True) as npz:
        npz["evil"]
    assert marker.exists()


def test_refuses_raw_pickle_file_without_executing_it(tmp_path):
    import pickle

    marker = tmp_path / "pwned"
    path = tmp_path / "evil.npz"
    path.write_bytes(pickle.dumps(MarkerOnUnpickle(marker)))
    refused(path, "not an .npz")
    assert not marker.exists()


def test_loader_errors_are_wrapped_but_keyboard_interrupt_is_not(tmp_path, monkeypatch):
    path = tmp_path / "c.npz"
    save_sample(path)

    def boom(*args, **kwargs):
        raise RuntimeError("weird\nmultiline failure")

    monkeypatch.setattr(np.lib.format, "read_array", boom)  # what charrnn.npz reads members with
    refused(path, "corrupt", "RuntimeError")

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(np.lib.format, "read_array", interrupt)
    with pytest.raises(KeyboardInterrupt):
        ckpt.load(path)


# --------------------------------------------------------------------------- check_arrays


def test_check_arrays_accepts_matching_and_extra_arrays():
    arrays = {"decoder.weight": np.zeros((65, 256)), "decoder.bias": np.zeros(65), "extra": np.zeros(1)}
    ckpt.check_arrays(arrays, {"decoder.weight": (65, 256), "decoder.bias": (65,)}, "best.npz")


def test_check_arrays_names_first_wrong_shape():
    arrays = {"decoder.weight": np.zeros((65, 128)), "decoder.bias": np.zeros(3)}
    with pytest.raises(CharrnnError) as info:
        ckpt.check_arrays(arrays, {"decoder.weight": (65, 256), "decoder.bias": (65,)}, "run/best.npz")
    assert "decoder.weight has shape (65, 128), expected (65, 256)" in info.value.message
    assert "run/best.npz" in info.value.message
    assert info.value.exit_code == 2


def test_check_arrays_names_first_missing_array():
    with pytest.raises(CharrnnError) as info:
        ckpt.check_arrays({}, {"rnn.weight_ih_l0": (4, 2), "decoder.weight": (2, 2)}, "x.npz")
    assert "missing array rnn.weight_ih_l0" in info.value.message


def test_check_arrays_formats_0d_and_1d_shapes():
    with pytest.raises(CharrnnError, match=r"optim\.t has shape \(1,\), expected \(\)"):
        ckpt.check_arrays({"optim.t": np.zeros(1)}, {"optim.t": ()}, "x.npz")


# --------------------------------------------------------------------------- publish


def test_publish_copies_and_replaces_existing_dst(tmp_path):
    step1, step2 = tmp_path / "step1.npz", tmp_path / "step2.npz"
    ckpt.save(step1, {"a": np.zeros(3)}, {"n": 1})
    ckpt.save(step2, {"a": np.ones(3)}, {"n": 2})
    best = tmp_path / "best.npz"
    ckpt.publish(step1, best)
    assert best.read_bytes() == step1.read_bytes()
    ckpt.publish(step2, best)
    assert best.read_bytes() == step2.read_bytes()
    assert ckpt.load(best)[1]["n"] == 2
    ckpt.publish(step2, best)  # already a link to the same file: still fine, no temp left
    assert listing(tmp_path) == ["best.npz", "step1.npz", "step2.npz"]


def test_published_copy_survives_overwrite_and_deletion_of_src(tmp_path):
    src, dst = tmp_path / "step1.npz", tmp_path / "last.npz"
    ckpt.save(src, {"a": np.zeros(3)}, {"n": 1})
    ckpt.publish(src, dst)
    ckpt.save(src, {"a": np.ones(3)}, {"n": 2})  # save renames a new inode over src
    assert ckpt.load(dst)[1]["n"] == 1
    src.unlink()
    assert ckpt.load(dst)[1]["n"] == 1


def test_publish_falls_back_to_copy_when_linking_fails(tmp_path, monkeypatch):
    src, dst = tmp_path / "step1.npz", tmp_path / "best.npz"
    ckpt.save(src, {"a": np.arange(5.0)}, {})
    dst.write_bytes(b"old")

    def no_links(*args, **kwargs):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_links)
    ckpt.publish(src, dst)
    assert dst.read_bytes() == src.read_bytes()
    assert os.stat(dst).st_ino != os.stat(src).st_ino
    assert listing(tmp_path) == ["best.npz", "step1.npz"]


def test_publish_missing_src_raises_and_keeps_dst(tmp_path):
    dst = tmp_path / "best.npz"
    dst.write_bytes(b"old")
    with pytest.raises(FileNotFoundError):
        ckpt.publish(tmp_path / "nope.npz", dst)
    assert dst.read_bytes() == b"old"


# --------------------------------------------------------------------------- names and prune


def test_checkpoint_name_formats():
    assert ckpt.checkpoint_name(1200, 1.23456) == "step1200_val1.2346.npz"
    assert ckpt.checkpoint_name(0, None) == "step0.npz"
    assert ckpt.checkpoint_name(5, float("nan")) == "step5_valnan.npz"
    assert ckpt.checkpoint_name(np.int64(7), np.float32(2.5)) == "step7_val2.5000.npz"
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError):
            ckpt.checkpoint_name(bad, 1.0)


def make_run(tmp_path, steps):
    for step in steps:
        (tmp_path / ckpt.checkpoint_name(step, 1.0 / (step + 1))).write_bytes(b"x")


def test_prune_keeps_newest_by_step_number_not_name_or_mtime(tmp_path):
    make_run(tmp_path, [900, 1000, 50, 200, 3000])  # lexical order would differ
    os.utime(tmp_path / ckpt.checkpoint_name(3000, 1 / 3001), (1, 1))  # oldest mtime
    deleted = ckpt.prune(tmp_path, keep_last=2)
    assert [p.name for p in deleted] == [ckpt.checkpoint_name(s, 1 / (s + 1)) for s in (50, 200, 900)]
    assert listing(tmp_path) == [ckpt.checkpoint_name(1000, 1 / 1001), ckpt.checkpoint_name(3000, 1 / 3001)]


def test_prune_never_deletes_best_last_their_link_targets_protected_or_other_files(tmp_path):
    make_run(tmp_path, [1, 2, 3, 4, 5, 6])
    names = {s: ckpt.checkpoint_name(s, 1 / (s + 1)) for s in range(1, 7)}
    ckpt.publish(tmp_path / names[1], tmp_path / "best.npz")  # hard link to step 1
    (tmp_path / "last.npz").write_bytes(b"x")
    for other in ("config.yaml", "step.npz", "stepX.npz", "step7.npz.bak", "notes.txt", "step2_valnan.npy"):
        (tmp_path / other).write_bytes(b"x")
    (tmp_path / "step4_valnan.npz").write_bytes(b"x")
    deleted = ckpt.prune(tmp_path, keep_last=2, protect={names[3]})
    assert sorted(p.name for p in deleted) == sorted([names[2], "step4_valnan.npz", names[4]])
    left = set(listing(tmp_path))
    assert {"best.npz", "last.npz", names[1], names[3], names[5], names[6], "config.yaml"} <= left
    assert {"step.npz", "stepX.npz", "step7.npz.bak", "notes.txt", "step2_valnan.npy"} <= left


def test_prune_keep_last_zero_keeps_everything(tmp_path):
    make_run(tmp_path, [1, 2, 3])
    assert ckpt.prune(tmp_path, keep_last=0) == []
    assert len(listing(tmp_path)) == 3
    with pytest.raises(ValueError):
        ckpt.prune(tmp_path, keep_last=-1)


# --------------------------------------------------------------------------- stale temps


def test_remove_stale_temps_only_removes_dead_writers_temp_files(tmp_path):
    stale = [f".last.npz.tmp-{DEAD_PID}-1a2b3c4d", f".config.yaml.tmp-{DEAD_PID}-ff"]
    live = f".best.npz.tmp-{os.getpid()}-0123abcd"  # this process: maybe mid-write
    keep = ["last.npz", "x.tmp-1-ab", ".hidden", f".a.tmp-{DEAD_PID}-XYZ", "step1.npz", live]
    for name in stale + keep:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / f".dir.tmp-{DEAD_PID}-aa").mkdir()
    removed = ckpt.remove_stale_temps(tmp_path)
    assert sorted(p.name for p in removed) == sorted(stale)
    assert listing(tmp_path) == sorted(keep + [f".dir.tmp-{DEAD_PID}-aa"])

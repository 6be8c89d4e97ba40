"""Tests for charrnn.data.corpus: vocabulary, chunked corpus loading, cache, splits, batches, batch-shape fitting."""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import unicodedata
from pathlib import Path

import numpy as np
import pytest

from charrnn.data import corpus as D
from charrnn.data.corpus import Batches, Vocab, eval_batches, fit_batch_shape, load_corpus, split
from charrnn.errors import UsageError

VIETNAMESE = "Tiếng Việt có dấu: ă â đ ê ô ơ ư, ngỡ ngàng."
# 1-, 2-, 3- and 4-byte UTF-8 characters, so some straddle every possible chunk boundary.
MIXED = "ab é ế 😀 z\nTiếng Việt\r\n\tend 𝄞"


def write(tmp_path: Path, content: str | bytes, name: str = "corpus.txt") -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def usage_error(fn, *args, **kwargs) -> UsageError:
    """Call fn, expect a one-line UsageError with a hint, and return it."""
    with pytest.raises(UsageError) as info:
        fn(*args, **kwargs)
    err = info.value
    assert err.exit_code == 2
    assert err.hint and "\n" not in err.one_line()
    return err


# ---------------------------------------------------------------- Vocab


def test_vocab_sorted_by_code_point_and_distinct():
    vocab = Vocab("cbaé\nab ")
    assert vocab.chars == "\n abcé"
    assert vocab.size == len(vocab) == 6
    assert [ord(c) for c in vocab.chars] == sorted(ord(c) for c in vocab.chars)


@pytest.mark.parametrize(("size", "dtype"), [(2, np.uint8), (256, np.uint8), (257, np.uint16),
                                             (65536, np.uint16), (65537, np.uint32)])
def test_vocab_smallest_dtype(size, dtype):
    vocab = Vocab("".join(chr(0x10000 + i) for i in range(size)))  # astral chars: no surrogates
    assert vocab.size == size
    assert vocab.dtype == np.dtype(dtype)
    assert vocab.encode(vocab.chars[-1]).dtype == np.dtype(dtype)


def test_vocab_encode_decode_round_trip():
    text = "hello, world\n"
    vocab = Vocab(text)
    ids = vocab.encode(text)
    assert ids.dtype == np.uint8 and ids.shape == (len(text),)
    assert vocab.chars[ids[0]] == "h"
    assert vocab.decode(ids) == text
    assert vocab.decode(ids.tolist()) == text
    assert vocab.decode(ids.astype(np.int32)) == text
    assert vocab.decode([]) == "" and vocab.encode("").size == 0


def test_vocab_large_round_trip_uint16():
    text = "".join(chr(c) for c in range(32, 600)) * 3
    vocab = Vocab(text)
    assert vocab.dtype == np.uint16
    assert vocab.decode(vocab.encode(text)) == text


def test_vocab_unknown_chars_error_lists_them():
    vocab = Vocab("abc")
    assert vocab.unknown_chars("abxcy\nx") == ["\n", "x", "y"]
    assert vocab.unknown_chars("cab") == []
    err = usage_error(vocab.encode, "abxcy\n")
    assert "3 character(s)" in err.message and "'\\n'" in err.message
    assert "'x'" in err.message and "'y'" in err.message


def test_vocab_unknown_skip_drops_them():
    vocab = Vocab("abc")
    assert vocab.decode(vocab.encode("xaybzc~", unknown="skip")) == "abc"
    with pytest.raises(ValueError):
        vocab.encode("abc", unknown="ignore")


def test_vocab_decode_out_of_range():
    vocab = Vocab("ab")
    with pytest.raises(ValueError):
        vocab.decode([0, 2])
    with pytest.raises(ValueError):
        vocab.decode([-1])


def test_vocab_equality_and_hash():
    assert Vocab("abc") == Vocab("cba") and hash(Vocab("abc")) == hash(Vocab("cab"))
    assert Vocab("abc") != Vocab("abd")
    assert Vocab("abc") != "abc"
    with pytest.raises(ValueError):
        Vocab("")


def test_vietnamese_letters_are_one_token_each(tmp_path):
    assert unicodedata.normalize("NFC", VIETNAMESE) == VIETNAMESE
    vocab = Vocab(VIETNAMESE)
    ids = vocab.encode(VIETNAMESE)
    assert ids.size == len(VIETNAMESE)  # one token per code point, not per byte
    for letter in "ếệấăâđêôơưỡà":
        assert letter in vocab.chars
        assert vocab.encode(letter).size == 1
    assert vocab.decode(ids) == VIETNAMESE
    corpus = load_corpus(write(tmp_path, VIETNAMESE))
    assert corpus.vocab == vocab and corpus.vocab.decode(corpus.data) == VIETNAMESE


# ---------------------------------------------------------------- load_corpus


def test_load_corpus_basic(tmp_path):
    path = write(tmp_path, MIXED)
    corpus = load_corpus(path)
    assert corpus.vocab == Vocab(MIXED)
    assert corpus.n_chars == len(MIXED) == corpus.data.size
    assert corpus.data.dtype == corpus.vocab.dtype
    assert corpus.vocab.decode(corpus.data) == MIXED
    assert corpus.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert corpus.path == path.resolve() and corpus.path.is_absolute()
    assert not corpus.from_cache


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 7, 11])
def test_chunked_read_matches_one_shot(tmp_path, monkeypatch, chunk):
    path = write(tmp_path, MIXED * 3)
    whole = load_corpus(path)
    monkeypatch.setattr(D, "CHUNK_BYTES", chunk)
    chunked = load_corpus(path)
    assert chunked.vocab == whole.vocab
    np.testing.assert_array_equal(chunked.data, whole.data)
    assert chunked.sha256 == whole.sha256


def test_encoding_option_and_codec_aliases(tmp_path):
    text = "café crème brûlée\n"
    corpus = load_corpus(write(tmp_path, text.encode("latin-1")), encoding="latin1")
    assert corpus.vocab.decode(corpus.data) == text
    # UTF-16 text is full of NUL bytes; that must not be mistaken for binary data.
    corpus = load_corpus(write(tmp_path, text.encode("utf-16"), "u16.txt"), encoding="utf-16")
    assert corpus.vocab.decode(corpus.data) == text
    corpus = load_corpus(write(tmp_path, text, "u8.txt"), encoding="UTF8")
    assert corpus.vocab.decode(corpus.data) == text


@pytest.mark.parametrize("chunk", [1, 2, 4, 8 << 20])
def test_bom_dropped(tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(D, "CHUNK_BYTES", chunk)
    path = write(tmp_path, codecs.BOM_UTF8 + "hello\n".encode())
    for encoding in ("utf-8", "utf-8-sig"):
        corpus = load_corpus(path, encoding=encoding)
        assert corpus.vocab.decode(corpus.data) == "hello\n"
        assert "\ufeff" not in corpus.vocab.chars


def test_bom_only_file_has_no_text(tmp_path):
    err = usage_error(load_corpus, write(tmp_path, codecs.BOM_UTF8))
    assert "no text" in err.message


@pytest.mark.parametrize("chunk", [1, 2, 3, 4, 7, 10, 11, 64, 8 << 20])
def test_invalid_utf8_reports_byte_offset(tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(D, "CHUNK_BYTES", chunk)
    cases = {
        b"0123456789\xffabc": 10,  # stray byte
        b"ab\xc3\xa9defgh\xe1\xbaXY": 9,  # truncated 3-byte sequence, then ASCII
        b"\xef\xbb\xbfabcdefg\xff": 10,  # offset counts the BOM bytes
        b"abcd\xe1\xba": 4,  # truncated at end of file
    }
    for raw, offset in cases.items():
        with pytest.raises(UnicodeDecodeError) as one_shot:
            raw.decode("utf-8-sig")
        assert one_shot.value.start + (3 if raw.startswith(codecs.BOM_UTF8) else 0) == offset
        err = usage_error(load_corpus, write(tmp_path, raw))
        assert f"at byte offset {offset}" in err.message, (raw, err.message)
        assert "not valid utf-8" in err.message
        assert err.hint == "use --encoding <codec> or --errors replace"


def test_invalid_utf8_offset_in_big_file(tmp_path, monkeypatch):
    monkeypatch.setattr(D, "CHUNK_BYTES", 1 << 16)  # offset lands in the 19th chunk
    raw = bytearray(b"the quick brown fox\n" * 70000)
    raw[1234567] = 0xFF
    err = usage_error(load_corpus, write(tmp_path, bytes(raw)))
    assert "byte 0xff" in err.message and "at byte offset 1234567" in err.message


def test_errors_replace(tmp_path):
    corpus = load_corpus(write(tmp_path, b"ab\xffcd"), errors="replace")
    assert corpus.vocab.decode(corpus.data) == "ab\ufffdcd"


@pytest.mark.parametrize(("make", "kwargs", "needle"), [
    (lambda d: d / "missing.txt", {}, "not found"),
    (lambda d: d, {}, "has no files"),  # an empty directory (a directory of files is a corpus)
    (lambda d: write(d, b""), {}, "is empty"),
    (lambda d: write(d, "aaaaaa"), {}, "need at least 2"),
    (lambda d: write(d, b"PK\x03\x04\x00\x00binary"), {}, "binary"),
    (lambda d: write(d, bytes(range(1, 9)) * 20 + b"some text"), {}, "binary"),
    (lambda d: write(d, "hello"), {"encoding": "no-such-codec"}, "unknown text encoding"),
    (lambda d: write(d, "hello"), {"encoding": "base64"}, "unknown text encoding"),
    (lambda d: write(d, "hello"), {"errors": "whatever"}, "error handler"),
])
def test_bad_input_is_a_one_line_usage_error(tmp_path, make, kwargs, needle):
    err = usage_error(load_corpus, make(tmp_path), **kwargs)
    assert needle in err.message


def test_some_control_characters_are_fine(tmp_path):
    text = "line one\n\tline two\r\n\x0cpage\x0b" + "\x1b[0m plain text " * 2
    assert load_corpus(write(tmp_path, text)).n_chars == len(text)


# ---------------------------------------------------------------- cache


def test_cache_reused(tmp_path, monkeypatch):
    path, cache = write(tmp_path, MIXED), tmp_path / "cache"
    first = load_corpus(path, cache_dir=cache)
    assert not first.from_cache
    meta = json.loads((cache / "corpus.json").read_text(encoding="utf-8"))
    assert meta["vocab"] == first.vocab.chars and meta["sha256"] == first.sha256
    assert meta["n_chars"] == first.n_chars and meta["source"] == str(path.resolve())
    assert {"size", "mtime_ns", "encoding", "errors", "format"} <= meta.keys()
    np.testing.assert_array_equal(np.load(cache / "corpus.npy", allow_pickle=False), first.data)
    assert sorted(p.name for p in cache.iterdir()) == ["corpus.json", "corpus.npy"]  # no temp files left

    def no_reading(*args, **kwargs):
        raise AssertionError("the corpus was read again")

    monkeypatch.setattr(D, "_build", no_reading)
    second = load_corpus(path, cache_dir=cache)
    assert second.from_cache
    assert second.vocab == first.vocab and second.sha256 == first.sha256 and second.n_chars == first.n_chars
    assert second.path == first.path
    np.testing.assert_array_equal(second.data, first.data)
    assert second.data.dtype == first.data.dtype


def test_cache_rebuilt_when_corpus_or_options_change(tmp_path):
    path, cache = write(tmp_path, "abcabc"), tmp_path / "cache"
    load_corpus(path, cache_dir=cache)
    stat = path.stat()
    path.write_text("xyzxyzxyz", encoding="utf-8")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    changed = load_corpus(path, cache_dir=cache)
    assert not changed.from_cache and changed.vocab.chars == "xyz"
    assert changed.vocab.decode(changed.data) == "xyzxyzxyz"
    assert load_corpus(path, cache_dir=cache).from_cache
    assert not load_corpus(path, cache_dir=cache, encoding="latin-1").from_cache
    assert not load_corpus(path, cache_dir=cache, errors="replace").from_cache


@pytest.mark.parametrize("damage", ["garbage_npy", "garbage_json", "missing_npy", "short_npy",
                                    "wrong_dtype", "id_out_of_range", "pickled_npy"])
def test_broken_cache_silently_rebuilt(tmp_path, damage):
    path, cache = write(tmp_path, MIXED), tmp_path / "cache"
    good = load_corpus(path, cache_dir=cache)
    npy = cache / "corpus.npy"
    if damage == "garbage_npy":
        npy.write_bytes(b"not a numpy file")
    elif damage == "garbage_json":
        (cache / "corpus.json").write_text("{broken", encoding="utf-8")
    elif damage == "missing_npy":
        npy.unlink()
    elif damage == "short_npy":
        np.save(npy, good.data[:-1])
    elif damage == "wrong_dtype":
        np.save(npy, good.data.astype(np.int64))
    elif damage == "id_out_of_range":
        bad = good.data.copy()
        bad[3] = good.vocab.size
        np.save(npy, bad)
    elif damage == "pickled_npy":
        np.save(npy, np.array([object()] * good.n_chars, dtype=object), allow_pickle=True)
    rebuilt = load_corpus(path, cache_dir=cache)
    assert not rebuilt.from_cache
    np.testing.assert_array_equal(rebuilt.data, good.data)
    assert load_corpus(path, cache_dir=cache).from_cache  # and the cache is repaired


# ---------------------------------------------------------------- split


def test_split_sizes_contiguous_views():
    data = np.arange(1000)
    train, val, test = split(data, 0.1, 0.05)
    assert (train.size, val.size, test.size) == (850, 100, 50)
    np.testing.assert_array_equal(np.concatenate([train, val, test]), data)
    assert train[0] == 0 and val[0] == 850 and test[0] == 950  # train, then val, then test
    assert all(np.shares_memory(part, data) for part in (train, val, test))
    train, val, test = split(np.arange(999), 0.1, 0.1)  # int() truncates
    assert (train.size, val.size, test.size) == (801, 99, 99)
    train, val, test = split(data, 0.0, 0.0)
    assert train.size == 1000 and val.size == 0 and test.size == 0


@pytest.mark.parametrize(("val", "test"), [(-0.1, 0.0), (1.0, 0.0), (0.6, 0.4), (0.0, 1.5)])
def test_split_bad_fractions(val, test):
    usage_error(split, np.arange(10), val, test)


# ---------------------------------------------------------------- Batches


def test_batches_shapes_dtype_and_shift():
    data = np.arange(1003, dtype=np.uint16)
    batches = Batches(data, batch_size=4, seq_len=10)
    assert batches.stream_len == 250 and batches.batches_per_epoch() == 25
    for i in (0, 7, 24):
        x, y = batches.batch(i)
        assert x.shape == y.shape == (4, 10)
        assert x.dtype == y.dtype == np.int32
        assert x.flags.c_contiguous and y.flags.c_contiguous
        np.testing.assert_array_equal(y, x + 1)
        np.testing.assert_array_equal(x[:, 0], np.arange(4) * 250 + i * 10)  # stream b starts at b*250


def test_batches_continue_each_stream():
    data = (np.arange(2001) % 251).astype(np.uint8)
    batches = Batches(data, batch_size=3, seq_len=7)
    rebuilt = [[] for _ in range(3)]
    for i in range(batches.batches_per_epoch() - 1):
        x, y = batches.batch(i)
        x_next, _ = batches.batch(i + 1)
        np.testing.assert_array_equal(x_next[:, 0], y[:, -1])  # batch i+1 starts where batch i ended
        for b in range(3):
            rebuilt[b].extend(x[b])
    for b in range(3):  # concatenating the batches' rows gives back each contiguous stream
        start = b * batches.stream_len
        np.testing.assert_array_equal(rebuilt[b], data[start: start + len(rebuilt[b])])


def test_batches_offset():
    data = np.arange(1001, dtype=np.uint16)
    batches = Batches(data, batch_size=2, seq_len=10)  # stream_len 500
    assert batches.batches_per_epoch(0) == 50 and batches.batches_per_epoch(3) == 49
    x, y = batches.batch(0, offset=3)
    np.testing.assert_array_equal(x[:, 0], [3, 503])
    np.testing.assert_array_equal(y, x + 1)
    x, _ = batches.batch(48, offset=9)
    assert x[0, -1] == 9 + 49 * 10 - 1 < 500
    assert len(list(batches)) == 50


def test_batches_out_of_range():
    batches = Batches(np.arange(101), batch_size=2, seq_len=10)
    for i, offset in [(-1, 0), (5, 0), (4, 1), (0, 51), (0, -1)]:
        with pytest.raises(ValueError):
            batches.batch(i, offset)
    with pytest.raises(ValueError):
        Batches(np.arange(3), batch_size=5, seq_len=2)
    with pytest.raises(ValueError):
        Batches(np.arange(30), batch_size=0, seq_len=2)


def test_eval_batches():
    small = eval_batches(np.arange(51), batch_size=32, seq_len=10)
    assert small.batch_size == 5 and small.batches_per_epoch() == 1
    assert eval_batches(np.arange(10), batch_size=32, seq_len=10) is None
    assert eval_batches(np.arange(0), batch_size=32, seq_len=10) is None
    assert eval_batches(np.arange(10001), batch_size=32, seq_len=10).batch_size == 32


# ---------------------------------------------------------------- fit_batch_shape


def test_fit_batch_shape_unchanged():
    assert fit_batch_shape(100_000, 64, 100) == (64, 100, None)
    assert fit_batch_shape(64 * 100 + 1, 64, 100) == (64, 100, None)  # exactly one batch fits


def test_fit_batch_shape_shrinks_batch_size_first():
    b, t, warning = fit_batch_shape(64 * 100, 64, 100)
    assert (b, t) == (15, 100) and (6399 // b) // t >= 4
    assert "batch_size 15" in warning and "6400" in warning and "\n" not in warning


def test_fit_batch_shape_then_seq_len():
    b, t, warning = fit_batch_shape(301, 64, 100)
    assert (b, t) == (1, 75) and 300 // t == 4
    assert "seq_len 75" in warning
    assert fit_batch_shape(20, 64, 100)[:2] == (1, 8)  # seq_len never below 8
    assert fit_batch_shape(9, 64, 100)[:2] == (1, 8)
    assert fit_batch_shape(6, 8, 4)[:2] == (1, 4)  # a seq_len already below 8 is kept


def test_fit_batch_shape_always_fits_a_batch():
    for n in range(9, 3000, 37):
        for b0, t0 in [(1, 8), (16, 50), (128, 256)]:
            b, t, _ = fit_batch_shape(n, b0, t0)
            assert 1 <= b <= b0 and min(8, t0) <= t <= t0
            assert Batches(np.arange(n), b, t).batches_per_epoch() >= 1


def test_fit_batch_shape_refuses_tiny_corpus():
    err = usage_error(fit_batch_shape, 8, 64, 100)
    assert err.message == "corpus too small: 8 characters in the train split, need at least 9"
    assert "larger file" in err.hint
    usage_error(fit_batch_shape, 100, 0, 10)

"""Corpus → vocabulary → encoded array → train/val/test splits → (x, y) batches.

Text is handled as Unicode code points, never bytes, so "ế" is one token. Large files are read in
chunks with an incremental decoder, so a 500 MB corpus never exists as one Python str: memory stays
close to the size of the encoded array (one byte per character for vocabularies of up to 256 chars).
"""
from __future__ import annotations

import codecs
import hashlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from charrnn.data.cache import read_cache, write_cache
from charrnn.errors import UsageError
from charrnn.data.sources import check_file, find_files

CHUNK_BYTES = 8 << 20  # bytes read per step; tests lower it to make characters straddle chunk edges
MIN_SEQ_LEN = 8  # fit_batch_shape never shrinks seq_len below this
TARGET_BATCHES = 4  # fit_batch_shape aims for at least this many batches per epoch
BINARY_CONTROL_FRACTION = 0.10
_MAX_CODEPOINT = 0x10FFFF
# C0 controls except \t \n \v \f \r, DEL, and C1 controls: rare in real text, common in binary data.
_CONTROL = np.zeros(0xA0, dtype=bool)
_CONTROL[[*range(0x00, 0x09), *range(0x0E, 0x20), *range(0x7F, 0xA0)]] = True


def _codepoints(text: str) -> np.ndarray:
    """The code points of text as uint32, without a Python loop (surrogatepass keeps lone surrogates)."""
    raw = text.encode("utf-32-le", "surrogatepass")
    return np.frombuffer(raw, dtype="<u4").astype(np.uint32, copy=False)


def _text(codepoints: np.ndarray) -> str:
    """Inverse of _codepoints."""
    return np.asarray(codepoints, dtype="<u4").tobytes().decode("utf-32-le", "surrogatepass")


class Vocab:
    """The distinct characters of a corpus sorted by code point; a character's index is its token id."""

    def __init__(self, chars: str):
        chars = "".join(sorted(set(chars)))  # sorted + distinct whatever the caller passed
        if not chars:
            raise ValueError("a vocabulary needs at least one character")
        self.chars = chars
        self._codepoints = _codepoints(chars)

    @property
    def size(self) -> int:
        return len(self.chars)

    @property
    def dtype(self) -> np.dtype:
        """The smallest unsigned integer type that holds every token id (uint8 up to 256 characters)."""
        for dtype in (np.uint8, np.uint16):
            if self.size - 1 <= np.iinfo(dtype).max:
                return np.dtype(dtype)
        return np.dtype(np.uint32)

    def _lookup(self, text: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(code points, candidate ids, mask of characters that are in the vocabulary)."""
        cps = _codepoints(text)
        ids = np.searchsorted(self._codepoints, cps)
        np.minimum(ids, self.size - 1, out=ids)  # past-the-end means unknown; clip so indexing works
        return cps, ids, self._codepoints[ids] == cps

    def unknown_chars(self, text: str) -> list[str]:
        """The distinct characters of text that are not in the vocabulary, sorted by code point."""
        cps, _, known = self._lookup(text)
        return list(_text(np.unique(cps[~known])))

    def encode(self, text: str, unknown: str = "error") -> np.ndarray:
        """Token ids of text (dtype self.dtype). unknown='error' raises UsageError, 'skip' drops them."""
        if unknown not in ("error", "skip"):
            raise ValueError(f"unknown must be 'error' or 'skip', not {unknown!r}")
        cps, ids, known = self._lookup(text)
        if not known.all():
            if unknown == "skip":
                ids = ids[known]
            else:
                bad = list(_text(np.unique(cps[~known])))  # distinct, sorted by code point
                shown = ", ".join(repr(c) for c in bad[:10]) + (f" and {len(bad) - 10} more" * (len(bad) > 10))
                raise UsageError(
                    f"{len(bad)} character(s) not in the vocabulary: {shown}",
                    "remove them from the text or skip unknown characters",
                )
        return ids.astype(self.dtype)

    def decode(self, ids: np.ndarray | list[int]) -> str:
        """The text of a sequence of token ids (ValueError if an id is out of range)."""
        ids = np.asarray(ids).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= self.size):
            raise ValueError(f"token ids must be in [0, {self.size}), got {ids.min()}..{ids.max()}")
        return _text(self._codepoints[ids.astype(np.intp)])

    def __len__(self) -> int:
        return self.size

    def __eq__(self, other: object) -> bool:
        return self.chars == other.chars if isinstance(other, Vocab) else NotImplemented

    def __hash__(self) -> int:
        return hash(self.chars)

    def __repr__(self) -> str:
        return f"Vocab(size={self.size}, chars={self.chars[:40]!r}{'...' if self.size > 40 else ''})"


@dataclass
class Corpus:
    """A loaded corpus. path is absolute; sha256 is of the file's bytes (several files: see
    _combined_sha256); from_cache says how it was loaded."""

    vocab: Vocab
    data: np.ndarray
    path: Path
    sha256: str
    n_chars: int
    from_cache: bool = False
    files: tuple[Path, ...] = ()  # every file read, in reading order (path is the first)


def _resolve_codec(encoding: str, errors: str) -> tuple[str, bool]:
    """(canonical codec name, whether it is ASCII-compatible), or UsageError for unknown names."""
    try:
        info = codecs.lookup(encoding)
    except LookupError:
        info = None
    if info is None or not getattr(info, "_is_text_encoding", True):  # e.g. base64 is bytes→bytes
        raise UsageError(f"unknown text encoding {encoding!r}",
                         "use a Python codec name such as utf-8, latin-1 or cp1252")
    try:
        codecs.lookup_error(errors)
    except LookupError:
        raise UsageError(f"unknown decoding error handler {errors!r}", "use strict, replace or ignore") from None
    # utf-8-sig is utf-8 plus BOM removal, which _read_text does itself so byte offsets stay exact.
    name = "utf-8" if info.name in ("utf-8", "utf-8-sig") else info.name
    try:
        ascii_compatible = "\n a".encode(name) == b"\n a"
    except (UnicodeError, LookupError):
        ascii_compatible = False
    return name, ascii_compatible


def _binary_error(shown: str, why: str) -> UsageError:
    return UsageError(f"{shown} looks like binary data, not text ({why})",
                      "pass a plain-text file, or the right --encoding if it is UTF-16/32 text")


def _check_control(counts: np.ndarray, shown: str) -> None:
    """Raise if more than BINARY_CONTROL_FRACTION of the characters counted are control characters."""
    head = np.zeros(_CONTROL.size, dtype=np.int64)
    head[: min(counts.size, head.size)] = counts[: head.size]
    fraction = head[_CONTROL].sum() / max(1, counts.sum())
    if fraction > BINARY_CONTROL_FRACTION:
        raise _binary_error(shown, f"{fraction:.0%} control characters")


def _read_text(path: Path, shown: str, codec: str, ascii_compatible: bool, errors: str,
               on_bytes: Callable[[bytes], object] | None = None) -> Iterator[str]:
    """Yield the decoded text of the file in pieces of about CHUNK_BYTES bytes (never empty pieces)."""
    decoder = codecs.getincrementaldecoder(codec)(errors)
    consumed = 0  # bytes of the file handed to the decoder so far
    first = True  # the BOM, if any, is the first decoded character
    try:
        with open(path, "rb") as f:
            while True:
                raw = f.read(CHUNK_BYTES)
                if on_bytes is not None:
                    on_bytes(raw)
                # Check raw bytes before decoding, so binary data is reported as such, not as bad UTF-8.
                if consumed == 0 and ascii_compatible and b"\0" in raw:
                    raise _binary_error(shown, "it contains a NUL byte")
                pending = len(decoder.getstate()[0])  # undecoded bytes kept from the previous chunk
                try:
                    text = decoder.decode(raw, final=not raw)
                except UnicodeDecodeError as e:
                    # e.start counts from the start of pending + raw, so rebase it onto the whole file.
                    offset = consumed - pending + e.start
                    raise UsageError(
                        f"{shown} is not valid {codec}: {e.reason} "
                        f"(byte 0x{e.object[e.start:e.start + 1].hex()}) at byte offset {offset}",
                        "use --encoding <codec> or --errors replace",
                    ) from None
                except UnicodeError as e:  # e.g. utf-16 without a BOM: no byte offset to report
                    raise UsageError(f"{shown} cannot be read as {codec}: {e}",
                                     "use --encoding <codec> with the file's real encoding") from None
                consumed += len(raw)
                if first and text:
                    first = False
                    if codec == "utf-8" and text[0] == "\ufeff":
                        text = text[1:]
                if text:
                    yield text
                if not raw:
                    return
    except OSError as e:
        raise UsageError(f"cannot read {shown}: {e.strerror}", "check the path and its permissions") from None


def _pieces(files: list[tuple[Path, str]], codec: str, ascii_compatible: bool, errors: str, separator: str,
            hashers: list | None = None) -> Iterator[tuple[int, bool, str]]:
    """(file index, first piece of that file?, text) over every file with the separator between files
    (index -1). A file's final newline counts as the separator's first one, so with the default
    separator (a blank line) files ending in a newline or not are both followed by exactly one blank line."""
    last = ""
    for i, (path, shown) in enumerate(files):
        if i and separator:
            sep = separator[1:] if separator[0] == "\n" and last == "\n" else separator
            if sep:
                yield -1, False, sep
        first = True
        on_bytes = hashers[i].update if hashers is not None else None
        for text in _read_text(path, shown, codec, ascii_compatible, errors, on_bytes):
            yield i, first, text
            first = False
            last = text[-1]


def _combined_sha256(file_sha256: list[str], separator: str) -> str:
    """One file: the SHA-256 of its bytes. Several: the SHA-256 of their SHA-256s in order and the
    separator, so any edit, reordering or other separator gives another corpus identity."""
    if len(file_sha256) == 1:
        return file_sha256[0]
    doc = json.dumps({"files_sha256": file_sha256, "separator": separator}, ensure_ascii=True)
    return hashlib.sha256(doc.encode()).hexdigest()


def _build(files: list[tuple[Path, str]], codec: str, ascii_compatible: bool, errors: str,
           separator: str) -> tuple[Corpus, list[str]]:
    """Two passes: (1) vocabulary, character count and sha256s; (2) encode into a preallocated array.
    Returns the corpus and each file's sha256."""
    hashers = [hashlib.sha256() for _ in files]
    everything = files[0][1] if len(files) == 1 else f"the {len(files)} corpus files"
    # Counting with bincount is a vectorised union of each chunk's distinct code points (9 MB table).
    totals = np.zeros(_MAX_CODEPOINT + 1, dtype=np.int64)
    for i, first, text in _pieces(files, codec, ascii_compatible, errors, separator, hashers):
        counts = np.bincount(_codepoints(text))
        if first:  # fail fast on binary files instead of after reading all of them
            if counts[0]:
                raise _binary_error(files[i][1], "it contains a NUL character")
            _check_control(counts, files[i][1])
        totals[: counts.size] += counts
    n_chars = int(totals.sum())
    if n_chars == 0:  # e.g. a file holding only a BOM
        raise UsageError(f"corpus file {everything} contains no text", "pass a file that contains text")
    _check_control(totals, everything)
    present = np.flatnonzero(totals)
    if present.size < 2:
        raise UsageError(f"{everything} has only {present.size} distinct character, need at least 2",
                         "pass a file with real text")
    vocab = Vocab(_text(present))

    data = np.empty(n_chars, dtype=vocab.dtype)
    changed = UsageError(f"{everything} changed while being read", "try again once nothing is writing to it")
    pos = 0
    for _, _, text in _pieces(files, codec, ascii_compatible, errors, separator):
        try:
            ids = vocab.encode(text)
        except UsageError:
            raise changed from None
        if pos + ids.size > n_chars:
            raise changed
        data[pos: pos + ids.size] = ids
        pos += ids.size
    if pos != n_chars:
        raise changed
    shas = [h.hexdigest() for h in hashers]
    corpus = Corpus(vocab, data, files[0][0], _combined_sha256(shas, separator), n_chars,
                    files=tuple(p for p, _ in files))
    return corpus, shas


def load_corpus(path: str | os.PathLike | Sequence[str | os.PathLike], encoding: str = "utf-8",
                errors: str = "strict", cache_dir: str | os.PathLike | None = None,
                expect_sha256: str | None = None, *, glob: str = "", separator: str = "\n\n",
                exclude: Path | None = None) -> Corpus:
    """Read and encode a text file, or several files and directories joined by `separator` (see
    sources.find_files for which files and in what order; `exclude` is a directory never read), reusing
    cache_dir/corpus.{npy,json} when every file is unchanged.

    The cache is valid when the absolute paths, sizes, mtime_ns, encoding, error handler (and, for
    several files, the separator) all match and every file's bytes still hash to the cached sha256.
    Bad input raises UsageError: missing, empty directory, glob matching nothing, empty, binary,
    undecodable, < 2 distinct chars.
    expect_sha256 (on resume): a corpus that hashes differently is returned but not cached, so a
    refused resume with the wrong corpus leaves the run's cache as it was.
    """
    codec, ascii_compatible = _resolve_codec(encoding, errors)
    if not isinstance(separator, str):
        raise UsageError(f"the separator must be a str, got {type(separator).__name__}")
    files = find_files(path, glob, exclude)
    stats = [check_file(p, shown) for p, shown in files]
    if len(files) == 1:
        key = {"source": str(files[0][0]), "size": stats[0].st_size, "mtime_ns": stats[0].st_mtime_ns}
    else:
        key = {"source": [str(p) for p, _ in files], "size": [st.st_size for st in stats],
               "mtime_ns": [st.st_mtime_ns for st in stats], "separator": separator}
    key |= {"encoding": codec, "errors": errors}
    if cache_dir is not None and (cached := read_cache(Path(cache_dir), key)) is not None:
        return cached
    corpus, shas = _build(files, codec, ascii_compatible, errors, separator)
    if cache_dir is not None and expect_sha256 in (None, corpus.sha256):
        write_cache(Path(cache_dir), key, corpus, shas)
    return corpus


def split(data: np.ndarray, val_fraction: float, test_fraction: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Contiguous (train, val, test) views: train is the start of data, then val, then test at the end.

    n_val = int(N * val_fraction) and n_test = int(N * test_fraction); train gets the rest. Contiguous
    (not shuffled) splits keep validation text unseen and keep streams of consecutive characters intact.
    """
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 <= value < 1:
            raise UsageError(f"{name} must be in [0, 1), got {value}", f"set {name} to e.g. 0.05")
    if val_fraction + test_fraction >= 1:
        raise UsageError(f"val_fraction + test_fraction must be below 1, got {val_fraction + test_fraction}",
                         "lower val_fraction or test_fraction")
    n = len(data)
    n_val, n_test = int(n * val_fraction), int(n * test_fraction)
    n_train = n - n_val - n_test
    return data[:n_train], data[n_train: n_train + n_val], data[n_train + n_val:]


class Batches:
    """char-rnn style batches: B parallel streams, each continuing from one batch to the next.

    The data is cut into B contiguous streams of stream_len = (len(data) - 1) // B characters; batch i
    holds window [offset + i*T, offset + (i+1)*T) of every stream, so row b of batch i+1 continues row b
    of batch i and the trainer can carry the hidden state across batches. y is x shifted by one char.
    """

    def __init__(self, data: np.ndarray, batch_size: int, seq_len: int):
        if batch_size < 1 or seq_len < 1:
            raise ValueError(f"batch_size and seq_len must be >= 1, got {batch_size}, {seq_len}")
        self.batch_size, self.seq_len = batch_size, seq_len
        self.stream_len = (len(data) - 1) // batch_size
        if self.stream_len < 1:
            raise ValueError(f"{len(data)} characters cannot make {batch_size} streams")
        n = batch_size * self.stream_len
        self.x_streams = data[:n].reshape(batch_size, self.stream_len)  # views: no copy of the corpus
        self.y_streams = data[1: n + 1].reshape(batch_size, self.stream_len)

    def batches_per_epoch(self, offset: int = 0) -> int:
        """Full batches that fit after skipping offset characters of every stream."""
        if not 0 <= offset <= self.stream_len:
            raise ValueError(f"offset must be in [0, {self.stream_len}], got {offset}")
        return (self.stream_len - offset) // self.seq_len

    def batch(self, i: int, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) as C-contiguous int32 arrays of shape (batch_size, seq_len)."""
        n = self.batches_per_epoch(offset)
        if not 0 <= i < n:
            raise ValueError(f"batch index {i} out of range [0, {n}) for offset {offset}")
        start = offset + i * self.seq_len
        window = slice(start, start + self.seq_len)
        return (np.ascontiguousarray(self.x_streams[:, window], dtype=np.int32),
                np.ascontiguousarray(self.y_streams[:, window], dtype=np.int32))

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The batches of one epoch with offset 0."""
        return (self.batch(i) for i in range(self.batches_per_epoch()))


def eval_batches(data: np.ndarray, batch_size: int, seq_len: int) -> Batches | None:
    """Batches for evaluating a (small) split: batch_size shrinks so at least one batch fits.

    None when not even one stream of seq_len + 1 characters fits (e.g. val_fraction is 0).
    """
    b = min(batch_size, (len(data) - 1) // seq_len)
    return Batches(data, b, seq_len) if b >= 1 else None


def fit_batch_shape(n_train: int, batch_size: int, seq_len: int) -> tuple[int, int, str | None]:
    """(batch_size, seq_len, warning): the requested shape if one full batch fits, else a smaller one.

    Shrinking lowers batch_size first, then seq_len (not below 8), aiming at TARGET_BATCHES batches
    per epoch; the warning says what changed. UsageError if not even batch_size 1, seq_len 8 fits.
    """
    if batch_size < 1 or seq_len < 1:
        raise UsageError(f"batch_size and seq_len must be >= 1, got {batch_size} and {seq_len}",
                         "set both to positive integers")
    usable = n_train - 1  # the last character is only ever a target
    if usable // batch_size >= seq_len:
        return batch_size, seq_len, None
    min_seq = min(seq_len, MIN_SEQ_LEN)  # never raise a seq_len the user set below 8
    if usable < min_seq:
        raise UsageError(f"corpus too small: {n_train} characters in the train split, need at least {min_seq + 1}",
                         "use a larger file or lower val_fraction/test_fraction")
    b = usable // (TARGET_BATCHES * seq_len)
    if b >= 1:
        t = seq_len
    else:
        b, t = 1, max(min_seq, min(seq_len, usable // TARGET_BATCHES))
    n_batches = (usable // b) // t
    warning = (f"the train split has only {n_train} characters, too few for batch_size {batch_size} x "
               f"seq_len {seq_len}; using batch_size {b}, seq_len {t} ({n_batches} batches per epoch)")
    return b, t, warning

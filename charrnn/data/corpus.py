"""Reading a corpus: files → text → vocabulary → encoded array (cached in the run directory). The splits
and batches are in batches.py, the vocabulary in vocab.py.

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
from pathlib import Path

import numpy as np

from ..errors import UsageError
from .cache import read_cache, write_cache
from .sources import check_file, find_files
from .vocab import Corpus, Vocab, _codepoints, _text

CHUNK_BYTES = 8 << 20  # bytes read per step; tests lower it to make characters straddle chunk edges
BINARY_CONTROL_FRACTION = 0.10
_MAX_CODEPOINT = 0x10FFFF
# C0 controls except \t \n \v \f \r, DEL, and C1 controls: rare in real text, common in binary data.
_CONTROL = np.zeros(0xA0, dtype=bool)
_CONTROL[[*range(0x00, 0x09), *range(0x0E, 0x20), *range(0x7F, 0xA0)]] = True


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
                exclude: Path | None = None, cache_write: bool = True, mmap: bool = False) -> Corpus:
    """Read and encode a text file, or several files and directories joined by `separator` (see
    sources.find_files for which files and in what order; `exclude` is a directory never read), reusing
    cache_dir/corpus.{npy,json} when every file is unchanged.

    The cache is valid when the absolute paths, sizes, mtime_ns, encoding, error handler (and, for
    several files, the separator) all match and every file's bytes still hash to the cached sha256.
    Bad input raises UsageError: missing, empty directory, glob matching nothing, empty, binary,
    undecodable, < 2 distinct chars.
    expect_sha256 (on resume): a corpus that hashes differently is returned but not cached, so a
    refused resume with the wrong corpus leaves the run's cache as it was.
    cache_write=False reads the cache but never writes it (a rank of a distributed run other than rank 0,
    which wrote it); mmap maps the cached array instead of reading it (each rank of a host shares the
    pages).
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
    if cache_dir is not None and (cached := read_cache(Path(cache_dir), key, mmap=mmap)) is not None:
        return cached
    corpus, shas = _build(files, codec, ascii_compatible, errors, separator)
    if cache_dir is not None and cache_write and expect_sha256 in (None, corpus.sha256):
        write_cache(Path(cache_dir), key, corpus, shas)
    return corpus

"""The encoded corpus cached in a run directory (cache/corpus.npy + corpus.json), so a resume or a
second run on the same text skips reading and encoding it. Any doubt means a rebuild: the metadata
must match the key (paths, sizes, mtimes, encoding, ...), the array must be intact, and every file's
bytes must still hash to what was cached."""
from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path

import numpy as np

from ..atomic import atomic_write
from ..errors import UsageError
from .vocab import Corpus, Vocab

CACHE_FORMAT = 2  # bump when the cache layout changes, so old caches are rebuilt
READ_BYTES = 8 << 20


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(READ_BYTES):
            h.update(chunk)
    return h.hexdigest()


def content_sha256(vocab_chars: str, data: np.ndarray) -> str:
    """The hash of what the cache holds (vocabulary and encoded text), so an edited cache is rebuilt,
    never trained on (its metadata could otherwise pass for the corpus's)."""
    h = hashlib.sha256(vocab_chars.encode("utf-32-le", "surrogatepass"))
    h.update(np.ascontiguousarray(data).data)
    return h.hexdigest()


def read_cache(cache_dir: Path, key: dict, mmap: bool = False) -> Corpus | None:
    """The cached corpus if it matches key and is intact, else None (a broken cache is just rebuilt).
    mmap: the array memory-mapped read-only (the ranks of a distributed run on one host share it)."""
    try:
        meta = json.loads((cache_dir / "corpus.json").read_text(encoding="utf-8"))
        if meta.get("format") != CACHE_FORMAT or any(meta.get(k) != v for k, v in key.items()):
            return None
        if isinstance(key["source"], str) != ("files_sha256" not in meta):  # one file vs several
            return None
        vocab = Vocab(meta["vocab"])
        data = np.load(cache_dir / "corpus.npy", allow_pickle=False, mmap_mode="r" if mmap else None)
        ok = (vocab.size == len(meta["vocab"]) and data.ndim == 1 and data.dtype == vocab.dtype
              and data.shape[0] == meta["n_chars"])
        # Kernels index embeddings without bounds checks, so a corrupt id must never get through.
        if not ok or int(data.max()) >= vocab.size or meta.get("content_sha256") != content_sha256(vocab.chars, data):
            return None
        # Size and mtime can survive an edit (cp -p, rsync -t, tar restore): the bytes must still hash
        # the same. Hashing runs at ~1 GB/s, far cheaper than re-encoding.
        sources = [key["source"]] if isinstance(key["source"], str) else key["source"]
        shas = meta.get("files_sha256", [meta["sha256"]])
        if len(shas) != len(sources) or any(file_sha256(Path(s)) != h for s, h in zip(sources, shas)):
            return None
        files = tuple(Path(s) for s in sources)
        return Corpus(vocab, data, files[0], meta["sha256"], int(meta["n_chars"]), from_cache=True, files=files)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def write_cache(cache_dir: Path, key: dict, corpus: Corpus, shas: list[str]) -> None:
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        # Drop the old metadata first: until the new one lands, the cache reads as absent, never stale.
        with contextlib.suppress(FileNotFoundError):
            (cache_dir / "corpus.json").unlink()
        atomic_write(cache_dir / "corpus.npy", lambda f: np.save(f, corpus.data, allow_pickle=False))
        meta = {"format": CACHE_FORMAT, **key, "sha256": corpus.sha256, "n_chars": corpus.n_chars,
                "dtype": corpus.data.dtype.name, "vocab": corpus.vocab.chars,
                "content_sha256": content_sha256(corpus.vocab.chars, corpus.data)}
        if len(shas) > 1:
            meta["files_sha256"] = shas
        atomic_write(cache_dir / "corpus.json", lambda f: f.write(json.dumps(meta, indent=1).encode()))
    except OSError as e:
        raise UsageError(f"cannot write the corpus cache in {cache_dir}: {e.strerror or e}",
                         "free disk space, or check the directory's permissions") from None

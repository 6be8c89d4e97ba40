"""The vocabulary and the encoded corpus: characters as Unicode code points (never bytes, so "ế" is one
token), sorted by code point, a character's index its token id; and the one message for characters a
vocabulary does not have.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UsageError


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
                raise unknown_error(bad, "the text", "the vocabulary",
                                    "remove them from the text or skip unknown characters")
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


def shown_chars(chars: list[str], limit: int = 8) -> str:
    """Up to `limit` characters as Python literals, then how many more."""
    more = f" and {len(chars) - limit} more" if len(chars) > limit else ""
    return ", ".join(repr(c) for c in chars[:limit]) + more


def unknown_error(chars: list[str], where: str, vocabulary: str, hint: str) -> UsageError:
    """The one message for characters outside a vocabulary (a prime, a text to evaluate or read, a corpus
    to fine-tune on): "<where> has N character(s) not in <vocabulary>: 'x', 'y' and 3 more"."""
    return UsageError(f"{where} has {len(chars)} character(s) not in {vocabulary}: {shown_chars(chars)}", hint)

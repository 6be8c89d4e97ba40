"""Which files make a corpus: one text file, several, or directories walked recursively.

The order is stable: the paths in the order given, and the files found in a directory sorted by their
path relative to it (code point order, the same on every machine and file system). A file named twice
(directly and through a directory, or two overlapping directories) is read once, where it first appears.
"""
from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath

from ..errors import UsageError


def check_file(path: Path, shown: str) -> os.stat_result:
    """The stat of a non-empty regular file, or a one-line UsageError saying what it is instead."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise UsageError(f"corpus file not found: {shown}", "check the path") from None
    except OSError as e:
        raise UsageError(f"cannot read {shown}: {e.strerror}", "check the path and its permissions") from None
    if stat.S_ISDIR(st.st_mode):
        raise UsageError(f"{shown} is a directory, not a text file", "pass the path of a text file")
    if not stat.S_ISREG(st.st_mode):  # a pipe cannot be read twice, and load_corpus reads twice
        raise UsageError(f"{shown} is not a regular file", "save the text to a file first")
    if st.st_size == 0:
        raise UsageError(f"corpus file {shown} is empty", "pass a file that contains text")
    return st


def as_paths(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """One path or a sequence of them, as a non-empty list of strings."""
    items = [paths] if isinstance(paths, (str, os.PathLike)) else paths
    if not isinstance(items, (list, tuple)) or not all(isinstance(p, (str, os.PathLike)) for p in items):
        raise UsageError(f"corpus_path must be a path (str or os.PathLike) or a list of them, got {paths!r:.60}")
    for p in items:
        if not os.fspath(p).strip():
            raise UsageError("corpus_path is an empty path", "give a file or directory name")
    if not items:
        raise UsageError("no corpus path given", "pass a text file or a directory")
    return [os.fspath(p) for p in items]


def _walk(root: Path, glob: str, exclude: Path | None) -> Iterable[tuple[str, Path]]:
    """(path relative to root in POSIX form, path) of the non-empty regular files under root. Hidden
    files and directories (.git, .DS_Store) are skipped, and so is `exclude` (the run directory: its
    checkpoints and cache would otherwise become training text, and change at every run)."""
    skip = exclude.resolve() if exclude is not None else None
    for dirpath, dirs, files in os.walk(root):
        here = Path(dirpath)
        dirs[:] = [d for d in dirs if not d.startswith(".") and (skip is None or (here / d).resolve() != skip)]
        for name in files:
            if name.startswith("."):
                continue
            p = here / name
            rel = p.relative_to(root).as_posix()
            if glob and not PurePosixPath(rel).match(glob):
                continue
            try:
                st = p.stat()
            except OSError:  # a dangling symlink: not part of the text
                continue
            if stat.S_ISREG(st.st_mode) and st.st_size > 0:
                yield rel, p


def find_files(paths: str | os.PathLike | Sequence[str | os.PathLike], glob: str = "",
               exclude: Path | None = None) -> list[tuple[Path, str]]:
    """[(absolute path, path as shown to the user)] of every file the corpus reads, in reading order.

    A directory contributes its files recursively (only those whose relative path matches `glob`,
    matched from the right like pathlib: '*.py' matches at any depth). Empty files found in a directory
    are skipped; a file named directly must be a non-empty regular file. UsageError for a missing path,
    a directory with no files, a glob that matches nothing, or a glob with no directory to apply to.
    """
    items = as_paths(paths)
    if glob and not any(Path(p).is_dir() for p in items):
        raise UsageError(f"--glob {glob!r} selects files inside directories, but no corpus path is a directory",
                         "pass a directory as the corpus, or drop --glob")
    out: list[tuple[Path, str]] = []
    seen: set[Path] = set()
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(_walk(path, glob, exclude))
            if not found:
                what = f"no files matching {glob!r}" if glob else "no files"
                hint = ("check the pattern (it is matched against each file's path inside the directory, "
                        "e.g. '*.txt')" if glob else "put text files in it, or pass a file")
                raise UsageError(f"corpus directory {item} has {what} (hidden and empty files are skipped)", hint)
            files = [(p, os.path.join(item, *rel.split("/"))) for rel, p in found]
        else:
            check_file(path, item)
            files = [(path, item)]
        for p, shown in files:
            resolved = p.resolve()
            if resolved not in seen:
                seen.add(resolved)
                out.append((resolved, shown))
    return out


def encode_escapes(text: str) -> str:
    r"""The inverse of decode_escapes, for showing a setting such as data.separator on one line."""
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")


def decode_escapes(text: str) -> str:
    r"""--separator as typed in a shell: \n, \t, \r and \\ become the characters they name."""
    out, i = [], 0
    table = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in table:
            out.append(table[text[i + 1]])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)

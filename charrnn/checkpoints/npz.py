"""Safe, atomic, verifiable checkpoint files.

A checkpoint is a plain ``.npz`` file that ``numpy.load(path, allow_pickle=False)`` can read:
named arrays (weights named like a PyTorch state_dict, optimizer moments, carried hidden
state; the caller picks the names) plus one array ``meta``, a 0-d unicode string holding a
JSON object. ``meta`` carries ``format_version`` and a sha256 ``checksum`` over the arrays.

Every write goes to a temporary file in the target's directory, is fsynced and then
``os.replace``d onto the target, so a crash or ``kill -9`` leaves either the old complete
file, the new complete file, or nothing -- never a half-written checkpoint under a real name.
Loading never unpickles, so a checkpoint cannot execute code.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import re
import secrets
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np

from charrnn.checkpoints import zipread
from charrnn.errors import CharrnnError, UsageError
from charrnn.userfiles import read_bounded, utf8

__all__ = [
    "FORMAT_VERSION",
    "save",
    "load",
    "check_arrays",
    "publish",
    "read_meta",
    "step_of",
    "checkpoint_name",
    "prune",
    "write_text_atomic",
    "atomic_write",
    "remove_stale_temps",
]

FORMAT_VERSION = 1

META_KEY = "meta"

# Names become zip member names ("<name>.npy"); keep them to a conservative character set so
# they survive every zip tool and file system, and cannot escape the archive ("../", "/").
_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,199}")
# np.savez takes the arrays as keyword arguments, so these would collide with its parameters.
_RESERVED_NAMES = {META_KEY, "file", "allow_pickle"}

# ".{target name}.tmp-{pid}-{random hex}": hidden, and recognisable by remove_stale_temps.
_TEMP_RE = re.compile(r"\..+\.tmp-(\d+)-[0-9a-f]+")
# step{N}.npz, step{N}_val{loss:.4f}.npz, step{N}_valnan.npz (and _valinf) -- see checkpoint_name.
_STEP_RE = re.compile(r"step(\d+)(?:_val(?:-?\d+\.\d+|nan|-?inf))?\.npz")

_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # local file header; empty archive
_NPY_MAGIC = b"\x93NUMPY"

STREAM_CAP = 512 << 20  # bytes of a checkpoint read from a pipe (a regular file is read in place)

_HINT_RESTORE = "restore it from a backup or use another checkpoint, e.g. last.npz or an earlier step*.npz"


# --------------------------------------------------------------------------- atomic writes


def _temp_path(target: Path) -> Path:
    """A fresh temp name next to target: same directory, so os.replace is an atomic rename."""
    return target.with_name(f".{target.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")


def _fsync_dir(directory: Path) -> None:
    """Persist a rename by fsyncing its directory; best effort (not possible on every OS/FS)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None], mode: int | None = None) -> None:
    """Call write(f) on a temp file, fsync it, and rename it onto path; clean up on failure.
    mode: permission bits for the new file (default: what open() gives under the umask)."""
    target = Path(path)
    tmp = _temp_path(target)
    # Open outside the try: if "x" mode fails the name belongs to someone else; don't unlink it.
    f = open(tmp, "xb")
    try:
        with f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:  # includes KeyboardInterrupt: still clean up, then re-raise
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(target.parent)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Atomically replace path with text (UTF-8, a lone surrogate escaped), e.g. config.yaml next to the checkpoints."""
    data = utf8(text)
    atomic_write(path, lambda f: f.write(data))


# --------------------------------------------------------------------------- save


def _checksum(arrays: Mapping[str, np.ndarray]) -> str:
    """sha256 over (name, dtype, shape, C-order bytes) of each array, in sorted name order."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = arrays[name]
        # NUL-separated header plus the byte length makes the framing unambiguous.
        header = f"{name}\0{a.dtype.str}\0{tuple(a.shape)}\0{a.nbytes}\0"
        h.update(header.encode("utf-8"))
        # No copy when already C-contiguous (the usual case); F-order arrays hash their C bytes.
        h.update(np.ascontiguousarray(a).data)
    return h.hexdigest()


def _validated(arrays: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Check names and dtypes before writing anything; misuse is a programming error."""
    out: dict[str, np.ndarray] = {}
    for name, value in arrays.items():
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
            raise ValueError(f"invalid checkpoint array name {name!r}: use letters, digits, '_', '.', '-'")
        if name in _RESERVED_NAMES:
            raise ValueError(f"checkpoint array name {name!r} is reserved")
        arr = np.asarray(value)
        if arr.dtype.hasobject:
            raise ValueError(f"checkpoint array {name!r} has object dtype; it would need pickle")
        out[name] = arr
    return out


def save(path: str | os.PathLike, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Atomically write arrays and meta (plus format_version and checksum) to path as .npz."""
    if not isinstance(meta, dict):
        raise ValueError(f"checkpoint meta must be a dict, not {type(meta).__name__}")
    payload = _validated(arrays)
    full_meta = {**meta, "format_version": FORMAT_VERSION, "checksum": _checksum(payload)}
    try:
        meta_json = json.dumps(full_meta, ensure_ascii=False, sort_keys=True)
    except (TypeError, ValueError) as e:
        raise ValueError(f"checkpoint meta is not JSON-serializable: {e}") from e
    # A 0-d unicode array, never an object array, so allow_pickle=False readers can open it.
    payload[META_KEY] = np.array(meta_json, dtype=np.str_)
    # Uncompressed: checkpoints are mostly incompressible floats and saving is on the hot path.
    atomic_write(path, lambda f: np.savez(f, **payload))


# --------------------------------------------------------------------------- load


def _bad(problem: str, hint: str = _HINT_RESTORE) -> CharrnnError:
    """A one-line "your input file is bad" error (exit code 2)."""
    return CharrnnError(problem.replace("\n", " "), hint, exit_code=2)


def _reason(e: BaseException) -> str:
    """A short one-line description of an exception from numpy/zipfile for the message."""
    text = " ".join(str(e).split())
    if len(text) > 100:
        text = text[:97] + "..."
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _read_npz(source: Path | io.BytesIO, path: Path, check) -> tuple[dict[str, np.ndarray], dict]:
    """Read the npz (at path, or already in memory): every member's header, then the meta, then
    check(meta, headers, path) (the caller's, which may refuse), then the arrays; loader failures become
    CharrnnError. Nothing is inflated beyond what the headers declare and the check accepted."""
    found: dict = {}

    def before_arrays(raw, headers) -> None:
        found["meta"] = meta = _parse_meta(path, raw)
        version = meta.get("format_version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise _bad(f"{path}: meta has no valid format_version; the file is corrupt or not from charrnn")
        if version > FORMAT_VERSION:
            raise _bad(f"{path} was written by a newer charrnn (format version {version}, "
                       f"this one reads up to {FORMAT_VERSION})", "upgrade charrnn (pip install -U charrnn)")
        if check is not None:
            check(meta, headers, path)

    try:
        arrays = zipread.read(source, META_KEY, before_arrays)
    except CharrnnError:
        raise
    except zipread.NeedsPickle as e:
        raise _bad(f"{path}: array {str(e)!r} needs pickle to load; charrnn never unpickles",
                   "use a checkpoint written by charrnn; never load files from untrusted sources") from None
    except zipread.Refused as e:
        raise _bad(f"{path}: {e}; not a charrnn checkpoint, or a damaged one", "pass a .npz checkpoint written by charrnn") from None
    except MemoryError:
        raise _bad(f"{path} needs more memory to load than is available (or its array headers are corrupt)",
                   "free memory or use another checkpoint") from None
    except RecursionError:
        raise _bad(f"{path}: its meta is nested too deeply; the file is corrupt or not from charrnn") from None
    except Exception as e:  # BadZipFile, EOFError, zlib.error, OSError, struct.error, ValueError, ...
        raise _bad(f"{path} is corrupt or truncated ({_reason(e)})") from None
    return arrays, found["meta"]


def _parse_meta(path: Path, raw: np.ndarray | None) -> dict:
    """Decode the meta array: a 0-d unicode string holding a JSON object."""
    if raw is None:
        raise _bad(f"{path} has no 'meta' array; it was not written by charrnn",
                   "pass a .npz checkpoint written by charrnn")
    meta = None
    if raw.ndim == 0 and raw.dtype.kind == "U":
        with contextlib.suppress(ValueError, RecursionError):  # JSONDecodeError is a ValueError
            meta = json.loads(str(raw[()]))
    if not isinstance(meta, dict):
        raise _bad(f"{path}: 'meta' is not a JSON object; the file is corrupt or not from charrnn")
    return meta


def load(path: str | os.PathLike, verify: bool = True, check=None) -> tuple[dict[str, np.ndarray], dict]:
    """Read a checkpoint into memory; return (arrays, meta). Refuses bad files with CharrnnError.

    meta is returned as stored, including format_version and checksum. verify=False skips only
    the checksum check (missing or wrong); the structural checks always run. check(meta, headers, path),
    if given, runs before any array is inflated (headers: name -> zipread.Header, each member's declared
    shape and dtype) and raises CharrnnError to refuse.
    """
    p = Path(path)
    if p.is_dir():
        raise _bad(f"checkpoint {p} is a directory, not a file", f"pass a file inside it, e.g. {p / 'best.npz'}")
    source: Path | io.BytesIO = p
    try:
        if p.exists() and not p.is_file():
            # a pipe, e.g. a shell's <(...): not seekable, which the zip reader needs, so it is read into
            # memory: only once it looks like a zip file (/dev/zero is not read on), up to a cap, and
            # without waiting forever for a FIFO's writer.
            data = read_bounded(p, STREAM_CAP, "checkpoint", head=lambda first: first.startswith(_ZIP_MAGICS))
            magic, source = data[:6], io.BytesIO(data)
        else:
            with open(p, "rb") as f:
                magic = f.read(6)
    except UsageError as e:
        raise _bad(e.message, e.hint) from None
    except FileNotFoundError:
        raise _bad(f"checkpoint {p} does not exist",
                   "check the path; a run directory holds best.npz, last.npz and step*.npz") from None
    except OSError as e:
        raise _bad(f"cannot read checkpoint {p}: {e.strerror or _reason(e)}", "check the file's permissions") from None
    # Sniff the format ourselves: np.load would otherwise accept a bare .npy or try pickle.
    if magic.startswith(_NPY_MAGIC):
        raise _bad(f"{p} is a .npy file, not an .npz checkpoint", "pass a .npz checkpoint written by charrnn")
    if not magic.startswith(_ZIP_MAGICS):
        raise _bad(f"{p} is not a charrnn checkpoint (not an .npz file)", "pass a .npz checkpoint written by charrnn")

    arrays, meta = _read_npz(source, p, check)
    if verify:
        expected = meta.get("checksum")
        if expected is None:
            raise _bad(f"{p} has no checksum, so it cannot be verified",
                       "re-save it with charrnn, or load it without verification if you trust it")
        if expected != _checksum(arrays):
            raise _bad(f"{p}: checksum mismatch: the file is corrupt")
    return arrays, meta


def step_of(name: str) -> int | None:
    """N for a file named like checkpoint_name(N, ...) (step{N}.npz, step{N}_val{loss}.npz), else None."""
    m = _STEP_RE.fullmatch(name)
    return int(m.group(1)) if m else None


def read_meta(path: str | os.PathLike) -> dict | None:
    """Only the meta of a checkpoint (no checksum check, weights not read), or None if it has none
    readable. For housekeeping decisions about files already known to be charrnn's, never for loading."""
    if not Path(path).is_file():  # a FIFO would block, a device never end
        return None
    try:
        meta = json.loads(str(zipread.read_meta(Path(path), META_KEY)[()]))
    except Exception:  # missing, truncated, not an npz, no meta, bad JSON: no housekeeping answer
        return None
    return meta if isinstance(meta, dict) else None


def check_arrays(arrays: Mapping[str, np.ndarray], expected: Mapping[str, tuple], path: str | os.PathLike) -> None:
    """Raise CharrnnError for the first expected array that is missing or has the wrong shape.

    Extra arrays are allowed (the caller may only need some of them); dtypes are not checked.
    """
    for name, shape in expected.items():
        want = tuple(int(n) for n in shape)
        if name not in arrays:
            raise _bad(f"{path}: missing array {name}",
                       "the checkpoint does not match this model; check the model settings")
        got = tuple(int(n) for n in np.shape(arrays[name]))
        if got != want:
            raise _bad(f"{path}: {name} has shape {got}, expected {want}",
                       "the checkpoint was trained with different model settings; use matching settings")


# --------------------------------------------------------------------------- run-directory housekeeping


def publish(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Make dst an atomic copy of the complete file src (hard link if possible, else byte copy).

    Hard links are safe because checkpoints are never modified in place: save() always
    renames a new inode over the old name, so a linked best.npz keeps its content. Only within one
    directory, though: a file published into another run's directory is copied, so that run never
    shares an inode (a chmod or an in-place write there would reach this one).
    """
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise FileNotFoundError(f"publish: source {src} is not a file")
    tmp = _temp_path(dst)
    try:
        linked = src.parent.resolve() == dst.parent.resolve()
        if linked:
            os.link(src, tmp)
    except OSError:  # no hard links here (other file system, FAT, some network shares, ...)
        linked = False
    if not linked:
        with open(src, "rb") as f_in:
            atomic_write(dst, lambda f_out: shutil.copyfileobj(f_in, f_out, 1 << 20))
        return
    try:
        os.replace(tmp, dst)
    finally:
        # Normally tmp is gone now. But if dst already was a link to src, POSIX rename() of two
        # names for the same inode is a successful no-op that leaves tmp behind; and on failure
        # tmp must go too.
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    _fsync_dir(dst.parent)


def checkpoint_name(step: int, val_loss: float | None) -> str:
    """step{N}_val{loss:.4f}.npz; step{N}.npz without a val loss; step{N}_valnan.npz for NaN."""
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
        raise ValueError(f"step must be a non-negative int, got {step!r}")
    if val_loss is None:
        return f"step{int(step)}.npz"
    if math.isnan(val_loss):
        return f"step{int(step)}_valnan.npz"
    return f"step{int(step)}_val{float(val_loss):.4f}.npz"  # inf formats as "inf"


def _inode(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def prune(run_dir: str | os.PathLike, keep_last: int, protect: set[str] | None = None) -> list[Path]:
    """Delete the oldest step*.npz files beyond the newest keep_last (by step number, not mtime).

    Never deletes best.npz, last.npz, files they are hard links to, names in protect (file
    names or paths), or files not named like checkpoint_name(). Protected files do not count
    towards keep_last. keep_last=0 keeps everything. Returns the deleted paths, oldest first.
    """
    if keep_last < 0:
        raise ValueError(f"keep_last must be >= 0, got {keep_last}")
    if keep_last == 0:
        return []
    run_dir = Path(run_dir)
    protected_names = {"best.npz", "last.npz"} | {Path(n).name for n in (protect or ())}
    protected_inodes = {i for i in (_inode(run_dir / n) for n in ("best.npz", "last.npz")) if i is not None}

    steps: list[tuple[int, str, Path]] = []
    for p in run_dir.iterdir():
        m = _STEP_RE.fullmatch(p.name)
        if m and p.is_file():
            steps.append((int(m.group(1)), p.name, p))  # name breaks ties deterministically
    steps.sort()

    deleted: list[Path] = []
    for _, name, p in steps[: max(len(steps) - keep_last, 0)]:
        if name in protected_names or _inode(p) in protected_inodes:
            continue
        try:
            p.unlink()
        except FileNotFoundError:  # someone else already removed it
            continue
        deleted.append(p)
    return deleted


def _pid_alive(pid: int) -> bool:
    """True if pid is a running process (POSIX only; elsewhere assume it is not)."""
    if os.name != "posix":
        return False  # os.kill(pid, 0) would terminate the process on Windows
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    except OSError:
        return False
    return True


def remove_stale_temps(run_dir: str | os.PathLike) -> list[Path]:
    """Delete temp files left by a killed writer (only names matching our temp pattern).

    Temps whose pid is still running (including this process) are kept: they may be
    mid-write by another thread or process. Returns the removed paths.
    """
    removed: list[Path] = []
    for p in sorted(Path(run_dir).iterdir()):
        m = _TEMP_RE.fullmatch(p.name)
        if not m or not p.is_file() or _pid_alive(int(m.group(1))):
            continue
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
            removed.append(p)
    return removed

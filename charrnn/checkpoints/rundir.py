"""The run directory: the one owner of its file names and their lifecycle.

A run directory holds config.yaml, metrics.jsonl, samples.txt, step{N}[_val...].npz, last.npz, best.npz,
cache/ and .lock (and, for a moment, the temp files of atomic writes, ../atomic.py). Checkpoints are
written as step files and published as last.npz (always) and best.npz (a better validation loss, or
every checkpoint when there is no validation split) as hard links; old step files are pruned. What a
resume changes in the directory is resuming.py's; training/run.py decides the order (every check
before anything is touched).
"""
import contextlib
import math
import os
import re
import shutil
import stat
from pathlib import Path

import numpy as np

from ..atomic import atomic_write, fsync_dir, temp_owner, temp_path
from ..errors import UsageError
from . import meta as M
from . import npz

LAST, BEST = "last.npz", "best.npz"
CONFIG, METRICS, SAMPLES, LOCK, CACHE = "config.yaml", "metrics.jsonl", "samples.txt", ".lock", "cache"
RUN_FILES = (CONFIG, METRICS, SAMPLES, LAST, BEST)
# step{N}.npz, step{N}_val{loss:.4f}.npz, step{N}_valnan.npz (and _valinf) -- see checkpoint_name.
_STEP_RE = re.compile(r"step(\d+)(?:_val(?:-?\d+\.\d+|nan|-?inf))?\.npz")


def last(run_dir: Path) -> Path:
    return Path(run_dir) / LAST


def best(run_dir: Path) -> Path:
    return Path(run_dir) / BEST


def config_path(run_dir: Path) -> Path:
    return Path(run_dir) / CONFIG


def metrics_path(run_dir: Path) -> Path:
    return Path(run_dir) / METRICS


def samples_path(run_dir: Path) -> Path:
    return Path(run_dir) / SAMPLES


def cache_dir(run_dir: Path) -> Path:
    return Path(run_dir) / CACHE


def step_of(name: str) -> int | None:
    """N for a file named like checkpoint_name(N, ...) (step{N}.npz, step{N}_val{loss}.npz), else None."""
    m = _STEP_RE.fullmatch(name)
    return int(m.group(1)) if m else None


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run directory meaning its best.npz (last.npz if there is no best yet)."""
    p = Path(path)
    if p.is_dir():
        for name in (BEST, LAST):
            if (p / name).is_file():
                return p / name
        raise UsageError(f"{p} holds no {BEST} or {LAST}", "pass a checkpoint file or a run directory")
    if not p.exists():
        raise UsageError(f"checkpoint {p} does not exist", "pass a .npz file or a run directory")
    return p


def resume_point(resume: Path) -> Path:
    """The checkpoint --resume names: a file, or a run directory's last.npz -- or its newest step file
    when that is newer (a kill between writing step{N}.npz and refreshing last.npz leaves it so)."""
    p = Path(resume)
    if not p.is_dir():
        return p
    ckpt = last(p)
    newer = later_checkpoints(p, saved_step(ckpt) if ckpt.exists() else -1, named=())
    ckpt = p / newer[-1] if newer else ckpt
    if not ckpt.exists():
        raise UsageError(f"{p} holds no {LAST} or step checkpoint to resume from",
                         "pass a checkpoint file with --resume, or start a new run with --out")
    return ckpt


def step_files(run_dir: Path) -> list[tuple[int, str]]:
    """(step, name) of run_dir's step checkpoints, in step order (names as checkpoint_name writes them)."""
    found = [(step_of(p.name), p.name) for p in run_dir.glob("step*.npz") if p.is_file()]
    return sorted((s, n) for s, n in found if s is not None)


def run_files(run_dir: Path) -> list[str]:
    """Names of the files in run_dir that belong to a run (what --force would remove)."""
    if not run_dir.is_dir():
        return []
    return [n for n in RUN_FILES if (run_dir / n).exists()] + [n for _, n in step_files(run_dir)]


def check_free(run_dir: Path, force: bool) -> list[str]:
    """Refuse to mix two runs in one directory; returns the old run's files that --force will remove
    (only once the new run has passed every check, so a failed start never costs the old run)."""
    present = run_files(run_dir)
    if present and not force:
        if not any(n in (LAST, BEST) or n.startswith("step") for n in present):
            raise UsageError(f"{run_dir} holds a run that never wrote a checkpoint ({present[0]})",
                             "use --force to start over there, or --out for a new directory")
        raise UsageError(f"{run_dir} already holds a run ({present[0]})",
                         f"use --resume {run_dir} to continue it, --force to start over, or --out for a new directory")
    return present


def saved_step(path: Path) -> int:
    """The step a checkpoint's meta records, -1 if unreadable (housekeeping only; loading verifies)."""
    return M.step(npz.read_meta(path))


def later_checkpoints(run_dir: Path, step: int, named=(LAST, BEST)) -> list[str]:
    """Names of run_dir's checkpoints written after `step` (the `named` ones by their meta, step files
    by name, those last and in step order): what resuming from an earlier checkpoint would leave
    contradicting its trimmed logs."""
    later = [n for n in named if (run_dir / n).is_file() and saved_step(run_dir / n) > step]
    return later + [n for s, n in step_files(run_dir) if s > step]


def make(run_dir: Path) -> list[Path]:
    """Create run_dir (and parents) and prove it is writable (UsageError if not). Returns the
    directories this call created, outermost first, for remove_created."""
    missing, p = [], run_dir.absolute()
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    created: list[Path] = []
    try:
        for d in reversed(missing):
            try:
                d.mkdir()  # one by one: a directory someone else creates meanwhile is theirs, not ours
            except FileExistsError:
                if d.is_dir():
                    continue
                raise UsageError(f"{d} exists and is not a directory (a dangling symlink?)",
                                 "choose another --out") from None
            created.append(d)
        probe = run_dir / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except BaseException as e:
        remove_created(created)
        if isinstance(e, OSError):
            raise UsageError(f"cannot write to output directory {run_dir}: {e.strerror or e}",
                             "choose a writable --out directory") from None
        raise
    return created


def remove_created(created: list[Path]) -> None:
    """Undo make(): remove the run directory it created (held by this run's lock, so nobody else's),
    then each parent it created if it is still empty (another run may have moved in meanwhile)."""
    if not created:
        return
    shutil.rmtree(created[-1], ignore_errors=True)
    for d in reversed(created[:-1]):
        with contextlib.suppress(OSError):
            d.rmdir()


@contextlib.contextmanager
def lock(run_dir: Path):
    """Hold an exclusive lock on run_dir/.lock while the run lasts, so a second `charrnn train` (or
    --resume) on the same directory is refused instead of overwriting this run's checkpoints. The lock
    goes with the process (flock), so a killed run never leaves the directory locked; the file is
    removed when the run ends, which is why a lock counts only if the path still names the locked file.
    POSIX only; on a file system without flock the run goes on unlocked."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    path = run_dir / LOCK
    for _ in range(10):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise UsageError(f"cannot open the run lock {path}: {e.strerror or e}",
                             "check the directory's permissions, or train into another --out") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise Busy(f"{run_dir} is in use by another charrnn train (pid {owner})",
                       "wait for it to finish or stop it, or train into another --out") from None
        except OSError:  # no flock on this file system (some network shares): go on unlocked
            os.close(fd)
            yield
            return
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except OSError:
            same = False
        if same:
            break
        os.close(fd)  # a run that just ended removed the file we locked: lock the new one
    else:
        raise UsageError(f"cannot lock {path}: it keeps being replaced", "try again")
    try:
        with contextlib.suppress(OSError):  # the pid is only informative
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)


class Busy(UsageError):
    """The run directory is locked by another process: nothing of it may be touched."""


def check_files(run_dir: Path) -> None:
    """Before a run changes anything in run_dir: every run file there (config.yaml, the logs, last.npz,
    best.npz) must be a regular file, the logs readable; UsageError otherwise, so a directory or a broken
    link in a log's place is one line before the start, not a traceback halfway through."""
    for name in RUN_FILES:
        p = run_dir / name
        if not os.path.lexists(p):
            continue
        try:
            st = p.stat()
            if name.endswith((".jsonl", ".txt")) and stat.S_ISREG(st.st_mode):
                os.close(os.open(p, os.O_RDONLY))
        except OSError as e:
            raise UsageError(f"cannot use {p}: {e.strerror or e}", "fix or move it away, then run again") from None
        if not stat.S_ISREG(st.st_mode):
            raise UsageError(f"{p} is not a regular file (charrnn keeps the run's {name} there)",
                             "move it away, then run again")


def refuse_corpus_here(run_dir: Path, files: list[Path]) -> None:
    """A run replaces or deletes its files as it goes (--force, a resume's trimmed logs, the cache): none
    of them may be a file of the corpus it reads (UsageError naming both)."""
    from ..userfiles import refuse_input
    for name in run_files(run_dir) + [f"{CACHE}/corpus.npy", f"{CACHE}/corpus.json"]:
        refuse_input(run_dir / name, {"a file of the corpus": files})


def remove_files(run_dir: Path, names: list[str]) -> None:
    """Delete an old run's files (--force) or a rewound run's later checkpoints: step files first, newest
    first, last.npz at the very end, so a kill in between leaves a directory that --resume RUN_DIR still
    continues consistently (from last.npz, or the newest step file left)."""
    for name in sorted(names, key=lambda n: (n == LAST, n == BEST, -(step_of(n) or 0))):
        (run_dir / name).unlink(missing_ok=True)


# -- checkpoint files: publishing, names, pruning, temp files -------------------------------------------

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
    tmp = temp_path(dst)
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
    fsync_dir(dst.parent)


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
    protected_names = {BEST, LAST} | {Path(n).name for n in (protect or ())}
    protected_inodes = {i for i in (_inode(run_dir / n) for n in (BEST, LAST)) if i is not None}

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
        pid = temp_owner(p.name)
        if pid is None or not p.is_file() or _pid_alive(pid):
            continue
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
            removed.append(p)
    return removed

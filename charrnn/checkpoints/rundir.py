"""The run directory's housekeeping: which files make a run, its lock, and what resuming changes.

charrnn.api.train decides the order (every check before anything is touched); this module holds the
pieces. A run directory holds config.yaml, metrics.jsonl, samples.txt, step{N}[_val...].npz, last.npz,
best.npz, cache/ and .lock.
"""
import contextlib
import json
import os
import re
import stat
from pathlib import Path

from . import npz as checkpoint, store
from ..errors import UsageError

RUN_FILES = ("config.yaml", "metrics.jsonl", "samples.txt", "last.npz", "best.npz")


def step_files(run_dir: Path) -> list[tuple[int, str]]:
    """(step, name) of run_dir's step checkpoints, in step order (names as checkpoint_name writes them)."""
    found = [(checkpoint.step_of(p.name), p.name) for p in run_dir.glob("step*.npz") if p.is_file()]
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
        if not any(n in ("last.npz", "best.npz") or n.startswith("step") for n in present):
            raise UsageError(f"{run_dir} holds a run that never wrote a checkpoint ({present[0]})",
                             "use --force to start over there, or --out for a new directory")
        raise UsageError(f"{run_dir} already holds a run ({present[0]})",
                         f"use --resume {run_dir} to continue it, --force to start over, or --out for a new directory")
    return present


def saved_step(path: Path) -> int:
    """The step a checkpoint's meta records, -1 if unreadable (housekeeping only; loading verifies)."""
    return _meta_step(checkpoint.read_meta(path))


def _meta_step(meta: dict | None) -> int:
    progress = (meta or {}).get("progress")
    n = progress.get("step") if isinstance(progress, dict) else None
    return n if isinstance(n, int) and not isinstance(n, bool) else -1


def later_checkpoints(run_dir: Path, step: int, named=("last.npz", "best.npz")) -> list[str]:
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
    import shutil
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
    path = run_dir / ".lock"
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


def was_best(loaded: store.Loaded) -> bool:
    """Whether the checkpoint was evaluated and its loss was the run's best when it was written."""
    losses = loaded.meta.get("losses") or {}
    val = losses.get("val_loss")
    return val is not None and val == losses.get("best_val_loss")


def republish(loaded: store.Loaded, no_val: bool, run_dir: Path) -> str | None:
    """After resuming from `loaded`, make last.npz and best.npz agree with it. Returns a warning or None.

    last.npz becomes the resumed checkpoint when it holds another step (a rewind removed the later one,
    or a kill left a step file newer than it). best.npz becomes the resumed checkpoint when that was the
    run's best (a kill between writing last.npz and best.npz would otherwise leave an older best.npz for
    good); when a rewind removed best.npz, the surviving step file holding the best loss up to the
    resumed step takes its place."""
    here = loaded.path.parent.resolve() == run_dir.resolve()
    step = loaded.meta["progress"]["step"]
    if here and saved_step(run_dir / "last.npz") != step:
        checkpoint.publish(loaded.path, run_dir / "last.npz")
    best = (loaded.meta.get("losses") or {}).get("best_val_loss")
    if no_val or was_best(loaded):
        checkpoint.publish(loaded.path, run_dir / "best.npz")
        return None
    if (run_dir / "best.npz").exists() or best is None:
        return None
    # best.npz is missing: a rewind deleted a later one, or the run continues in a new directory. The
    # best up to the resumed step is a checkpoint evaluated at that loss, here or where we came from.
    source = loaded.path.parent
    candidates = [source / "best.npz"] + [d / n for d in dict.fromkeys([run_dir, source])
                                          for _, n in reversed(step_files(d))]
    for c in candidates:
        meta = checkpoint.read_meta(c) if c.is_file() else None
        if meta and 0 <= _meta_step(meta) <= step and (meta.get("losses") or {}).get("val_loss") == best:
            checkpoint.publish(c, run_dir / "best.npz")
            return None
    return (f"the checkpoint with the best validation loss up to step {step} ({best:.4f}) is gone (pruned); "
            "best.npz is written again at the next improvement")


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
    for name in run_files(run_dir) + ["cache/corpus.npy", "cache/corpus.json"]:
        refuse_input(run_dir / name, {"a file of the corpus": files})


def check_same_run(run_dir: Path, loaded: store.Loaded | None) -> None:
    """Resuming in run_dir from `loaded`: the checkpoint must be this run's, by the model the run's
    config.yaml records (a GRU's last.npz dropped into an LSTM run would otherwise resume as a GRU and
    rewrite config.yaml). UsageError when they disagree or config.yaml cannot be read."""
    from ..config import load_yaml
    path = run_dir / "config.yaml"
    if loaded is None or loaded.path.parent.resolve() != run_dir.resolve() or not path.is_file():
        return
    said = load_yaml(path).get("model")
    model = loaded.meta["model"]
    for key in ("cell", "hidden_size", "num_layers", "embedding_size"):
        if isinstance(said, dict) and key in said and said[key] != model.get(key, 0):
            raise UsageError(f"{loaded.path} is not this run's checkpoint: its model.{key} is {model.get(key, 0)!r}, "
                             f"{path} says {said[key]!r}",
                             "resume the run from its own checkpoint, or continue this one elsewhere with --out")


def trim_logs(run_dir: Path, step: int) -> None:
    """On resume, drop log lines written after the checkpoint (they will be produced again), and the
    record of how the earlier session ended (this session writes its own). A log with
    nothing to drop is left as it is; one that cannot be rewritten (a full disk) stays whole, and the
    resume stops with one line."""
    for name, cut in (("metrics.jsonl", _metrics_cut), ("samples.txt", _samples_cut)):
        path = run_dir / name
        if not path.exists():
            continue
        try:
            keep = cut(path, step)
            if keep is not None:
                checkpoint.atomic_write(path, lambda f: _copy_ranges(path, keep, f))
        except OSError as e:
            raise UsageError(f"cannot trim {path} back to step {step}: {e.strerror or e}",
                             "the file is unchanged; free disk space, then resume again") from None


def _metrics_cut(path: Path, step: int) -> list[tuple[int, int]] | None:
    """Byte ranges of the metrics.jsonl lines to keep (steps up to `step`), None if that is all of them.
    Bytes, not text: a line that is not UTF-8 JSON is dropped like any unreadable line."""
    keep, pos, dropped = [], 0, False
    with open(path, "rb") as f:
        for line in f:
            try:
                rec = json.loads(line)
                ok = rec["step"] <= step and "event" not in rec  # {"event": "end"}: an earlier session's end
            except (ValueError, KeyError, TypeError):
                ok = False
            if ok:
                keep.append((pos, len(line)))
            dropped |= not ok
            pos += len(line)
    return keep if dropped else None


_SAMPLE_HEADER = re.compile(rb"=== step (\d+) ===\r?\n?")


def _samples_cut(path: Path, step: int) -> list[tuple[int, int]] | None:
    """The byte range of samples.txt before the first sample of a step after `step`; None if there is none."""
    pos = 0
    with open(path, "rb") as f:
        for line in f:
            m = _SAMPLE_HEADER.fullmatch(line)
            if m and int(m.group(1)) > step:
                return [(0, pos)]
            pos += len(line)
    return None


def _copy_ranges(path: Path, ranges: list[tuple[int, int]], out) -> None:
    with open(path, "rb") as f:
        for start, n in ranges:
            f.seek(start)
            chunk = f.read(n)
            out.write(chunk if not chunk or chunk.endswith(b"\n") else chunk + b"\n")  # a last line cut short

"""What continuing a run changes in its directory: the checkpoint must be this run's (check_same_run),
logs written after the checkpoint are trimmed (trim_logs), last.npz and best.npz are made to agree with
the checkpoint continued (republish), and a finished run gets its one repair (repair_best). The file
names and the rest of the directory's lifecycle are rundir.py's; training/run.py decides the order.
"""
import json
import re
from pathlib import Path

from ..atomic import atomic_write
from ..errors import UsageError
from . import meta as M
from . import npz, rundir


def republish(loaded, no_val: bool, run_dir: Path) -> str | None:
    """After resuming from `loaded`, make last.npz and best.npz agree with it. Returns a warning or None.

    last.npz becomes the resumed checkpoint when it holds another step (a rewind removed the later one,
    or a kill left a step file newer than it). best.npz becomes the resumed checkpoint when that was the
    run's best (a kill between writing last.npz and best.npz would otherwise leave an older best.npz for
    good); when a rewind removed best.npz, the surviving step file holding the best loss up to the
    resumed step takes its place."""
    here = loaded.path.parent.resolve() == run_dir.resolve()
    step = M.step(loaded.meta)
    if here and rundir.saved_step(rundir.last(run_dir)) != step:
        rundir.publish(loaded.path, rundir.last(run_dir))
    best_loss = M.losses(loaded.meta).get("best_val_loss")
    if no_val or M.was_best(loaded.meta):
        rundir.publish(loaded.path, rundir.best(run_dir))
        return None
    if rundir.best(run_dir).exists() or best_loss is None:
        return None
    # best.npz is missing: a rewind deleted a later one, or the run continues in a new directory. The
    # best up to the resumed step is a checkpoint evaluated at that loss, here or where we came from.
    source = loaded.path.parent
    candidates = [rundir.best(source)] + [d / n for d in dict.fromkeys([run_dir, source])
                                          for _, n in reversed(rundir.step_files(d))]
    for c in candidates:
        meta = npz.read_meta(c) if c.is_file() else None
        if meta and 0 <= M.step(meta) <= step and M.losses(meta).get("val_loss") == best_loss:
            rundir.publish(c, rundir.best(run_dir))
            return None
    return (f"the checkpoint with the best validation loss up to step {step} ({best_loss:.4f}) is gone (pruned); "
            f"{rundir.BEST} is written again at the next improvement")


def check_same_run(run_dir: Path, loaded) -> None:
    """Resuming in run_dir from `loaded`: the checkpoint must be this run's, by the model the run's
    config.yaml records (a GRU's last.npz dropped into an LSTM run would otherwise resume as a GRU and
    rewrite config.yaml). UsageError when they disagree or config.yaml cannot be read."""
    from ..config import load_yaml
    path = rundir.config_path(run_dir)
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
    """On resume, drop log lines written after the checkpoint (they will be produced again). A log with
    nothing to drop is left as it is; one that cannot be rewritten (a full disk) stays whole, and the
    resume stops with one line."""
    for name, cut in ((rundir.METRICS, _metrics_cut), (rundir.SAMPLES, _samples_cut)):
        path = run_dir / name
        if not path.exists():
            continue
        try:
            keep = cut(path, step)
            if keep is not None:
                atomic_write(path, lambda f: _copy_ranges(path, keep, f))  # noqa: B023 (called at once)
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


def repair_best(loaded) -> Path:
    """A finished run being asked to resume: its best checkpoint, after the one repair there is (a kill
    between refreshing last.npz and best.npz leaves an older best.npz while last.npz was the best)."""
    b = rundir.best(loaded.path.parent)
    if loaded.path.name == rundir.LAST and M.was_best(loaded.meta) and rundir.saved_step(b) != M.step(loaded.meta):
        rundir.publish(loaded.path, b)
    return b if b.is_file() else loaded.path

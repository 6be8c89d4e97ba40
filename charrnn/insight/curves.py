"""Loss curves of runs (`charrnn plot`): reading metrics.jsonl, smoothing, the best checkpoint, the
overfitting hint, and a terminal chart that needs only rich. The PNG is drawn in figures.py.

Train loss is noisy per step, so it is smoothed (a debiased exponential moving average over the logged
points); validation loss is already an average over the whole validation split and is drawn as measured,
so a rise in it shows at once rather than a few evaluations late.
"""
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError


@dataclass
class Run:
    """One run's logged curves: train at every logged step, val at every evaluation."""

    name: str
    path: Path
    steps: list[int] = field(default_factory=list)
    times: list[float] = field(default_factory=list)      # elapsed_s, total across resumed sessions
    train: list[float] = field(default_factory=list)
    smooth: list[float] = field(default_factory=list)
    val_steps: list[int] = field(default_factory=list)
    val_times: list[float] = field(default_factory=list)
    val: list[float] = field(default_factory=list)
    skipped_lines: int = 0

    @property
    def best(self) -> tuple[int, float, float] | None:
        """(step, elapsed_s, val_loss) of the lowest validation loss: the evaluation best.npz keeps."""
        if not self.val:
            return None
        i = min(range(len(self.val)), key=self.val.__getitem__)  # the first of equal ones, as the trainer
        return self.val_steps[i], self.val_times[i], self.val[i]


def smooth(values: list[float], weight: float) -> list[float]:
    """Debiased exponential moving average (as TensorBoard draws it): the first points are not pulled
    towards zero. weight 0 returns the values unchanged."""
    out, avg, norm = [], 0.0, 0.0
    for v in values:
        avg = weight * avg + (1 - weight) * v
        norm = weight * norm + (1 - weight)
        out.append(avg / norm if norm else v)
    return out


def _number(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def read_run(run_dir: str | Path, weight: float = 0.6) -> Run:
    """A run directory's metrics.jsonl as curves. Lines that are not a complete JSON record (a kill can
    cut the last one short) are skipped and counted."""
    p = Path(run_dir)
    if not p.exists():
        raise UsageError(f"{p} does not exist", "pass a run directory written by charrnn train")
    if p.is_file() and p.suffix == ".npz":  # a checkpoint stands for its run, as in every other command
        p = p.parent
    metrics = p / "metrics.jsonl" if p.is_dir() else p
    if not metrics.is_file():
        raise UsageError(f"{p} holds no metrics.jsonl (is it a run directory?)",
                         "pass the directory charrnn train wrote, e.g. runs/tinyshakespeare")
    try:
        lines = metrics.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as e:
        raise UsageError(f"cannot read {metrics}: {e.strerror or e}", "check its permissions") from None
    run = Run(name=(p if p.is_dir() else p.parent).name or str(p), path=p)
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            run.skipped_lines += bool(line.strip())
            continue
        step = rec.get("step") if isinstance(rec, dict) else None
        t = _number(rec.get("elapsed_s")) if isinstance(rec, dict) else None
        if not isinstance(step, int) or isinstance(step, bool) or t is None:
            run.skipped_lines += 1
            continue
        if (loss := _number(rec.get("train_loss"))) is not None:
            run.steps.append(step)
            run.times.append(t)
            run.train.append(loss)
        if (val := _number(rec.get("val_loss"))) is not None:
            run.val_steps.append(step)
            run.val_times.append(t)
            run.val.append(val)
    if not run.steps and not run.val:
        raise UsageError(f"{metrics} has no logged steps yet", "plot again once training has logged a few steps")
    run.smooth = smooth(run.train, weight)
    return run


def overfitting(run: Run, margin: float = 0.01) -> str | None:
    """A hint when validation loss has risen since its best while the (smoothed) train loss kept
    falling: the model is learning the training text rather than the language. Needs two evaluations
    after the best one, so one noisy evaluation does not raise the alarm."""
    best = run.best
    if best is None or not run.steps:
        return None
    b_step, _, b_val = best
    after = [v for s, v in zip(run.val_steps, run.val) if s > b_step]
    if len(after) < 2 or after[-1] < b_val * (1 + margin):
        return None
    train_at_best = _at_step(run.steps, run.smooth, b_step)
    if not run.smooth[-1] < train_at_best:
        return None
    return (f"{run.name}: validation loss rose from {b_val:.3f} (step {b_step}) to {after[-1]:.3f} while the "
            f"training loss kept falling ({train_at_best:.3f} -> {run.smooth[-1]:.3f}): overfitting. "
            f"best.npz keeps step {b_step}; more --dropout, a smaller model or more text would help")


def _at_step(steps: list[int], values: list[float], step: int) -> float:
    """The value logged at the last step <= step (the first one if none)."""
    i = max((k for k, s in enumerate(steps) if s <= step), default=0)
    return values[i]


# -- terminal chart --------------------------------------------------------------------------------
COLORS = ["cyan", "magenta", "yellow", "green", "red", "blue"]


def terminal_chart(runs: list[Run], width: int = 80, height: int = 16, x: str = "step"):
    """A rich renderable: smoothed train (·) and val (o) loss of every run on one character grid,
    the best evaluation marked *, with y labels, an x range and a legend."""
    from rich.console import Group
    from rich.text import Text
    series = []
    for k, r in enumerate(runs):
        color = COLORS[k % len(COLORS)]
        tx = r.steps if x == "step" else r.times
        vx = r.val_steps if x == "step" else r.val_times
        series.append((tx, r.smooth, "·", color))
        series.append((vx, r.val, "o", f"bold {color}"))
    pts = [(a, b) for xs, ys, _, _ in series for a, b in zip(xs, ys)]
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
    if y1 - y0 < 1e-9:
        y0, y1 = y0 - 0.5, y1 + 0.5
    label_w = 7
    cols = max(20, width - label_w - 1)
    grid: list[list[tuple[str, str] | None]] = [[None] * cols for _ in range(height)]

    def cell(a, b):
        c = 0 if x1 == x0 else round((a - x0) / (x1 - x0) * (cols - 1))
        r = round((y1 - b) / (y1 - y0) * (height - 1))
        return r, c

    for xs, ys, glyph, style in series:
        for a, b in zip(xs, ys):
            r, c = cell(a, b)
            grid[r][c] = (glyph, style)
    for k, run in enumerate(runs):
        if run.best:
            s, t, v = run.best
            r, c = cell(s if x == "step" else t, v)
            grid[r][c] = ("*", f"bold {COLORS[k % len(COLORS)]} reverse")
    lines = []
    for r, row in enumerate(grid):
        y = y1 - (y1 - y0) * r / (height - 1)
        label = f"{y:{label_w - 1}.3f} " if r in (0, height // 2, height - 1) else " " * label_w
        line = Text(label + "│", style="dim")
        for item in row:
            line.append(" ") if item is None else line.append(item[0], style=item[1])
        lines.append(line)
    unit = "step" if x == "step" else "seconds"
    fmt = (lambda v: f"{v:,.0f}") if x == "step" else (lambda v: f"{v:,.1f}")
    left, right = fmt(x0), fmt(x1)
    lines.append(Text(" " * label_w + "└" + "─" * cols, style="dim"))
    lines.append(Text(" " * (label_w + 1) + left + f" {unit} ".center(max(1, cols - len(left) - len(right)))
                      + right, style="dim"))
    legend = Text("loss (nats/char):  ")
    for k, r in enumerate(runs):
        color = COLORS[k % len(COLORS)]
        legend.append(f"{r.name}: ", style=f"bold {color}")
        legend.append("· train (smoothed)  o val  ", style=color)
    legend.append("* best val", style="bold")
    lines.append(legend)
    return Group(*lines)


def summary_rows(runs: list[Run]) -> list[tuple[str, str, str, str, str]]:
    """(run, steps, last train (smoothed), best val @ step, last val) per run, for the table."""
    rows = []
    for r in runs:
        best = r.best
        rows.append((r.name, f"{max(r.steps + r.val_steps):,}",
                     f"{r.smooth[-1]:.4f}" if r.smooth else "-",
                     f"{best[2]:.4f} @ {best[0]:,}" if best else "-",
                     f"{r.val[-1]:.4f}" if r.val else "-"))
    return rows

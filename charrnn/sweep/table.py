"""The trials of a study as a rich table (live during a sweep, once for --status), and a one-line
summary. Reads only the storage, so it works from any machine that reaches it."""
import datetime
import math

from rich import box
from rich.table import Table
from rich.text import Text

STYLE = {"COMPLETE": "green", "PRUNED": "yellow", "RUNNING": "cyan", "WAITING": "blue", "FAIL": "red"}
LABEL = {"COMPLETE": "complete", "PRUNED": "pruned", "RUNNING": "running", "WAITING": "queued", "FAIL": "failed"}


def fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def best_val(t) -> float | None:
    """A finished trial's value, else the lowest validation loss it has reported so far."""
    if t.value is not None:
        return t.value
    vals = [v for v in t.intermediate_values.values() if v is not None and math.isfinite(v)]
    return min(vals) if vals else None


def _seconds(t) -> float | None:
    if t.user_attrs.get("elapsed_s") is not None and t.state.name != "RUNNING":
        return float(t.user_attrs["elapsed_s"])  # training time of the run (a resumed run's total)
    if t.datetime_start is None:
        return None
    end = t.datetime_complete or datetime.datetime.now()
    return max(0.0, (end - t.datetime_start).total_seconds())


def retried_as(trials) -> dict[int, int]:
    """failed trial number -> the number of the retry that continues it."""
    return {t.system_attrs["retry_history"][-1]: t.number for t in trials if t.system_attrs.get("retry_history")}


def state_text(t, retried: dict[int, int]) -> Text:
    name = t.state.name
    label = LABEL.get(name, name.lower())
    if name == "FAIL":
        label = "stopped" if t.user_attrs.get("interrupted") else label
        if t.number in retried:
            label += f" → #{retried[t.number]}"
        elif t.user_attrs.get("error"):
            label += ": " + str(t.user_attrs["error"])[:60]
    return Text(label, style=STYLE.get(name, ""))


def render(trials, title: str, limit: int | None = None) -> Table:
    """The table; with `limit`, only the newest rows (a live view must fit the terminal)."""
    keys = []
    for t in trials:
        keys += [k for k in t.params if k not in keys]
    retried = retried_as(trials)
    best = min((t for t in trials if t.state.name == "COMPLETE" and t.value is not None),
               key=lambda t: t.value, default=None)
    short = [k.split(".")[1] for k in keys]
    heads = [h if short.count(h) == 1 else k for h, k in zip(short, keys)]  # optim.lr -> lr
    table = Table(title=Text(title), title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1), collapse_padding=True,
                  pad_edge=False)
    for col in ["#", "state", *heads, "val", "step", "time"]:
        table.add_column(col, justify="left" if col == "state" else "right", no_wrap=col != "state",
                         min_width=12 if col == "state" else None)
    shown = trials[-limit:] if limit and len(trials) > limit else trials
    for t in shown:
        bv, secs = best_val(t), _seconds(t)
        row = [str(t.number), state_text(t, retried),
               *[fmt(t.params[k]) if k in t.params else "-" for k in keys],
               "-" if bv is None else f"{bv:.4f}", fmt(t.user_attrs.get("step", "-")),
               "-" if secs is None else f"{secs:.1f}s" if secs < 10 else f"{secs:.0f}s"]
        table.add_row(*row, style="bold" if best is not None and t.number == best.number else None)
    if len(shown) < len(trials):
        table.caption = f"({len(trials) - len(shown)} earlier trials not shown)"
    return table


def summary(trials) -> str:
    counts: dict[str, int] = {}
    for t in trials:
        label = LABEL.get(t.state.name, t.state.name.lower())
        label = "stopped" if label == "failed" and t.user_attrs.get("interrupted") else label
        counts[label] = counts.get(label, 0) + 1
    parts = [f"{n} {label}" for label, n in counts.items()]
    done = [t for t in trials if t.state.name == "COMPLETE" and t.value is not None]
    if done:
        b = min(done, key=lambda t: t.value)
        parts.append(f"best #{b.number} val {b.value:.4f}")
    return ", ".join(parts) if parts else "no trials yet"

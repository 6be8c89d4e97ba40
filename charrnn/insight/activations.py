"""`charrnn activations` and `charrnn eval --per-char`: what single hidden/cell units do character by
character (Karpathy's cell pictures), and how surprised the model is by each character.

Surprisal comes from the real model (Model.logits, chunked, state carried); the h and c values come from
inside.forward (float64, same weights). Units are picked by index or as the ones most correlated with
simple features of the text: inside double quotes, position in the line, bracket depth.
"""
import math
from dataclasses import dataclass

import numpy as np

from . import forward64 as inside
from ..errors import UsageError
from ..engine.model import Model

QUOTES = {'"', "\u201c", "\u201d"}
OPEN, CLOSE = "([{", ")]}"


def surprisal(model: Model, ids: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """-log p(ids[t] | ids[:t]) in nats for t = 1..N-1 (N-1 values), one stream from a zero state,
    exactly what `charrnn eval` sums."""
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    out = np.empty(max(ids.size - 1, 0))
    state = model.zero_state(1)
    for i in range(0, ids.size - 1, chunk):
        T = min(chunk, ids.size - 1 - i)
        logits, state = model.logits(ids[i:i + T].reshape(1, T), state)
        logp = inside.log_softmax(logits[0].astype(np.float64))
        out[i:i + T] = -logp[np.arange(T), ids[i + 1:i + T + 1]]
    return out


def features(text: str) -> dict[str, np.ndarray]:
    """Per character, after reading it: inside double quotes (0/1), column in its line, bracket depth."""
    quoted, column, depth = np.zeros(len(text)), np.zeros(len(text)), np.zeros(len(text))
    q, col, d = 0, 0, 0
    for t, ch in enumerate(text):
        if ch in QUOTES:
            q = 1 - q
        col = 0 if ch == "\n" else col + 1
        d = d + 1 if ch in OPEN else max(d - 1, 0) if ch in CLOSE else d
        quoted[t], column[t], depth[t] = q, col, d
    return {"inside quotes": quoted, "position in line": column, "bracket depth": depth}


@dataclass
class Unit:
    layer: int
    kind: str          # "h" or "c"
    index: int
    values: np.ndarray  # (N,) activation after each character
    note: str = ""     # e.g. "r = +0.81 with position in line"

    @property
    def name(self) -> str:
        return f"layer {self.layer} {self.kind}[{self.index}]"


def _corr(a: np.ndarray, feats: np.ndarray) -> np.ndarray:
    """Pearson r of one feature a (N,) with every column of feats (N, U); 0 where either is constant."""
    a = a - a.mean()
    f = feats - feats.mean(axis=0)
    den = np.sqrt((a @ a) * (f * f).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (a @ f) / den
    return np.where(den > 1e-12, r, 0.0)


def pick_units(ins: inside.Inside, text: str, units: list[int] | None, top: int | None,
               layer: int | None, kind: str | None) -> list[Unit]:
    """The units to show: by index (in `layer`, default the last, of `kind`, default c for an LSTM and
    h otherwise), or the `top` ones most correlated (|r|) with any feature of the text."""
    L, H = len(ins.h), ins.h[0].shape[2]
    if layer is not None and not 0 <= layer < L:
        raise UsageError(f"--layer {layer} is out of range: the model has {L} layer(s), 0..{L - 1}", "pass a valid layer")
    has_c = ins.c[0] is not None
    if kind == "c" and not has_c:
        raise UsageError("--kind c needs an LSTM (only it has a cell state)", "use --kind h")
    kinds = [kind] if kind else (["h", "c"] if has_c else ["h"])
    layers = [layer] if layer is not None else list(range(L))
    get = lambda k, kd: (ins.c[k] if kd == "c" else ins.h[k])[:, 0, :]  # noqa: E731  (N, H)
    if units:
        bad = [u for u in units if not 0 <= u < H]
        if bad:
            raise UsageError(f"unit {bad[0]} is out of range: layers have {H} units, 0..{H - 1}", "pass valid --units")
        k = layers[-1]
        kd = kind or ("c" if has_c else "h")
        return [Unit(k, kd, u, get(k, kd)[:, u]) for u in units]
    feats = features(text)
    scored = []
    for k in layers:
        for kd in kinds:
            acts = get(k, kd)
            for fname, f in feats.items():
                r = _corr(f, acts)
                for u in range(H):
                    scored.append((abs(r[u]), r[u], fname, k, kd, u))
    scored.sort(key=lambda s: -s[0])
    chosen, seen = [], set()
    for a, r, fname, k, kd, u in scored:
        if (k, kd, u) in seen or a == 0:
            continue
        seen.add((k, kd, u))
        chosen.append(Unit(k, kd, u, get(k, kd)[:, u], f"r = {r:+.2f} with {fname}"))
        if len(chosen) == top:
            break
    if not chosen:
        raise UsageError("no unit varies with the text's features (quotes, line position, brackets)",
                         "pass a longer text, or choose units with --units")
    return chosen


@dataclass
class Picture:
    """Everything the HTML, the PNG and the terminal view draw."""

    title: str
    text: str
    units: list[Unit]
    surprisal: np.ndarray  # (N,): NaN for the first character (nothing predicts it)


def compute(model: Model, vocab, text: str, units=None, top=None, layer=None, kind=None, title="") -> Picture:
    if units is None and top is None:
        top = 4
    ids = vocab.encode(text, unknown="skip")
    if ids.size < 2:
        raise UsageError(f"the text has {ids.size} character(s) the model knows; it needs at least 2",
                         "pass a longer text")
    text = vocab.decode(ids)
    ins = inside.forward(model.params, ids.reshape(1, -1))
    s = np.concatenate([[math.nan], surprisal(model, ids)])
    return Picture(title, text, pick_units(ins, text, units, top, layer, kind), s)


# -- colours -------------------------------------------------------------------------------------
LEVELS = 21  # colour steps: blue (-1) .. white (0) .. red (+1); surprisal white .. orange


def level(v: float, scale: float) -> int:
    """v in [-scale, scale] -> 0..LEVELS-1 (LEVELS // 2 is zero)."""
    if not math.isfinite(v) or scale <= 0:
        return LEVELS // 2
    x = max(-1.0, min(1.0, v / scale))
    return int(round((x + 1) / 2 * (LEVELS - 1)))


def diverging(i: int) -> str:
    """Hex colour of level i on the blue-white-red scale."""
    x = i / (LEVELS - 1) * 2 - 1
    lo, hi = (33, 102, 172), (178, 24, 43)
    end = hi if x > 0 else lo
    rgb = [round(255 + (e - 255) * abs(x)) for e in end]
    return "#%02x%02x%02x" % tuple(rgb)


def sequential(i: int) -> str:
    """Hex colour of level i on the white-orange scale (surprisal; level LEVELS//2 and below white)."""
    x = max(0.0, i / (LEVELS - 1) * 2 - 1)
    end = (230, 85, 13)
    return "#%02x%02x%02x" % tuple(round(255 + (e - 255) * x) for e in end)


def unit_scale(u: Unit) -> float:
    """h lives in [-1, 1]; a cell state can grow past that, so it is scaled by its largest |value|."""
    return 1.0 if u.kind == "h" else max(float(np.abs(u.values).max()), 1e-6)


def surprisal_scale(s: np.ndarray) -> float:
    """Colour full orange at the 98th percentile, so one shock does not wash the rest out."""
    finite = s[np.isfinite(s)]
    return max(float(np.percentile(finite, 98)), 1e-6) if finite.size else 1.0


def terminal_view(pic: Picture, max_chars: int = 400):
    """A rich renderable: each unit's row of characters on its activation colour, then surprisal."""
    from rich.console import Group
    from rich.text import Text
    n = min(len(pic.text), max_chars)
    blocks = []

    def row(values, scale, colour, label):
        t = Text(label + "\n", style="bold")
        for ch, v in zip(pic.text[:n], values[:n]):
            t.append("↵\n" if ch == "\n" else ch, style=f"#000000 on {colour(level(v, scale))}")
        return t

    for u in pic.units:
        blocks.append(row(u.values, unit_scale(u), diverging, f"{u.name}  {u.note}".rstrip()))
    s = np.nan_to_num(pic.surprisal, nan=0.0)
    blocks.append(row(np.clip(s, 0, None), surprisal_scale(pic.surprisal), sequential,
                      f"surprisal -log p (nats), mean {np.nanmean(pic.surprisal):.2f}"))
    if len(pic.text) > n:
        blocks.append(Text(f"(first {n} of {len(pic.text)} characters; the HTML has them all)", style="dim"))
    return Group(*blocks)


# -- the self-contained HTML page ---------------------------------------------------------------------
_CSS = """body{font-family:system-ui,sans-serif;margin:1.5em 2em;color:#222;background:#fff}
h1{font-size:1.3em}h2{font-size:1em;margin:1.4em 0 .3em}p.note{color:#555;margin:.2em 0}
.txt{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:14px;line-height:1.45;white-space:pre-wrap;
word-break:break-all;border:1px solid #ddd;padding:.5em;max-width:100ch}
.txt span{color:#000}.nl{color:#999!important}
.scale{display:inline-block;width:1.6em;height:1em;vertical-align:middle}"""


def html(pic: Picture) -> str:
    """One HTML page, no scripts and nothing fetched: colours are CSS classes (d0..d20 diverging,
    s0..s20 surprisal), each character's value is in its title (shown on hover)."""
    from html import escape
    css = [_CSS] + [f".d{i}{{background:{diverging(i)}}}.s{i}{{background:{sequential(i)}}}" for i in range(LEVELS)]

    def block(values, scale, prefix, fmt):
        spans = []
        for ch, v in zip(pic.text, values):
            shown = '<span class="nl">\u21b5</span>\n' if ch == "\n" else escape(ch)
            tip = "" if not math.isfinite(v) else f' title="{fmt(v)}"'
            spans.append(f'<span class="{prefix}{level(v, scale)}"{tip}>{shown}</span>')
        return '<div class="txt">' + "".join(spans) + "</div>"

    def legend(prefix, lo, hi):
        cells = "".join(f'<span class="scale {prefix}{i}"></span>' for i in range(LEVELS // 2 if prefix == "s" else 0, LEVELS))
        return f'<p class="note">{escape(lo)} {cells} {escape(hi)}</p>'

    parts = [f"<h1>{escape(pic.title)}</h1>",
             f'<p class="note">{len(pic.text):,} characters. Each character is coloured by the value after the '
             "model has read it; hover for the number.</p>"]
    for u in pic.units:
        sc = unit_scale(u)
        parts.append(f"<h2>{escape(u.name)}" + (f" &mdash; {escape(u.note)}" if u.note else "") + "</h2>")
        parts.append(legend("d", f"{-sc:.2f}", f"{sc:+.2f}"))
        parts.append(block(u.values, sc, "d", lambda v: f"{v:+.3f}"))
    ss = surprisal_scale(pic.surprisal)
    parts.append(f"<h2>surprisal &minus;log p(character) &mdash; mean {np.nanmean(pic.surprisal):.3f} nats</h2>")
    parts.append(legend("s", "0", f"{ss:.1f}+ nats"))
    parts.append(block(np.clip(pic.surprisal, 0, None), ss, "s", lambda v: f"{v:.2f} nats"))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{escape(pic.title)}</title><style>{''.join(css)}</style></head>\n<body>\n"
            + "\n".join(parts) + "\n</body></html>\n")

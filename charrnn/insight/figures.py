"""The PNG pictures of `charrnn plot`, `diagnose` and `activations`, drawn with matplotlib (the `plot`
extra). matplotlib's object API with the Agg canvas: no pyplot, no GUI backend, no global state.
Each function returns the PNG's bytes; the CLI writes them where the user asked.
"""
import io

import numpy as np

from ..errors import UsageError

DPI = 110


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def require(command: str) -> None:
    if not available():
        raise UsageError(f"charrnn {command} needs matplotlib for a PNG",
                         "pip install 'charrnn[plot]', or leave out -o for the terminal view")


def _figure(w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(w, h), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def loss_png(runs) -> bytes:
    """Train (raw, faint; smoothed, solid) and val (dots) loss against step and against elapsed time,
    one colour per run, the best evaluation ringed."""
    fig = _figure(12, 4.6)
    axes = fig.subplots(1, 2, sharey=True)
    colors = [f"C{k}" for k in range(10)]
    for ax, key in zip(axes, ("step", "time")):
        for k, r in enumerate(runs):
            c = colors[k % len(colors)]
            tx, vx = (r.steps, r.val_steps) if key == "step" else (r.times, r.val_times)
            if r.train:
                ax.plot(tx, r.train, color=c, alpha=0.18, lw=1)
                ax.plot(tx, r.smooth, color=c, lw=1.8, label=f"{r.name} train (smoothed)")
            if r.val:
                best = f" (best {r.best[2]:.3f} @ step {r.best[0]:,})"
                ax.plot(vx, r.val, color=c, lw=1.2, ls="--", marker="o", ms=3.5, label=f"{r.name} val{best}")
                s, t, v = r.best  # ringed: the evaluation best.npz keeps
                ax.plot([s if key == "step" else t], [v], marker="o", ms=13, mfc="none", mec=c, mew=2)
        ax.set_xlabel("step" if key == "step" else "training time (s)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("loss (nats/char)")
    axes[0].set_title("loss against step")
    axes[1].set_title("loss against time")
    axes[0].legend(fontsize=8, loc="upper right")
    return _png(fig)


def diagnose_png(rep) -> bytes:
    """Left: ||dL_T/dh_t|| against distance back from T (log scale), per layer, trained solid and init
    dashed. Middle: the same for the mean loss against t. Right: gate saturation bars."""
    fig = _figure(15, 4.8)
    a, b, c = fig.subplots(1, 3, width_ratios=[1.2, 1.2, 1])
    styles = {"trained": "-", "init": "--"}
    for k in range(rep.layers):
        for f in rep.flows:
            ls = styles.get(f.label, ":")
            d = np.arange(rep.seq_len)
            a.semilogy(d, np.maximum(f.last[k], 1e-30), ls=ls, color=f"C{k}", lw=1.8,
                       label=f"layer {k}, {f.label}")
            b.semilogy(d + 1, np.maximum(f.mean[k], 1e-30), ls=ls, color=f"C{k}", lw=1.8,
                       label=f"layer {k}, {f.label}")
    a.set_title("gradient of the last step's loss\n‖∂L_T/∂h_t‖ against distance T − t")
    a.set_xlabel("steps back from T")
    b.set_title("gradient of the mean loss\n‖∂L/∂h_t‖ against t")
    b.set_xlabel("t")
    for ax in (a, b):
        ax.grid(alpha=0.3, which="both")
    a.legend(fontsize=8, loc="upper right")  # the same lines in both panels: one legend
    a.set_ylabel("gradient norm (per stream, mean over streams)")
    width = 0.8 / max(len(rep.flows), 1)
    gates = [(k, g) for k in range(rep.layers) for g in rep.flows[0].saturation[k]]
    x = np.arange(len(gates))
    for j, f in enumerate(rep.flows):
        left = [f.saturation[k][g][0] * 100 for k, g in gates]
        right = [f.saturation[k][g][1] * 100 for k, g in gates]
        pos = x + (j - (len(rep.flows) - 1) / 2) * width
        c.bar(pos, left, width, color=f"C{j + 2}", alpha=0.55, hatch="//", edgecolor="white",
              label=f"{f.label}: left tail")
        c.bar(pos, right, width, bottom=left, color=f"C{j + 2}", label=f"{f.label}: right tail")
    labels = [f"L{k} {g}" for k, g in gates]
    c.set_xticks(x, labels, rotation=45 if len(labels) > 8 else 0, fontsize=8)
    c.set_ylabel("% of activations saturated")
    c.set_ylim(0, 100)
    title = "gate saturation\n(sigmoid < 0.1 or > 0.9, tanh beyond ±0.9)"
    if rep.flows[0].forget:
        title += "\nmean forget gate: " + ", ".join(
            f"{f.label} " + "/".join(f"{v:.2f}" for v in f.forget) for f in rep.flows)
    c.set_title(title, fontsize=10)
    c.legend(fontsize=8, loc="upper left")
    fig.suptitle(f"{rep.cell.upper()} {rep.layers}x{rep.hidden}: {rep.batch} streams x {rep.seq_len} steps "
                 f"of {rep.source}", fontsize=11)
    return _png(fig)


def activations_png(pic, max_lines: int = 8, max_cols: int = 90) -> bytes:
    """The first lines of the text, once per unit coloured by its activation and once by surprisal."""
    from matplotlib.colors import LinearSegmentedColormap, TwoSlopeNorm, Normalize
    from .activations import surprisal_scale, unit_scale
    lines, pos, start = [], [], 0
    for t, ch in enumerate(pic.text + "\n"):
        if ch == "\n" or t - start == max_cols:
            lines.append(pic.text[start:t])
            pos.append(start)
            start = t + 1 if ch == "\n" else t
        if len(lines) == max_lines:
            break
    rows = [(u.name + (f"  ({u.note})" if u.note else ""), u.values, "RdBu_r", unit_scale(u)) for u in pic.units]
    rows.append((f"surprisal −log p (nats), mean {np.nanmean(pic.surprisal):.2f}", pic.surprisal, "surprisal",
                 surprisal_scale(pic.surprisal)))
    width = max(len(s) for s in lines) if lines else 1
    fig = _figure(max(4.0, 0.075 * width + 0.6), 0.3 + len(rows) * (0.26 * len(lines) + 0.45))
    axes = fig.subplots(len(rows), 1, squeeze=False)[:, 0]
    oranges = LinearSegmentedColormap.from_list("surprisal", ["#ffffff", "#e6550d"])
    for ax, (label, values, cmap, scale) in zip(axes, rows):
        grid = np.full((len(lines), width), np.nan)
        for r, (line, p0) in enumerate(zip(lines, pos)):
            grid[r, :len(line)] = values[p0:p0 + len(line)]
        if cmap == "surprisal":
            ax.imshow(grid, cmap=oranges, norm=Normalize(0, scale, clip=True), aspect="auto", interpolation="nearest")
        else:
            ax.imshow(grid, cmap=cmap, norm=TwoSlopeNorm(0, -scale, scale), aspect="auto", interpolation="nearest")
        for r, line in enumerate(lines):
            for col, ch in enumerate(line):
                if not ch.isspace():
                    ax.text(col, r, ch, ha="center", va="center", family="monospace", fontsize=8.5)
        ax.set_title(label, loc="left", fontsize=9.5)
        ax.set_xticks([])
        ax.set_yticks([])
    return _png(fig)

"""The "see inside" commands: `charrnn plot`, `charrnn diagnose`, `charrnn activations`.

Thin click commands like those in cli.py (which imports this module to register them), kept apart so
cli.py stays short. PNGs need the `plot` extra (matplotlib); without it each command shows its terminal
view, and asking for a PNG explicitly (-o) is a one-line error naming the extra.
"""
from pathlib import Path

import click

from .commands import _console, _emit, _err_console, _escape, _stdout, friendly_errors, main


def _write(path, data, what: str, inputs: dict) -> None:
    """Write a picture or page where the user asked (atomically; a read-only file is refused, and so is
    one of the command's inputs: {what it is: path or paths})."""
    from ..errors import UsageError
    from ..userfiles import refuse_input
    from .outfile import write_user_file
    refuse_input(path, inputs)
    try:
        write_user_file(path, data)
    except OSError as e:
        raise UsageError(f"cannot write {path}: {e.strerror or e}", f"choose a writable {what} path") from None
    _err_console().print(f"wrote {_escape(str(path))}")


def _no_png_note(command: str) -> None:
    _err_console().print(f"note: no PNG without matplotlib (pip install 'charrnn[plot]'); "
                         f"charrnn {command} shows its terminal view", style="dim", markup=False)


def _check_png_path(path: str | None) -> None:
    from ..errors import UsageError
    if path and Path(path).suffix.lower() != ".png":
        raise UsageError(f"{path}: the picture is written as PNG", "give -o a name ending in .png")


@main.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path())
@click.option("--output", "-o", type=click.Path(), help="PNG to write (default: loss.png in the first RUN_DIR).")
@click.option("--terminal", is_flag=True, help="Draw the chart in the terminal, write no PNG.")
@click.option("--smooth", type=float, default=0.6, show_default=True,
              help="Smoothing of the train loss: 0 (none) up to 0.99 (exponential moving average weight).")
@click.option("--x", "x_axis", type=click.Choice(["step", "time"]), default="step", show_default=True,
              help="The terminal chart's x axis (the PNG shows both).")
@friendly_errors
def plot(runs, output, terminal, smooth, x_axis):
    """Loss curves of one or more runs (RUN_DIR: a directory charrnn train wrote, or a checkpoint in one):
    smoothed train loss and
    val loss against step and against time, overlaid, the best checkpoint marked. Warns when val loss
    rises while train loss falls (overfitting)."""
    from ..insight import curves, figures
    from ..errors import UsageError
    if not 0 <= smooth < 1:
        raise UsageError(f"--smooth must be in [0, 1), got {smooth}", "e.g. --smooth 0.6, or 0 for raw values")
    _check_png_path(output)
    _stdout()
    loaded = [curves.read_run(r, smooth) for r in runs]
    names = [r.name for r in loaded]
    for r in loaded:  # two runs called "run" in different places: tell them apart by their path
        if names.count(r.name) > 1:
            r.name = str(r.path)
    png = not terminal and (output is not None or figures.available())
    if output and not terminal:
        figures.require("plot")
    console = _console()
    if not png:
        _emit(lambda: console.print(curves.terminal_chart(loaded, width=min(console.width, 120), x=x_axis)))
    from rich.table import Table
    table = Table()
    for col in ("run", "steps", "train (smoothed)", "best val @ step", "last val"):
        table.add_column(col, justify="left" if col == "run" else "right")
    for row in curves.summary_rows(loaded):
        table.add_row(*map(_escape, row))
    _emit(lambda: console.print(table))
    for r in loaded:
        hint = curves.overfitting(r)
        if hint:
            _emit(lambda: console.print(f"[bold yellow]hint:[/] {_escape(hint)}"))
        if r.skipped_lines:
            _err_console().print(f"warning: {_escape(r.name)}: skipped {r.skipped_lines} unreadable line(s) "
                                 "of metrics.jsonl")
    if png:
        first = loaded[0].path  # a run directory (a checkpoint given stands for its run) or a metrics file
        target = output or (first if first.is_dir() else first.parent) / "loss.png"
        logs = [r.path / "metrics.jsonl" if r.path.is_dir() else r.path for r in loaded]
        _write(target, figures.loss_png(loaded), "-o", {"a run's metrics.jsonl": logs})
    elif not terminal:
        _no_png_note("plot")


@main.command()
@click.argument("checkpoint", required=False, type=click.Path())
@click.option("--model", "cell", type=click.Choice(["lstm", "gru", "rnn"]), help="Look at a fresh, untrained model of this cell instead.")
@click.option("--hidden", type=int, default=128, show_default=True, help="Fresh model: hidden size.")
@click.option("--layers", type=int, default=1, show_default=True, help="Fresh model: layers.")
@click.option("--init-scale", type=float, default=0.08, show_default=True, help="Fresh model: weights ~ U(-s, s).")
@click.option("--forget-bias", type=float, help="Fresh LSTM: forget-gate bias (default: drawn like every other bias, as train does).")
@click.option("--seed", type=int, default=1, show_default=True, help="Fresh model: the init seed.")
@click.option("--text", "text_file", type=click.Path(),
              help="Text file to take the batch from (default: the checkpoint's validation split; the bundled "
                   "tiny Shakespeare for a fresh model).")
@click.option("--seq-len", type=int, help="Steps to look back through (default: the run's seq_len, else 100).")
@click.option("--batch-size", type=int, default=16, show_default=True, help="Streams in the batch.")
@click.option("--output", "-o", type=click.Path(), help="PNG to write (default: diagnose.png beside the checkpoint, "
                                                         "or in the current directory for a fresh model).")
@click.option("--terminal", is_flag=True, help="Tables only, write no PNG.")
@click.option("--json", "as_json", is_flag=True, help="Print the numbers as JSON instead of tables.")
@click.option("--encoding", default="utf-8", show_default=True, help="--text file's encoding.")
@friendly_errors
def diagnose(checkpoint, cell, hidden, layers, init_scale, forget_bias, seed, text_file, seq_len, batch_size,
             output, terminal, as_json, encoding):
    """How far back the gradient reaches and how saturated the gates are, for CHECKPOINT's trained
    weights beside the untrained init they started from (or for a fresh model: --model rnn|lstm|gru).

    Prints ||dL_T/dh_t|| (the last step's loss) against distance and the mean loss's gradient, per
    layer, from the real backward kernels; the share of gate activations in their flat tails; the
    mean forget gate (LSTM)."""
    import numpy as np

    from ..insight import diagnose as dg
    from ..insight import figures
    from ..checkpoints import store
    from ..errors import UsageError
    from ..userfiles import read_text
    if (checkpoint is None) == (cell is None):
        raise UsageError("give exactly one of CHECKPOINT or --model rnn|lstm|gru",
                         "e.g. charrnn diagnose runs/x, or charrnn diagnose --model rnn --hidden 64")
    ctx = click.get_current_context()
    fresh_only = [n for n in ("hidden", "layers", "init_scale", "forget_bias", "seed")
                  if ctx.get_parameter_source(n) == click.core.ParameterSource.COMMANDLINE]
    if checkpoint is not None and fresh_only:
        raise UsageError(f"--{fresh_only[0].replace('_', '-')} describes a fresh model and cannot change a checkpoint",
                         "drop it, or use --model instead of CHECKPOINT")
    if min(hidden, layers) < 1 or init_scale <= 0:
        raise UsageError("--hidden and --layers must be >= 1 and --init-scale > 0", "pass positive sizes")
    _check_png_path(output)
    png = not terminal and not as_json and (output is not None or figures.available())
    if output and not terminal:
        figures.require("diagnose")
    _stdout()
    if checkpoint is not None:
        from ..config import Config
        from ..insight.evaluation import split_ids
        loaded = store.load(checkpoint)
        cfg = Config.from_saved(loaded.meta.get("config", {}), source=str(loaded.path))
        m = cfg.model
        init = dg.initial_model(loaded.model.shape, cfg.train.seed, m.init_scale,
                                init={"scheme": m.init, "forget_bias": m.forget_bias,
                                      "orthogonal_recurrent": m.orthogonal_recurrent})
        models, vocab = [("trained", loaded.model), ("init", init)], loaded.vocab
        T = seq_len or loaded.meta.get("batch", {}).get("seq_len") or 100
        if text_file:
            ids, source = vocab.encode(read_text(text_file, encoding), unknown="skip"), Path(text_file).name
        else:
            try:
                ids, source = split_ids(loaded, "val"), "the validation split"
            except UsageError as e:
                raise UsageError(e.message, "pass --text FILE to look at another text") from None
        default_png = loaded.path.parent / "diagnose.png"
    else:
        from ..api import BUNDLED_CORPUS
        from ..data.corpus import Vocab
        from ..engine.params import Shape
        path = text_file or BUNDLED_CORPUS
        text = read_text(path, encoding)
        if not text:
            raise UsageError(f"{path} is empty", "pass a text file with some text in it")
        vocab = Vocab(text)
        model = dg.initial_model(Shape(cell, vocab.size, hidden, layers), seed, init_scale, forget_bias)
        models, ids, source = [("init", model)], vocab.encode(text), Path(path).name
        T = seq_len or 100
        default_png = Path(f"diagnose-{cell}.png")
    rep = dg.diagnose(models, np.asarray(ids), batch_size, int(T), source)
    if as_json:
        import json
        _emit(lambda: click.echo(json.dumps(dg.to_dict(rep))))
        return
    console = _console()
    _emit(lambda: [console.print(t) for t in dg.tables(rep)])
    if png:
        _write(output or default_png, figures.diagnose_png(rep), "-o",
               {"the checkpoint being diagnosed": checkpoint and loaded.path, "the --text file": text_file})
    elif not terminal:
        _no_png_note("diagnose")


@main.command()
@click.argument("checkpoint", type=click.Path())
@click.argument("file", required=False, type=click.Path())
@click.option("--text", help="Look at this text instead of a FILE.")
@click.option("--units", help="Unit indices to show, e.g. 3,17 (in --layer, default the last).")
@click.option("--top", type=int, help="Show the K units most correlated with inside-quotes, position in the "
                                      "line or bracket depth (default 4 when --units is not given).")
@click.option("--layer", type=int, help="Only this layer (0-based).")
@click.option("--kind", type=click.Choice(["h", "c"]), help="Hidden state h or (LSTM) cell state c.")
@click.option("--max-chars", type=int, default=3000, show_default=True, help="Look at the first N characters.")
@click.option("--output", "-o", type=click.Path(), help="HTML page to write (default: activations.html beside "
                                                         "the checkpoint); the PNG goes beside it.")
@click.option("--terminal", is_flag=True, help="Show the units in the terminal, write no files.")
@click.option("--unknown", type=click.Choice(["error", "skip"]), default="error", show_default=True,
              help="Characters the model has never seen: refuse, or drop them.")
@click.option("--encoding", default="utf-8", show_default=True, help="FILE's text encoding.")
@friendly_errors
def activations(checkpoint, file, text, units, top, layer, kind, max_chars, output, terminal, unknown, encoding):
    """Per-character heatmaps of chosen hidden/cell units of CHECKPOINT over FILE (or --text), and the
    model's surprisal (-log p) at each character: a self-contained HTML page and a PNG."""
    from ..insight import activations as act
    from ..insight import figures
    from ..checkpoints import store
    from ..errors import UsageError
    from ..userfiles import read_text
    if (file is None) == (text is None):
        raise UsageError("give exactly one of FILE or --text", 'e.g. charrnn activations runs/x my.txt, or --text "ROMEO:"')
    if top is not None and top < 1:
        raise UsageError(f"--top must be >= 1, got {top}", "e.g. --top 4")
    if max_chars < 2:
        raise UsageError(f"--max-chars must be >= 2, got {max_chars}", "e.g. --max-chars 2000")
    try:
        unit_list = [int(u) for u in units.split(",")] if units else None
    except ValueError:
        raise UsageError(f"--units must be comma-separated integers, got {units!r}", "e.g. --units 3,17") from None
    if unit_list is not None and top is not None:
        raise UsageError("give --units or --top, not both", "--units picks by index, --top by correlation")
    if output and Path(output).suffix.lower() not in (".html", ".htm"):
        raise UsageError(f"{output}: the page is written as HTML", "give -o a name ending in .html")
    _stdout()
    loaded = store.load(checkpoint)
    body = text if file is None else read_text(file, encoding)
    body = body[:max_chars]
    missing = loaded.vocab.unknown_chars(body)
    if missing and unknown != "skip":
        shown = ", ".join(repr(c) for c in missing[:10])
        raise UsageError(f"the text holds {len(missing)} character(s) the model has never seen: {shown}",
                         "pass --unknown skip to drop them")
    s = loaded.model.shape
    title = f"{s.cell.upper()} {s.num_layers}x{s.hidden_size} ({loaded.path}) reading " + (
        Path(file).name if file else "the given text")
    pic = act.compute(loaded.model, loaded.vocab, body, unit_list, top, layer, kind, title)
    console = _console()
    if terminal:
        _emit(lambda: console.print(act.terminal_view(pic)))
        return
    for u in pic.units:
        _emit(lambda: console.print(f"{_escape(u.name)}  {_escape(u.note)}".rstrip()))
    page = Path(output) if output else loaded.path.parent / "activations.html"
    inputs = {"the checkpoint being read": loaded.path, "the text being read": file}
    from ..userfiles import refuse_input
    refuse_input(page.with_suffix(".png"), inputs)  # before the page: neither is written over an input
    _write(page, act.html(pic), "-o", inputs)
    if figures.available():
        _write(page.with_suffix(".png"), figures.activations_png(pic), "-o", inputs)
    else:
        _err_console().print("note: no PNG without matplotlib (pip install 'charrnn[plot]'); the HTML has it all",
                             style="dim", markup=False)


def write_per_char(loaded, file, which, encoding, errors, unknown, path) -> None:
    """`charrnn eval --per-char FILE.jsonl`: one line per predicted character (all but the first):
    {"pos": index in the evaluated text, "char": the character, "loss": -log p in nats}. The losses
    sum to what eval reports times the number of predictions."""
    import json

    from ..insight.activations import surprisal
    from ..insight.evaluation import split_ids
    from ..userfiles import read_text
    if file:
        ids = loaded.vocab.encode(read_text(file, encoding, errors), unknown="skip")  # eval refused unknowns
    else:
        ids = split_ids(loaded, which)
    chars = loaded.vocab.decode(ids)
    lines = [json.dumps({"pos": t + 1, "char": chars[t + 1], "loss": float(v)}, ensure_ascii=False)
             for t, v in enumerate(surprisal(loaded.model, ids))]
    _write(path, "\n".join(lines) + "\n", "--per-char", {"the checkpoint being evaluated": loaded.path,
                                                          "the text being evaluated": file})

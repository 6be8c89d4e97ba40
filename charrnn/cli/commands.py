"""The `charrnn` commands that train and use models: train, sample, eval, info, export, sweep. Thin click
commands over the Python API; see.py holds the commands that look inside (plot, diagnose, activations).
"""
import sys

import click

from .common import _console, _emit, _err_console, _escape, _stdout, friendly_errors, main, write_file

# Direct options for the common config keys: option name -> dotted config key.
TRAIN_OPTIONS = {
    "model": "model.cell", "hidden": "model.hidden_size", "layers": "model.num_layers",
    "dropout": "model.dropout", "embedding": "model.embedding_size",
    "seq_len": "train.seq_len", "batch_size": "train.batch_size", "lr": "optim.lr",
    "optimizer": "optim.optimizer", "grad_clip": "optim.grad_clip", "max_steps": "train.max_steps",
    "max_epochs": "train.max_epochs", "max_time": "train.max_time", "eval_every": "train.eval_every",
    "sample_every": "train.sample_every", "sample_length": "train.sample_length",
    "temperature": "train.temperature", "seed": "train.seed", "checkpoint_every": "train.checkpoint_every",
    "keep_last": "train.keep_last", "patience": "train.patience", "glob": "data.glob",
}



@main.command()
@click.argument("corpus", nargs=-1, type=click.Path(dir_okay=True))
@click.option("--config", "-c", "config_file", metavar="FILE", help="YAML config file or a bundled name (tiny, default, shakespeare, gru).")
@click.option("--out", "-o", metavar="DIR", help="Run directory (default: runs/<corpus stem>).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override any config key, e.g. --set optim.lr=3e-3 (repeatable).")
@click.option("--resume", metavar="RUN_DIR|CHECKPOINT", help="Continue a run exactly where its last checkpoint left off.")
@click.option("--init-from", metavar="CHECKPOINT", help="Fine-tune: a new run starting from this checkpoint's weights and vocabulary.")
@click.option("--extend-vocab", is_flag=True, help="Fine-tuning: add the corpus's new characters to the vocabulary.")
@click.option("--force", is_flag=True, help="Start over in a run directory that already holds a run.")
@click.option("--model", type=click.Choice(["lstm", "gru", "rnn"]), help="Cell type.")
@click.option("--hidden", type=int, help="Hidden size per layer.")
@click.option("--layers", type=int, help="Number of stacked layers.")
@click.option("--dropout", type=float, help="Dropout between layers and before the decoder.")
@click.option("--embedding", type=int, help="Embedding size (0 = one-hot input).")
@click.option("--seq-len", type=int, help="Time steps per chunk (truncated BPTT length).")
@click.option("--batch-size", type=int, help="Number of parallel streams.")
@click.option("--lr", type=float, help="Learning rate.")
@click.option("--optimizer", type=click.Choice(["adam", "rmsprop", "adagrad", "sgd"]), help="Optimizer.")
@click.option("--grad-clip", type=float, help="Clip gradients to this global norm (0 = off).")
@click.option("--max-steps", type=int, help="Stop after this many steps (0 = no limit).")
@click.option("--max-epochs", type=int, help="Stop after this many epochs (0 = no limit; default: 20 unless --max-steps or --max-time is given).")
@click.option("--max-time", metavar="DURATION", help="Stop after this long (counted from the command's start), e.g. 600, 10m, 1.5h.")
@click.option("--eval-every", type=int, help="Validate every N steps (0 = never).")
@click.option("--sample-every", type=int, help="Show a sample every N steps (0 = never).")
@click.option("--sample-length", type=int, help="Characters per sample shown during training.")
@click.option("--temperature", type=float, help="Temperature of the samples shown during training.")
@click.option("--seed", type=int, help="The one seed for init, data order, dropout and samples.")
@click.option("--checkpoint-every", type=int, help="Write a checkpoint every N steps.")
@click.option("--keep-last", type=int, help="Keep the newest N step checkpoints (0 = all).")
@click.option("--patience", type=int, help="Early stopping: stop after N evaluations without a better val loss (0 = off).")
@click.option("--glob", metavar="PATTERN", help="A directory corpus reads only files matching this, e.g. '*.py'.")
@click.option("--separator", metavar="TEXT", help=r"Put between the files of a corpus (default a blank line, '\n\n').")
@click.option("--encoding", help="Corpus text encoding (default utf-8).")
@click.option("--errors", type=click.Choice(["strict", "replace"]),
              help="On undecodable bytes (and, fine-tuning, characters the model does not know): stop (strict) or replace.")
@click.option("--plain", is_flag=True, help="Plain log lines instead of the live progress bar.")
@click.option("--threads", type=click.IntRange(min=1), metavar="N",
              help="Threads to train on (default: every core this process may use, capped by CHARRNN_THREADS). "
                   "The numbers do not depend on it.")
@friendly_errors
def train(corpus, config_file, out, sets, resume, init_from, extend_vocab, force, encoding, errors, plain,
          separator, threads, **opts):
    """Train a model on CORPUS: text files and directories (read recursively, in sorted order, joined by
    --separator); default: the bundled tiny Shakespeare.

    Settings come from defaults < --config < --set < the options below. The run directory gets
    config.yaml, metrics.jsonl, samples.txt and checkpoints (step*_val*.npz, best.npz, last.npz).
    """
    import signal
    import threading
    import time

    started = time.perf_counter()  # before the heavy imports: max_time counts what the user waits for
    from ..api import train as api_train
    # Outside the trainer's own handler (before training starts, or between its checkpoint-and-stop
    # and process exit) a SIGTERM still ends the command with 143 and no traceback; files are only
    # ever replaced atomically, so stopping anywhere is safe.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
    options = {TRAIN_OPTIONS[k]: v for k, v in opts.items() if v is not None}
    if threads is not None:
        from ..engine.threads import set_threads
        set_threads(threads)
    if separator is not None:
        from ..data.sources import decode_escapes
        options["data.separator"] = decode_escapes(separator)
    best = api_train(list(corpus) or None, config_file, out, sets=sets, options=options, resume=resume,
                     force=force, live=False if plain else None, encoding=encoding, errors=errors,
                     init_from=init_from, extend_vocab=extend_vocab, started=started)
    if sys.stdout is not None:  # `charrnn train ... >&-`: the run itself succeeded
        _emit(lambda: click.echo(f"best checkpoint: {best}\nloss curves: charrnn plot {best.parent}"))


@main.command()
@click.argument("checkpoint", type=click.Path())
@click.option("--length", "-n", type=int, default=1000, show_default=True, help="Characters to generate.")
@click.option("--temperature", "-t", type=float, default=1.0, show_default=True, help="Softmax temperature (0 = greedy).")
@click.option("--prime", "-p", default="", help="Warm the state on this text first.")
@click.option("--prime-file", type=click.Path(), help="Warm the state on this file's text first.")
@click.option("--no-echo", is_flag=True, help="Do not print the prime before the continuation.")
@click.option("--prime-unknown", type=click.Choice(["error", "skip"]), default="error", show_default=True,
              help="Prime characters not in the vocabulary: refuse, or drop them.")
@click.option("--top-k", type=int, help="Sample only from the K likeliest characters.")
@click.option("--top-p", type=float, help="Sample only from the smallest set with probability >= P (nucleus).")
@click.option("--argmax", is_flag=True, help="Greedy: always the likeliest character.")
@click.option("--seed", type=int, help="Seed for reproducible text (default: random).")
@click.option("--num-samples", "-N", type=int, default=1, show_default=True, help="Independent continuations, generated as one batch.")
@click.option("--stop", multiple=True, metavar="TEXT",
              help=r"End each sample just before the first TEXT it generates (repeatable; \n, \t understood).")
@click.option("--output", "-o", type=click.Path(allow_dash=True),
              help="Write the text to FILE instead of stdout (replaced if it exists; - is stdout).")
@click.option("--encoding", default="utf-8", show_default=True, help="The prime file's text encoding.")
@click.option("--errors", type=click.Choice(["strict", "replace"]), default="strict", show_default=True,
              help="On undecodable bytes in the prime file: stop (strict) or replace.")
@friendly_errors
def sample(checkpoint, length, temperature, prime, prime_file, no_echo, prime_unknown, top_k, top_p, argmax,
           seed, num_samples, stop, output, encoding, errors):
    """Generate text from CHECKPOINT (a .npz file, or a run directory meaning its best.npz)."""
    from ..errors import UsageError
    if top_k is not None and top_k < 1:
        raise UsageError(f"--top-k must be >= 1, got {top_k}", "omit it to sample from all characters")
    if output == "-":
        output = None
    if output is None:
        _stdout()
    if prime_file:
        from ..userfiles import read_text
        prime = prime + read_text(prime_file, encoding, errors)
    from ..checkpoints import store
    from ..sampling.generate import sample as generate
    loaded = store.load(checkpoint)
    from ..userfiles import refuse_input
    refuse_input(output, {"the checkpoint being sampled": loaded.path, "the --prime-file": prime_file})
    from ..data.sources import decode_escapes
    from ..sampling.stops import check_stops
    stop = check_stops([decode_escapes(s) for s in stop])
    for s in stop:
        if s and (bad := loaded.vocab.unknown_chars(s)):
            _err_console().print(f"warning: --stop {_escape(repr(s))} holds {_escape(repr(''.join(bad)))}, not in the "
                                 "model's vocabulary: it can never match", style="yellow")
    if prime and prime_unknown == "skip":
        prime = "".join(c for c in prime if not loaded.vocab.unknown_chars(c))
    echo = "" if no_echo else prime
    stream = output is None and num_samples == 1 and _stdout().isatty()
    on_text = None
    if stream:
        _emit(lambda: sys.stdout.write(echo))
        on_text = lambda i, piece: _emit(lambda: sys.stdout.write(piece))  # noqa: E731
    try:
        texts = generate(loaded.model, loaded.vocab, length, temperature=temperature, prime=prime,
                         top_k=top_k or 0, top_p=1.0 if top_p is None else top_p, argmax=argmax, seed=seed,
                         num_samples=num_samples, prime_unknown=prime_unknown, on_text=on_text, stop=stop)
    except KeyboardInterrupt:
        if stream:  # end the half-streamed line, so "interrupted" is not glued to the text
            _emit(lambda: sys.stdout.write("\n"))
        raise
    if stream:
        _emit(lambda: sys.stdout.write("\n"))
        return
    if num_samples == 1:
        out = echo + texts[0] + "\n"
    else:
        out = "".join(f"--- sample {i + 1} ---\n{echo}{t}\n" for i, t in enumerate(texts))
    if output:
        write_file(output, out, "--output")
        _err_console().print(f"wrote {num_samples} sample(s) to {_escape(str(output))}")
    else:
        _emit(lambda: sys.stdout.write(out))


@main.command("eval")
@click.argument("checkpoint", type=click.Path())
@click.argument("file", required=False, type=click.Path())
@click.option("--split", "which", type=click.Choice(["val", "test"]), help="Evaluate on this split of the training corpus.")
@click.option("--encoding", default="utf-8", show_default=True, help="FILE's text encoding.")
@click.option("--errors", type=click.Choice(["strict", "replace"]), default="strict", show_default=True,
              help="On undecodable bytes in FILE: stop (strict) or replace.")
@click.option("--unknown", type=click.Choice(["error", "skip"]), default="error", show_default=True,
              help="Characters the model has never seen: refuse, or drop them.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object instead of a table.")
@click.option("--per-char", "per_char", type=click.Path(), metavar="FILE.jsonl",
              help="Also write each character's loss: one JSON line per predicted character.")
@friendly_errors
def eval_cmd(checkpoint, file, which, encoding, errors, unknown, as_json, per_char):
    """Average negative log-likelihood of FILE (one continuous stream from a zero state) under CHECKPOINT,
    in nats/char, bits/char and perplexity."""
    from ..checkpoints import store
    from ..errors import UsageError
    from ..insight.evaluation import eval_file, eval_split
    if (file is None) == (which is None):
        raise UsageError("give exactly one of FILE or --split val|test", "e.g. charrnn eval runs/x/best.npz my.txt")
    _stdout()
    loaded = store.load(checkpoint)
    if per_char:
        from ..checkpoints.meta import training_sources
        from ..userfiles import refuse_input
        refuse_input(per_char, {"the checkpoint being evaluated": loaded.path, "the text being evaluated": file,
                                "a file of the training corpus":
                                training_sources(loaded.meta) if "corpus" in loaded.meta and not file else None})
    r = eval_file(loaded, file, encoding, errors, unknown=unknown) if file else eval_split(loaded, which)
    if per_char:
        from .see import write_per_char
        write_per_char(loaded, file, which, encoding, errors, unknown, per_char)
    if as_json:
        import json
        _emit(lambda: click.echo(json.dumps(r)))
        return
    from rich.table import Table
    table = Table(show_header=False)
    for label, value in [("loss (nats/char)", f"{r['loss']:.4f}"), ("bits/char", f"{r['bpc']:.4f}"),
                         ("perplexity", f"{r['perplexity']:.3f}"), ("characters", f"{r['chars']:,}")]:
        table.add_row(label, value)
    console = _console()
    _emit(lambda: (_paths(console, [("text", str(file) if file else f"the {which} split of its corpus"),
                                    ("checkpoint", str(loaded.path))]), console.print(table)))


@main.command()
@click.argument("checkpoint", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object instead of tables.")
@friendly_errors
def info(checkpoint, as_json):
    """Describe CHECKPOINT: model, vocabulary, training progress, config."""
    from ..checkpoints import store
    from ..insight.evaluation import describe
    _stdout()
    d = describe(store.load(checkpoint))
    if as_json:
        import json
        _emit(lambda: click.echo(json.dumps(d, ensure_ascii=False)))
        return
    from rich.table import Table
    from rich.text import Text
    m, v, t = d["model"], d["vocab"], d["training"]
    table = Table(show_header=False)
    table.add_column()
    table.add_column(overflow="fold")  # a long vocabulary wraps instead of being cut off with "..."
    preview = v["chars"][:80]
    rows = [("model", f"{m['cell'].upper()} {m['num_layers']}x{m['hidden_size']}"
             + (f", embedding {m['embedding_size']}" if m["embedding_size"] else ", one-hot input")),
            ("parameters", f"{m['parameters']:,}"),
            ("vocabulary", f"{v['size']} chars: {preview!r}" + (" ..." if len(v["chars"]) > 80 else "")),
            ("step / epoch", f"{t['step']} / {t['epoch']}"),
            ("val loss (this checkpoint)", _fmt(t["val_loss"])), ("best val loss", _fmt(t["best_val_loss"])),
            ("training time", f"{t['elapsed_s']:.0f} s" if t["elapsed_s"] is not None else "-")]
    if d.get("init_from"):
        o = d["init_from"]
        new = str(o.get("vocab_added") or "")
        added = f", added {len(new)} chars: {new!r}" if new else ""
        rows.append(("fine-tuned from", f"{o.get('path')} (step {o.get('step')}{added})"))
        if o.get("replaced"):
            rows.append(("replaced", str(o["replaced"])))
    rows.append(("format version", str(d["format_version"])))
    for k, val in rows:
        table.add_row(k, Text(val))
    from ..config import spell
    from ..data.sources import encode_escapes
    cfg = Table(title="config", show_header=False)
    for section, values in (d["config"] or {}).items():
        for k, val in values.items():  # a separator of "\n\n" shown as typed, not as two blank lines
            shown = encode_escapes(val) if isinstance(val, str) else str(spell(f"{section}.{k}", val))
            cfg.add_row(Text(f"{section}.{k}"), Text(shown))
    console = _console()
    _emit(lambda: (_paths(console, [("checkpoint", d["path"]), ("corpus", _corpus_row(d["corpus"] or {}))]),
                   console.print(table), console.print(cfg)))


def _paths(console, rows: list[tuple[str, str]]) -> None:
    """Paths above a table, not in it: in a table cell or title rich folds them mid-word at the cell's
    width. A path that does not fit beside its label goes on a line of its own, so one as wide as the
    terminal stays whole; a wider one wraps at the terminal's edge and still copies whole (soft_wrap: no
    newline is inserted)."""
    from rich.text import Text
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        fits = not console.is_terminal or width + 2 + len(value) <= console.width
        console.print(Text(f"{key:<{width}}  {value}" if fits else f"{key}:\n{value}"), soft_wrap=True)


@main.command("export")
@click.argument("checkpoint", type=click.Path())
@click.option("--format", "-f", "fmt", type=click.Choice(["onnx", "safetensors"]),
              help="Output format (default: from the -o file's suffix).")
@click.option("--output", "-o", metavar="FILE", help="File to write (default: the checkpoint's name with .onnx/.safetensors).")
@click.option("--force", is_flag=True, help="Replace FILE if it exists.")
@friendly_errors
def export_cmd(checkpoint, fmt, output, force):
    """Write CHECKPOINT (a .npz file or a run directory) as ONNX (the LSTM/GRU/RNN operators, the
    vocabulary in the metadata) or safetensors (PyTorch state_dict names, meta in the metadata)."""
    from ..formats.exporter import export
    path = export(checkpoint, output, fmt, force)
    _err_console().print(f"wrote {_escape(str(path))}")


def _corpus_row(corpus: dict) -> str:
    files = corpus.get("files")
    if isinstance(files, list) and isinstance(corpus.get("sources"), list):
        return f"{len(files)} file(s) from {', '.join(map(str, corpus['sources']))}"
    return str(corpus.get("path", "-"))
@main.command()
@click.argument("sweep_file", metavar="SWEEP.yaml", required=False, type=click.Path())
@click.argument("corpus", required=False, type=click.Path())
@click.option("--trials", type=int, help="Trials in the study in all (overrides sweep.trials).")
@click.option("--workers", type=int, default=1, show_default=True,
              help="Worker processes on this machine (each trial then trains on cores/workers threads).")
@click.option("--storage", envvar="CHARRNN_SWEEP_STORAGE", metavar="PATH|URL",
              help="Journal file (default OUT/journal.log) or postgresql+psycopg://user:pass@host/db "
                   "(env CHARRNN_SWEEP_STORAGE).")
@click.option("--study", metavar="NAME", help="Study name (default: sweep.study, else the file's stem).")
@click.option("--out", "-o", metavar="DIR", help="Where trial run dirs go (default: sweeps/<study>).")
@click.option("--status", is_flag=True, help="Print the study's trials from its storage and exit.")
@click.option("--plain", is_flag=True, help="One line per finished trial instead of the live table.")
@friendly_errors
def sweep(sweep_file, corpus, trials, workers, storage, study, out, status, plain):
    """Search hyperparameters with Optuna: SWEEP.yaml holds the base config (train's sections), the
    search space and the sweep settings; each trial is a run dir OUT/trial-NNNN trained like
    `charrnn train`. Run the same command on other machines with one --storage URL to add workers.
    Needs the sweep extra: pip install 'charrnn[sweep]'."""
    import signal
    import threading

    from ..errors import UsageError
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
    console = _console()
    if status:
        from ..sweep.main import status as show
        sys.exit(show(sweep_file, storage, study, out, console))
    if sweep_file is None:
        raise UsageError("missing SWEEP.yaml", "e.g. charrnn sweep sweep.yaml corpus.txt; see charrnn sweep --help")
    from ..sweep.main import run
    live = not plain and console.is_terminal
    sys.exit(run(sweep_file, corpus, trials=trials, workers=workers, storage=storage, study_name=study, out=out,
                 console=console, err_console=_err_console(), live=live))


@main.command()
@click.argument("models", nargs=-1, metavar="CHECKPOINT_OR_RUN...", type=click.Path())
@click.option("--watch", multiple=True, metavar="RUN", type=click.Path(),
              help="Serve a run still training: switch to its newest best.npz when it changes (repeatable).")
@click.option("--name", "names", multiple=True, metavar="NAME",
              help="Model name in the API (repeatable, in the order the models are given; default: the run's name).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (loopback: this machine only).")
@click.option("--port", default=8000, show_default=True, type=int, help="Port (0 picks a free one).")
@click.option("--api-key", envvar="CHARRNN_API_KEY", metavar="KEY",
              help="Require Authorization: Bearer KEY on /v1 (env CHARRNN_API_KEY).")
@click.option("--max-length", default=2000, show_default=True, type=int, help="Characters per choice, at most.")
@click.option("--max-prompt", default=4000, show_default=True, type=int, help="Characters per prompt, at most.")
@click.option("--max-concurrency", default=64, show_default=True, type=int,
              help="Streams sampled together; more requests wait in the queue.")
@click.option("--max-queue", default=256, show_default=True, type=int,
              help="Streams that may wait; beyond that requests get 429 with Retry-After.")
@click.option("--drain-timeout", default=30.0, show_default=True, type=float,
              help="On Ctrl-C/SIGTERM, seconds the requests in flight may take to finish.")
@click.option("--access-log", is_flag=True, help="Log every request on stderr.")
@friendly_errors
def serve(models, watch, names, host, port, api_key, max_length, max_prompt, max_concurrency, max_queue,
          drain_timeout, access_log):
    """Serve models over HTTP: OpenAI-compatible /v1/completions (streaming, batched), /v1/models,
    /v1/score, /healthz, and a page at / to try them. Needs the serve extra: pip install 'charrnn[serve]'."""
    from ..errors import UsageError
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise UsageError("charrnn serve needs FastAPI and uvicorn", "pip install 'charrnn[serve]'") from None
    from ..serve.app import Limits
    from ..serve.main import serve as run
    console = _err_console()
    limits = Limits(max_length=max_length, max_prompt=max_prompt, max_concurrency=max_concurrency,
                    max_queue=max_queue)
    say = lambda line: console.print(line, markup=False, style="yellow" if line.startswith("warning") else None)  # noqa: E731
    sys.exit(run(list(models), list(watch), list(names), host, port, api_key, limits, drain_timeout, access_log, say))


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.4f}"

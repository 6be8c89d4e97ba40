"""The `charrnn` command line: thin click commands over the Python API.

Heavy modules (numpy, numba, the model) are imported inside command bodies so `charrnn --help` is
instant. Every CharrnnError becomes one line on stderr and its exit code; no tracebacks for user errors.
"""
import functools
import sys

import click

from . import __version__

# Direct options for the common config keys: option name -> dotted config key.
TRAIN_OPTIONS = {
    "model": "model.cell", "hidden": "model.hidden_size", "layers": "model.num_layers",
    "dropout": "model.dropout", "embedding": "model.embedding_size",
    "seq_len": "train.seq_len", "batch_size": "train.batch_size", "lr": "optim.lr",
    "optimizer": "optim.optimizer", "grad_clip": "optim.grad_clip", "max_steps": "train.max_steps",
    "max_epochs": "train.max_epochs", "max_time": "train.max_time", "eval_every": "train.eval_every",
    "sample_every": "train.sample_every", "sample_length": "train.sample_length",
    "temperature": "train.temperature", "seed": "train.seed", "checkpoint_every": "train.checkpoint_every",
    "keep_last": "train.keep_last",
}


def _err_console():
    from rich.console import Console
    return Console(stderr=True, highlight=False, soft_wrap=True)


def friendly_errors(fn):
    """Map CharrnnError to one line + its exit code; Ctrl-C to exit 130 without a traceback."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from .errors import CharrnnError
        try:
            return fn(*args, **kwargs)
        except CharrnnError as e:
            _err_console().print(f"[bold red]error:[/] {_escape(e.one_line())}")
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            _err_console().print("[bold red]interrupted[/]")
            sys.exit(130)
        except BrokenPipeError:
            sys.exit(0)
    return wrapper


def _escape(text: str) -> str:
    from rich.markup import escape
    return escape(text)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="charrnn")
def main():
    """charrnn: character-level LSTM/GRU/RNN language models, trained fast on the CPU."""


@main.command()
@click.argument("corpus", required=False, type=click.Path(dir_okay=True))
@click.option("--config", "-c", "config_file", metavar="FILE", help="YAML config file or a bundled name (tiny, default, shakespeare, gru).")
@click.option("--out", "-o", metavar="DIR", help="Run directory (default: runs/<corpus stem>).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override any config key, e.g. --set optim.lr=3e-3 (repeatable).")
@click.option("--resume", metavar="RUN_DIR|CHECKPOINT", help="Continue a run exactly where its last checkpoint left off.")
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
@click.option("--max-epochs", type=int, help="Stop after this many epochs (0 = no limit).")
@click.option("--max-time", metavar="DURATION", help="Stop after this long, e.g. 600, 10m, 1.5h.")
@click.option("--eval-every", type=int, help="Validate every N steps (0 = never).")
@click.option("--sample-every", type=int, help="Show a sample every N steps (0 = never).")
@click.option("--sample-length", type=int, help="Characters per sample shown during training.")
@click.option("--temperature", type=float, help="Temperature of the samples shown during training.")
@click.option("--seed", type=int, help="The one seed for init, data order, dropout and samples.")
@click.option("--checkpoint-every", type=int, help="Write a checkpoint every N steps.")
@click.option("--keep-last", type=int, help="Keep the newest N step checkpoints (0 = all).")
@click.option("--encoding", help="Corpus text encoding (default utf-8).")
@click.option("--errors", type=click.Choice(["strict", "replace"]), help="On undecodable bytes: stop (strict) or replace.")
@click.option("--plain", is_flag=True, help="Plain log lines instead of the live progress bar.")
@friendly_errors
def train(corpus, config_file, out, sets, resume, force, encoding, errors, plain, **opts):
    """Train a model on CORPUS (a text file; default: the bundled tiny Shakespeare).

    Settings come from defaults < --config < --set < the options below. The run directory gets
    config.yaml, metrics.jsonl, samples.txt and checkpoints (step*_val*.npz, best.npz, last.npz).
    """
    from .api import train as api_train
    options = {TRAIN_OPTIONS[k]: v for k, v in opts.items() if v is not None}
    best = api_train(corpus, config_file, out, sets=sets, options=options, resume=resume, force=force,
                     live=False if plain else None, encoding=encoding, errors=errors)
    click.echo(f"best checkpoint: {best}")
if __name__ == "__main__":
    main()

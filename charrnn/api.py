"""The public Python API: `charrnn.train`, `charrnn.load` and the `Model` it returns.

The CLI is a thin layer over these functions. Everything here raises CharrnnError (one line, with a
hint) for problems a user can fix.
"""
import os
import time
from pathlib import Path
from typing import Any, Mapping

from .checkpoints import store
from .data.sources import BUNDLED_CORPUS, as_paths  # noqa: F401  (BUNDLED_CORPUS: part of the API)
from .errors import UsageError
from .training.plan import plan
from .training.run import execute


class Model:
    """A trained character model loaded from a checkpoint (see `charrnn.load`)."""

    def __init__(self, loaded: store.Loaded):
        self._loaded = loaded
        self.net = loaded.model
        self.vocab = loaded.vocab
        self.meta = loaded.meta
        self.path = loaded.path

    def __repr__(self) -> str:
        s = self.net.shape
        return (f"charrnn.Model({s.cell} {s.num_layers}x{s.hidden_size}, vocab {s.vocab_size}, "
                f"step {self.meta.get('progress', {}).get('step')}, from {self.path})")

    def sample(self, length: int = 1000, temperature: float = 1.0, prime: str = "", top_k: int = 0,
               top_p: float = 1.0, seed: int | None = None, argmax: bool = False,
               stop: str | list[str] | None = None, echo: bool = True) -> str:
        """Generate `length` characters continuing `prime`, returned after the prime (echo=False: the
        continuation alone), as `charrnn sample` prints it (char-rnn echoed the prime too).

        temperature 0 or argmax=True is greedy; top_k keeps the k likeliest characters, top_p the smallest
        set whose probability reaches p. stop: a string or a list; the text ends just before the first
        one generated (and may be shorter than `length`). The same seed gives the same text."""
        from .sampling.generate import sample
        text = sample(self.net, self.vocab, length, temperature=temperature, prime=prime, top_k=top_k,
                      top_p=top_p, argmax=argmax, seed=seed, stop=stop)[0]
        return prime + text if echo else text

    def loss(self, text: str) -> float:
        """Mean negative log-likelihood (nats/char) of `text` read as one stream from a zero state."""
        from .sampling.generate import evaluate
        if not isinstance(text, str):
            raise UsageError(f"text must be a str, got {type(text).__name__}", "decode bytes first, e.g. b.decode()")
        total, n = evaluate(self.net, self.vocab.encode(text))
        return total / n


def load(path: str | os.PathLike) -> Model:
    """Load a checkpoint file, or a run directory (its best.npz), verifying its checksum."""
    return Model(store.load(path))


def export(checkpoint: str | os.PathLike, out: str | os.PathLike | None = None, format: str | None = None,
           force: bool = False) -> Path:
    """Write a checkpoint (file or run directory) as ONNX or safetensors (see charrnn.export for what
    each holds) and return the path written. format: 'onnx' | 'safetensors' (default: from out's
    suffix); out: default the checkpoint's path with the format's suffix; an existing file is replaced
    only with force."""
    from .formats.exporter import export as write
    return write(checkpoint, out, format, force)


# -- training ------------------------------------------------------------------------------------
def train(corpus_path: str | os.PathLike | None = None, config: Any = None, out_dir: str | os.PathLike | None = None,
          *, sets=(), options: Mapping | None = None, resume: str | os.PathLike | None = None, force: bool = False,
          live: bool | None = None, console=None, encoding: str | None = None, errors: str | None = None,
          init_from: str | os.PathLike | None = None, extend_vocab: bool = False, on_eval=None,
          started: float | None = None) -> Path:
    """Train a model and return the path of its best checkpoint.

    corpus_path: a UTF-8 text file, a directory (its files, recursively; data.glob selects them), or a
    list of files and directories, joined by data.separator (default: the bundled tiny Shakespeare).
    init_from: fine-tune: start from this checkpoint's weights (a new run at step 0 with a fresh
    optimizer, the checkpoint's model shape and vocabulary; its config is the base the config and
    options go on top of); extend_vocab adds the corpus's unknown characters to the vocabulary
    (else they are refused, or replaced when data.errors is replace). config: a YAML path, a bundled
    config name ('tiny'), a dict of sections ({'model': {'hidden_size': 128}}) or a Config. out_dir: the
    run directory (default runs/<corpus stem>). resume: a run directory or checkpoint to continue exactly;
    then only max_steps/max_epochs/max_time, log/eval/sample/checkpoint cadence may differ from the run's
    config. Every check (config, corpus, run directory) runs before anything is written, and a failed
    start removes the run directory it created. on_eval(metrics), if given, is called with each evaluated
    step's metrics.jsonl record after its checkpoint; returning True ends training there (a sweep's pruner).
    started: the time.perf_counter() reading that train.max_time and the logged elapsed_s count from
    (default: now, the call of this function; the CLI passes the moment its process started), so start-up
    (corpus, kernels) counts against the budget.
    """
    started = time.perf_counter() if started is None else started
    options = dict(options or {})
    if encoding is not None:
        options["data.encoding"] = encoding
    if errors is not None:
        options["data.errors"] = errors
    from .distributed.world import world
    mpi = world()  # None unless an MPI launcher started this process with others (imports no MPI then)

    def make_plan():
        return plan(as_paths(corpus_path) if corpus_path is not None else None, config, out_dir, sets=sets,
                    options=options, resume=resume, force=force, init_from=init_from, extend_vocab=extend_vocab)
    if mpi is not None:
        from .training import ranks
        return ranks.train(mpi, make_plan, live=live, console=console, on_eval=on_eval, started=started)
    return execute(make_plan(), live=live, console=console, on_eval=on_eval, started=started)

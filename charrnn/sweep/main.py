"""`charrnn sweep`: check everything, open (or continue) the study, start the worker processes, show the
trials live, and at the end write the best trial's resolved config as OUT/best.yaml.

The storage is the only thing machines share: running the same command on another machine with the same
--storage URL adds its workers to the study. Ctrl-C is forwarded once to each worker (they live in their
own process groups), which checkpoints its trial, marks it failed and queues it to be resumed.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ..errors import CharrnnError, UsageError
from ..engine.threads import usable_cores
from .spec import Spec, load, trial_config
from .storage import Store, is_database, need_optuna
from .table import render, summary

EXIT_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143}


def _storage_url(storage: str | None, out: Path) -> str:
    return storage if storage else str(out / "journal.log")


def open_study(store: Store, spec: Spec):
    """Create the study, or continue it if its base config and space are the ones in this sweep file."""
    import optuna
    study = optuna.create_study(study_name=spec.study, storage=store.storage, direction="minimize",
                                load_if_exists=True)
    mine = spec.fingerprint()
    theirs = study.user_attrs.get("charrnn_fingerprint")
    if theirs is None:
        study.set_user_attr("charrnn_fingerprint", mine)
        study.set_user_attr("charrnn_spec", spec.to_json())
    elif theirs != mine:
        raise UsageError(f"study {spec.study!r} in {store.describe()} was started with another base config "
                         f"or search space than {spec.path}",
                         "use the same sweep file to continue it, or --study NEW for a new study")
    return study


def run(sweep_file: str, corpus: str | None, *, trials: int | None, workers: int, storage: str | None,
        study_name: str | None, out: str | None, console, err_console, live: bool) -> int:
    need_optuna(storage)
    spec = load(sweep_file, trials)
    if study_name:
        spec.study = study_name
    from ..api import BUNDLED_CORPUS
    corpus_path = Path(corpus) if corpus else BUNDLED_CORPUS
    if not corpus_path.is_file():
        raise UsageError(f"corpus not found: {corpus_path}", "give the path of a text file")
    out_dir = Path(out) if out else Path("sweeps") / spec.study
    cores = usable_cores()
    if workers < 1 or workers > cores:
        raise UsageError(f"--workers must be between 1 and the {cores} usable cores, got {workers}",
                         "run more workers on other machines with --storage postgresql+psycopg://...")
    threads = max(1, cores // workers)  # each worker's share of the cores (CHARRNN_THREADS below)
    url = _storage_url(storage, out_dir)
    store = Store(url, spec.heartbeat)
    study = open_study(store, spec)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create {out_dir}: {e.strerror or e}", "choose a writable --out") from None
    job = {"spec": spec.to_json(), "corpus": str(corpus_path.absolute()), "out": str(out_dir.absolute()),
           "storage": url if is_database(url) else str(Path(url).absolute()), "parent": os.getpid()}
    procs = _start(job, workers, threads, out_dir)
    code = _watch(procs, study, spec, store, console, live, err_console)
    trials_now = study.get_trials(deepcopy=False)
    console.print(render(trials_now, _title(spec, store)))
    console.print(summary(trials_now), markup=False, highlight=False)
    _write_best(study, spec, out_dir, console, corpus)
    if code not in (0, None):
        return code
    failed = [(i, p.returncode) for i, (p, _) in enumerate(procs) if p.returncode not in (0,)]
    if failed:
        i, rc = failed[0]
        raise CharrnnError(f"worker {i} stopped with exit code {rc}: {_last_line(procs[i][1])}",
                           f"its log: {procs[i][1]}")
    return 0


def _title(spec: Spec, store: Store) -> str:
    pruning = "no pruning" if spec.pruner == "none" else f"{spec.pruner} pruning"
    return f"study {spec.study} ({spec.sampler}, {pruning}, {spec.budget()} trials) on {store.describe()}"


def _start(job: dict, workers: int, threads: int, out_dir: Path) -> list[tuple[subprocess.Popen, Path]]:
    env = dict(os.environ, CHARRNN_THREADS=str(threads), NUMBA_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS="1")
    logs = out_dir / "logs"
    logs.mkdir(exist_ok=True)
    procs = []
    for i in range(workers):
        log = logs / f"worker-{os.uname().nodename}-{os.getpid()}-{i}.log"
        with open(log, "ab") as f:
            p = subprocess.Popen([sys.executable, "-m", "charrnn.sweep.worker", json.dumps({**job, "index": i})],
                                 stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT, env=env,
                                 process_group=0)
        procs.append((p, log))
    return procs


def _watch(procs, study, spec: Spec, store: Store, console, live: bool, err_console) -> int | None:
    """Refresh the table until every worker has exited; forward Ctrl-C/SIGTERM to them."""
    stop: list[int] = []

    def forward(signum, frame):
        stop.append(signum)
        for p, _ in procs:
            if p.poll() is None:
                try:
                    os.kill(p.pid, signum)
                except ProcessLookupError:
                    pass
        err_console.print("stopping: each worker checkpoints its trial and queues it to be resumed"
                          + (" (again to stop at once)" if len(stop) == 1 else ""))

    previous = {s: signal.signal(s, forward) for s in EXIT_SIGNAL}
    reported: set[int] = set()
    try:
        if live:
            from rich.live import Live
            height = max(5, console.size.height - 10)
            with Live(console=console, refresh_per_second=2, transient=True) as view:
                while _alive(procs):
                    trials = study.get_trials(deepcopy=False)
                    view.update(render(trials, _title(spec, store) + " - " + summary(trials), limit=height))
                    time.sleep(0.5)
        else:
            while _alive(procs):
                _print_finished(study, reported, console)
                time.sleep(1.0)
            _print_finished(study, reported, console)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    return EXIT_SIGNAL[stop[0]] if stop else None


def _alive(procs) -> bool:
    return any(p.poll() is None for p, _ in procs)


def _print_finished(study, reported: set[int], console) -> None:
    """Without a terminal: one line per trial as it finishes (a log file reads well)."""
    from .table import best_val, retried_as, state_text
    trials = study.get_trials(deepcopy=False)
    retried = retried_as(trials)
    for t in trials:
        if t.state.is_finished() and t.number not in reported:
            reported.add(t.number)
            bv = best_val(t)
            params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in t.params.items())
            console.print(f"trial {t.number} {state_text(t, retried).plain}"
                          + ("" if bv is None else f": val {bv:.4f}") + f" ({params})",
                          markup=False, highlight=False, soft_wrap=True)


def _write_best(study, spec: Spec, out_dir: Path, console, corpus: str | None = None) -> Path | None:
    from ..config import save_config
    done = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE" and t.value is not None]
    if not done:
        return None
    best = min(done, key=lambda t: t.value)
    path = out_dir / "best.yaml"
    cfg = trial_config(spec.base, best.params)
    save_config(cfg, path)
    console.print(f"best: trial {best.number} ({best.user_attrs.get('run', '-')}), val {best.value:.4f}; its "
                  f"config: {path}\ntrain it 10x longer with: {longer_run(cfg.train, path, corpus, out_dir)}",
                  markup=False, highlight=False, soft_wrap=True)  # a command stays on one line
    return path


def longer_run(train, best_yaml: Path, corpus: str | None, out_dir: Path) -> str:
    """The command that trains the best config past the trial's budget (best.yaml keeps the trial's
    max_steps/max_time, which would otherwise end the run where the trial ended), in its own directory
    (without --out it would go to runs/<corpus>, where an earlier run may be)."""
    import shlex
    from ..training.endings import duration_arg
    words = ["charrnn", "train", *([corpus] if corpus else []), "--config", str(best_yaml)]
    if train.max_steps:
        words += ["--max-steps", str(10 * train.max_steps)]
    if train.max_time:
        words += ["--max-time", duration_arg(10 * train.max_time)]
    if train.max_epochs:
        words += ["--max-epochs", str(10 * train.max_epochs)]
    return " ".join(shlex.quote(w) for w in [*words, "--out", str(out_dir / "best-run")])


def _last_line(log: Path) -> str:
    try:
        lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "(no log)"
    return lines[-1][:200] if lines else "(empty log)"


def status(sweep_file: str | None, storage: str | None, study_name: str | None, out: str | None, console) -> int:
    """Print the study's table from its storage, without starting anything."""
    spec = load(sweep_file) if sweep_file else None
    name = study_name or (spec.study if spec else None)
    if storage is None and name is None:
        raise UsageError("--status needs SWEEP.yaml, or --storage (and --study if it holds several)",
                         "e.g. charrnn sweep --status --storage sweeps/NAME/journal.log")
    url = storage or str((Path(out) if out else Path("sweeps") / name) / "journal.log")
    need_optuna(url)
    if not is_database(url) and not Path(url).is_file():
        raise UsageError(f"no sweep journal at {url}", "pass --storage (the journal file or database URL) or --out")
    store = Store(url, spec.heartbeat if spec else 10)
    if name is None:
        names = store.study_names()
        if len(names) != 1:
            raise UsageError(f"{store.describe()} holds {len(names)} studies: {', '.join(names) or 'none'}",
                             "choose one with --study NAME")
        name = names[0]
    study = store.load(name)
    if spec is None:
        saved = study.user_attrs.get("charrnn_spec")
        spec = Spec.from_json(saved) if saved else None
    trials = study.get_trials(deepcopy=False)
    title = _title(spec, store) if spec else f"study {name} on {store.describe()}"
    console.print(render(trials, title))
    console.print(summary(trials), markup=False, highlight=False)
    return 0

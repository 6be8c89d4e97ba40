"""The sweep file: a base config (train's sections, optionally on top of `config: NAME|PATH`), the search
space and the sweep's own settings, checked once before any worker starts. No Optuna import here.

    config: tiny                     # optional: a bundled config or a YAML path, like train --config
    train: {max_time: 60, eval_every: 100, sample_every: 0}   # per-trial budget: max_steps or max_time
    space:
      optim.lr: {log_uniform: [1.0e-4, 1.0e-2]}
      model.hidden_size: {choice: [128, 256, 512]}
      model.dropout: {uniform: [0, 0.5]}
      train.seq_len: {int: [32, 128, 16]}      # [low, high] or [low, high, step]; also log_int
    sweep: {trials: 20, sampler: tpe, pruner: median, seed: 0}

Each space value is checked the way `train` checks a value (the range's ends and every choice are put
into the base config and validated), so a bad range fails here, with the key and the rule it breaks.
"""
import difflib
import hashlib
import json
import math
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import SECTIONS, Config, check_key, key_type, load_yaml, overlay, resolve, set_value
from ..errors import UsageError

KINDS = ("uniform", "log_uniform", "int", "log_int", "choice")
SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "hyperband", "none")
SWEEP_KEYS = {"trials": 20, "sampler": "tpe", "pruner": "median", "seed": 0, "study": None, "heartbeat": 10}
TOP_KEYS = ("config", "space", "sweep", *SECTIONS)


@dataclass
class Spec:
    """A checked sweep: the resolved base config, the space, and the sweep settings."""

    path: Path
    base: Config
    space: dict[str, dict[str, Any]]  # dotted key -> {"kind": ..., "low"/"high"/"step" or "values"}
    trials: int = 20
    sampler: str = "tpe"
    pruner: str = "median"
    seed: int = 0
    study: str = ""
    heartbeat: int = 10  # seconds between a trial's heartbeats on a database; stale after 3 missed

    def fingerprint(self) -> str:
        """What makes two sweeps the same study: base config and space (not trials or workers)."""
        text = json.dumps({"base": self.base.to_dict(), "space": self.space}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def grid(self) -> dict[str, list]:
        """The grid sampler's points per key (choices, or every step of an integer range)."""
        out = {}
        for key, s in self.space.items():
            if s["kind"] == "choice":
                out[key] = list(s["values"])
            elif s["kind"] == "int":
                out[key] = list(range(s["low"], s["high"] + 1, s["step"]))
            else:
                raise UsageError(f"the grid sampler needs choice or int ranges, but {key} is {s['kind']}",
                                 f"write {key} as {{choice: [...]}}, or use sampler: tpe or random")
        return out

    def grid_size(self) -> int:
        return math.prod(len(v) for v in self.grid().values())

    def budget(self) -> int:
        """How many trials the study runs in all: sweep.trials (at most the grid's size)."""
        return min(self.trials, self.grid_size()) if self.sampler == "grid" else self.trials

    def to_json(self) -> dict:
        return {"path": str(self.path), "base": self.base.to_dict(), "space": self.space, "trials": self.trials,
                "sampler": self.sampler, "pruner": self.pruner, "seed": self.seed, "study": self.study,
                "heartbeat": self.heartbeat}

    @classmethod
    def from_json(cls, d: dict) -> "Spec":
        d = dict(d)
        return cls(path=Path(d.pop("path")), base=Config.from_dict(d.pop("base")), **d)


def _closest(word: Any, options, what: str) -> str:
    close = difflib.get_close_matches(str(word), list(options), n=1, cutoff=0.5)
    return (f"did you mean {close[0]!r}? " if close else "") + f"{what}: " + ", ".join(options)


def _number(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


def load(path: str, trials: int | None = None) -> Spec:
    """Read and check SWEEP.yaml; `trials` (--trials) overrides sweep.trials."""
    p = Path(path)
    data = load_yaml(p)
    where = f"{p}"
    for key in data:
        if key not in TOP_KEYS:
            raise UsageError(f"unknown key {key!r} in {where}", _closest(key, TOP_KEYS, "top-level keys"))
    sections = {k: v for k, v in data.items() if k in SECTIONS}
    base_file = data.get("config")
    if base_file is not None and not isinstance(base_file, str):
        raise UsageError(f"config in {where} must be a bundled config name or a YAML path, got {base_file!r}",
                         "e.g. config: tiny")
    if base_file is not None and not Path(base_file).is_absolute() and (p.parent / base_file).is_file():
        base_file = str(p.parent / base_file)  # a path next to the sweep file, as written there
    base = resolve(base_file, (), None, base=None)
    base = overlay(base, sections, where)  # unknown keys and bad values name this file
    t = base.train
    if not (t.max_steps or t.max_time):
        raise UsageError(f"{where} sets no per-trial budget",
                         "set train.max_steps or train.max_time (e.g. train: {max_time: 60})")
    if not t.eval_every:
        raise UsageError(f"train.eval_every is 0 in {where}, but trials are compared by validation loss",
                         "set train.eval_every, e.g. 100")
    space = _space(data.get("space"), base, where)
    settings = _settings(data.get("sweep"), where)
    if trials is not None:
        if trials < 1:
            raise UsageError(f"--trials must be >= 1, got {trials}")
        settings["trials"] = trials
    spec = Spec(path=p, base=base, space=space, **{k: v for k, v in settings.items() if k != "study"},
                study=settings["study"] or p.stem)
    if spec.sampler == "grid":
        spec.grid()  # refuses continuous ranges now, not in a worker
    return spec


def _settings(d: Any, where: str) -> dict:
    out = dict(SWEEP_KEYS)
    if d is None:
        return out
    if not isinstance(d, dict):
        raise UsageError(f"sweep in {where} must be a mapping, got {d!r}", "e.g. sweep: {trials: 20, sampler: tpe}")
    for key, value in d.items():
        if key not in SWEEP_KEYS:
            raise UsageError(f"unknown key sweep.{key} in {where}", _closest(key, SWEEP_KEYS, "sweep keys"))
        out[key] = value
    for key in ("trials", "seed", "heartbeat"):
        v = out[key]
        if not isinstance(v, int) or isinstance(v, bool) or v < (1 if key != "seed" else 0):
            raise UsageError(f"sweep.{key} must be an integer >= {1 if key != 'seed' else 0}, got {v!r} in {where}")
    for key, options in (("sampler", SAMPLERS), ("pruner", PRUNERS)):
        if out[key] not in options:
            raise UsageError(f"sweep.{key} must be one of {'|'.join(options)}, got {out[key]!r} in {where}",
                             _closest(out[key], options, "one of"))
    if out["study"] is not None and (not isinstance(out["study"], str) or not out["study"].strip()):
        raise UsageError(f"sweep.study must be a name, got {out['study']!r} in {where}")
    return out


def _space(d: Any, base: Config, where: str) -> dict[str, dict[str, Any]]:
    if not isinstance(d, dict) or not d:
        raise UsageError(f"{where} has no search space",
                         "add e.g. space: {optim.lr: {log_uniform: [1.0e-4, 1.0e-2]}}")
    out = {}
    for key, spec in d.items():
        key = str(key)
        check_key(key, f"{where} space")
        src = f"space {key} in {where}"
        if not isinstance(spec, dict) or len(spec) != 1:
            raise UsageError(f"{src} must be one of {', '.join(KINDS)} with its range, got {spec!r}",
                             f"e.g. {key}: {{choice: [..]}} or {{uniform: [low, high]}}")
        (kind, arg), = spec.items()
        if kind not in KINDS:
            raise UsageError(f"unknown kind {kind!r} for {src}", _closest(kind, KINDS, "kinds"))
        out[key] = _one(key, kind, arg, base, src)
    return out


def _one(key: str, kind: str, arg: Any, base: Config, src: str) -> dict[str, Any]:
    typ = key_type(key)
    if kind == "choice":
        if not isinstance(arg, list) or not arg:
            raise UsageError(f"{src}: choice needs a non-empty list, got {arg!r}", "e.g. {choice: [128, 256]}")
        if len({json.dumps(v) for v in arg}) != len(arg):
            raise UsageError(f"{src}: choice lists a value twice: {arg!r}", "list each value once")
        for v in arg:
            if not (v is None or isinstance(v, (bool, int, float, str))):
                raise UsageError(f"{src}: choice values must be numbers or strings, got {v!r}")
            _check_value(key, v, base, f"the space of {src.rsplit(' in ', 1)[-1]}")
        return {"kind": kind, "values": list(arg)}
    if kind in ("int", "log_int") and typ is not int and typ is not float:
        raise UsageError(f"{src}: {key} is not a number", "use {choice: [...]}")
    if kind in ("uniform", "log_uniform") and typ is not float:
        raise UsageError(f"{src}: {key} takes {'whole numbers' if typ is int else 'text'}, not a {kind} range",
                         "use {int: [low, high]} or {log_int: [low, high]}" if typ is int else "use {choice: [...]}")
    n = (2, 3) if kind == "int" else (2,)
    if isinstance(arg, list) and kind in ("uniform", "log_uniform"):
        arg = [float(a) if isinstance(a, str) and _is_float(a) else a for a in arg]  # `1e-4` is a str in YAML 1.1
    if not isinstance(arg, list) or len(arg) not in n or not all(_number(a) for a in arg):
        shape = "[low, high] or [low, high, step]" if kind == "int" else "[low, high]"
        raise UsageError(f"{src}: {kind} needs {shape} as numbers, got {arg!r}")
    if kind in ("int", "log_int") and not all(isinstance(a, int) for a in arg):
        raise UsageError(f"{src}: {kind} needs whole numbers, got {arg!r}", "e.g. {int: [32, 128]}")
    low, high = arg[0], arg[1]
    if not low < high:
        raise UsageError(f"{src}: low must be below high, got [{low}, {high}]")
    if kind.startswith("log") and low <= 0:
        raise UsageError(f"{src}: a log range needs low > 0, got {low}", f"use {kind.removeprefix('log_')} to include 0")
    step = arg[2] if len(arg) == 3 else 1
    if kind == "int" and (step < 1 or (high - low) % step):
        raise UsageError(f"{src}: the step must be >= 1 and divide high - low, got step {step} for [{low}, {high}]")
    for v in (low, high):
        _check_value(key, v, base, f"the space of {src.rsplit(' in ', 1)[-1]}")
    out = {"kind": kind, "low": low, "high": high}
    if kind == "int":
        out["step"] = step
    return out


def _is_float(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _check_value(key: str, value: Any, base: Config, src: str) -> None:
    set_value(base, key, value, source=src)  # UsageError naming the key and the rule it breaks


def trial_config(base: Config, params: dict[str, Any]) -> Config:
    """The config a trial trains with: the base with the trial's values put in."""
    cfg = base
    for key, value in params.items():
        cfg = set_value(cfg, key, value, source="the trial's parameters")
    return cfg


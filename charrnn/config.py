"""Layered configuration: typed defaults < YAML file < --set key=value < direct CLI options.

Every setting has a dotted key (``model.hidden_size``): a section and a field of that section's
dataclass. Each layer is checked on its own (unknown keys, types) so an error names the layer it
came from; range checks run once, on the merged result.
"""

import codecs
import dataclasses
import difflib
import math
import numbers
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from charrnn.errors import UsageError
from charrnn.yamlread import BoundedLoader, TooBig, safe_yaml


@dataclass
class ModelConfig:
    """Network shape and initialisation."""

    cell: str = "lstm"  # lstm | gru | rnn
    hidden_size: int = 256
    num_layers: int = 2
    dropout: float = 0.2  # between layers and before the decoder, training only
    embedding_size: int = 0  # 0 = one-hot input
    init: str = "uniform"  # uniform: every parameter ~ U(-init_scale, init_scale) | torch: PyTorch's own
    init_scale: float = 0.08  # the uniform init's bound
    forget_bias: float | None = None  # LSTM forget-gate bias at init; None = drawn like every other bias
    orthogonal_recurrent: bool = False  # each gate's H x H block of weight_hh a random orthogonal matrix


@dataclass
class DataConfig:
    """How the corpus is decoded and split."""

    val_fraction: float = 0.05
    test_fraction: float = 0.05
    encoding: str = "utf-8"
    errors: str = "strict"  # strict | replace
    glob: str = ""  # a directory corpus reads only the files whose relative path matches ('' = all)
    separator: str = "\n\n"  # put between the files of a corpus of several files


@dataclass
class OptimConfig:
    """Optimizer, gradient clipping and learning-rate schedule."""

    optimizer: str = "adam"  # adam | rmsprop | adagrad | sgd
    lr: float = 0.003
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    momentum: float = 0.9  # sgd
    alpha: float = 0.95  # rmsprop decay
    weight_decay: float = 0.0
    grad_clip: float = 5.0  # global norm, 0 = off
    grad_clip_value: float = 0.0  # per element, 0 = off
    schedule: str = "linear"  # constant | step | cosine | linear
    schedule_length: str = "auto"  # cosine/linear end at: steps (the step budget) | auto (also max_time)
    warmup_steps: int = 0
    decay_rate: float = 0.97  # step schedule: lr *= decay_rate every decay_every steps
    decay_every: int = 1000
    min_lr: float = 0.0
    decay_fraction: float = 0.2  # cosine/linear decay only over the budget's last fraction (lr held before)
    ema: float = 0.0  # weight averaging: evaluate/sample/save an average of the weights, this decay per step; 0 = off


@dataclass
class TrainConfig:
    """Batching, stopping, logging, sampling and checkpointing."""

    batch_size: int = 64
    seq_len: int = 100
    max_steps: int = 0  # 0 = no limit
    max_epochs: int | None = None  # 0 = no limit; None (auto) = AUTO_EPOCHS unless max_steps or max_time is set
    max_time: float = 0.0  # seconds, 0 = no limit; "90s", "10m", "1.5h" accepted
    seed: int = 1
    log_every: int = 10
    eval_every: int = 200  # the last step is evaluated too; 0 = the last step only
    eval_max_chars: int = 1_000_000  # cap per evaluation; 0 = whole val split
    sample_every: int = 500  # 0 = never
    sample_length: int = 300
    temperature: float = 0.8  # 0 = greedy
    checkpoint_every: int = 500  # 0 = no periodic checkpoints
    keep_last: int = 3  # 0 = keep all
    max_bad_steps: int = 5  # consecutive non-finite losses before giving up
    patience: int = 0  # stop after this many evaluations without a better val loss (0 = off)

    @property
    def epoch_limit(self) -> int:
        """max_epochs as applied (0 = none). auto bounds only a run given no other limit: a user's
        --max-time or --max-steps is then the whole budget, not cut short by a default epoch count."""
        if self.max_epochs is not None:
            return self.max_epochs
        return 0 if self.max_steps or self.max_time else AUTO_EPOCHS


AUTO_EPOCHS = 20  # train.max_epochs=auto with neither max_steps nor max_time: 20 passes, then stop


@dataclass
class Config:
    """The whole resolved configuration, one dataclass per section."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Nested plain dict (sections in a stable order), safe for YAML and JSON."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "config") -> "Config":
        """Defaults overlaid with the (possibly partial) nested dict ``d``, then validated."""
        flat, origins = flatten(cls()), {}
        _overlay(flat, origins, d, source)
        return _finish(flat, origins)

    @classmethod
    def from_saved(cls, d: Mapping[str, Any], source: str = "checkpoint") -> "Config":
        """A checkpoint's config: from_dict, except that a key the checkpoint predates takes the value the
        code that wrote it used (BEFORE_THE_KEY), not today's default, so resuming, fine-tuning or
        describing an old run does what that run did."""
        filled = {}
        for sec, values in d.items():
            if isinstance(values, Mapping):  # anything else is left for from_dict to reject
                old = {k.split(".", 1)[1]: v for k, v in BEFORE_THE_KEY.items() if k.startswith(sec + ".")}
                values = {**old, **values}
            filled[sec] = values
        return cls.from_dict(filled, source)


# Keys added after checkpoints were first written, with the behaviour of the code before each existed.
# Defaults are chosen by measurement and move; a checkpoint without the key was trained the old way.
BEFORE_THE_KEY: dict[str, Any] = {
    "model.forget_bias": 1.0,  # char-rnn's forget-gate bias was the init until the key came (2026-12-02)
    "optim.schedule_length": "steps",  # cosine decayed over the step budget before `auto` existed
    "optim.decay_fraction": 1.0,  # the decay ran over the whole budget before warmup-stable-decay
    "optim.ema": 0.0,  # no weight averaging before the key (2026-12-03)
}
# Keys whose null has a name of its own in messages and YAML (`max_epochs: auto`).
_NULL_NAMES: dict[str, str] = {"train.max_epochs": "auto"}


# Section name -> dataclass, in the order sections are written out.
SECTIONS: dict[str, type] = {f.name: f.default_factory for f in dataclasses.fields(Config)}
# Dotted key -> Python type of the field (int, float or str), in section/field order.
_TYPES: dict[str, type] = {
    f"{sec}.{f.name}": f.type for sec, dc in SECTIONS.items() for f in dataclasses.fields(dc)}
KEYS: tuple[str, ...] = tuple(_TYPES)

CHOICES: dict[str, tuple[str, ...]] = {
    "model.cell": ("lstm", "gru", "rnn"),
    "data.errors": ("strict", "replace"),
    "optim.optimizer": ("adam", "rmsprop", "adagrad", "sgd"),
    "model.init": ("uniform", "torch"),
    "optim.schedule": ("constant", "step", "cosine", "linear"),
    "optim.schedule_length": ("steps", "auto"),
}

# Keys that only change how long or how chattily a run goes, never the model or its optimisation,
# so a resumed run may override them without invalidating the checkpoint.
SAFE_ON_RESUME: frozenset[str] = frozenset(f"train.{name}" for name in (
    "max_steps", "max_epochs", "max_time", "log_every", "eval_every", "eval_max_chars",
    "sample_every", "sample_length", "temperature", "checkpoint_every", "keep_last",
    "max_bad_steps", "patience"))

# A decimal or scientific literal. PyYAML (YAML 1.1) reads "3e-3" as a *string*, so float fields
# accept such strings instead of surprising people who write `lr: 3e-3`.
_NUMBER = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
_DURATION = re.compile(rf"({_NUMBER})\s*([smhd]?)", re.IGNORECASE)
_UNIT_SECONDS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

# Names from Karpathy's char-rnn and PyTorch that difflib cannot map to ours.
_ALIASES = {"learning_rate": "optim.lr", "rnn_size": "model.hidden_size",
            "seq_length": "train.seq_len", "learning_rate_decay": "optim.decay_rate"}

# A symlink to the repo's configs/ (named _bundled, not data/, which would clash with data.py).
BUNDLED_DIR = Path(__file__).parent / "_bundled" / "configs"


# ------------------------------------------------------------------------ keys and values


def _short(value: Any, limit: int = 60) -> str:
    """repr() cut short, for quoting user input in a one-line message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def spell(key: str, value: Any) -> Any:
    """A value as the user writes it: a null by its name (auto, null)."""
    return _NULL_NAMES.get(key, "null") if value is None else value


def _where(source: str | None) -> str:
    return f" in {source}" if source else ""


def _key_hint(key: str) -> str:
    """'did you mean ...?' for an unknown dotted key, else the valid keys of its section."""
    section, _, name = key.partition(".")
    # Right name in the wrong section (model.lr) is a likelier slip than a typo: check it first.
    close = [k for k in KEYS if k.split(".")[1] == name]
    close = close or ([_ALIASES[name]] if name in _ALIASES else [])
    if section in SECTIONS:
        # Match the name within its section: whole keys share "model." and look alike.
        names = [k.split(".")[1] for k in KEYS if k.startswith(section + ".")]
        close = close or [f"{section}.{n}" for n in difflib.get_close_matches(name, names, n=1)]
        if not close:
            return f"valid keys in {section}: " + ", ".join(names)
    close = close or difflib.get_close_matches(key, KEYS, n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else "valid sections: " + ", ".join(SECTIONS)


def _section_hint(section: Any) -> str:
    """Hint for an unknown top-level name: a misspelt section, or a key without its section."""
    text = str(section)
    if text in _TYPES:  # `model.hidden_size: 512` written flat in a YAML file
        sec, name = text.split(".")
        return f"nest it: '{name}:' indented under '{sec}:'"
    close = difflib.get_close_matches(text, SECTIONS, n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]!r}?"
    owners = [k for k in KEYS if k.split(".")[1] == text]  # `hidden_size: 512` at top level
    owners = owners or ([_ALIASES[text]] if text in _ALIASES else [])
    if owners:
        return f"did you mean {owners[0]!r}? keys go under their section"
    return "valid sections: " + ", ".join(SECTIONS)


def _check_key(key: str, source: str | None) -> None:
    if key not in _TYPES:
        raise UsageError(f"unknown config key {_short(key)}{_where(source)}", _key_hint(key))


def _type_error(key: str, what: str, value: Any, source: str | None, hint: str) -> UsageError:
    return UsageError(f"{key} must be {what}, got {_short(value)}{_where(source)}", hint)


def parse_duration(value: Any, key: str = "train.max_time", source: str | None = None) -> float:
    """Seconds from a number or a string like '90s', '10m', '1.5h', '2d' (no unit = seconds)."""
    if isinstance(value, str):
        match = _DURATION.fullmatch(value.strip())
        if match:
            return float(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()]
    elif isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    raise _type_error(key, "seconds or a duration like '90s', '10m', '1.5h'", value, source,
                      f"e.g. {key}=10m")


def _coerce(key: str, value: Any, source: str | None) -> Any:
    """The value as the field's type, or a UsageError; nothing is silently truncated."""
    if key == "train.max_time":
        return parse_duration(value, key, source)
    typ, default = _TYPES[key], get(Config(), key)
    example = f"e.g. {key}={spell(key, default)}"
    if typ is bool:
        if isinstance(value, bool):  # YAML and --set read true/false/yes/no as bools already
            return value
        raise _type_error(key, "true or false", value, source, f"e.g. {key}=true")
    if typ in (float | None, int | None):
        null = spell(key, None)
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null", null)):
            return None
        typ = float if typ == float | None else int
        example += "" if default is None else f" (or {null})"
    if typ is int:
        # bool is an int subclass, but `hidden_size: yes` is never what someone meant.
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return int(value)
        raise _type_error(key, "an integer", value, source, "use a whole number, " + example)
    if typ is float:
        if isinstance(value, str) and re.fullmatch(_NUMBER, value.strip()):
            value = float(value)
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            if math.isfinite(value):
                return float(value)
            raise _type_error(key, "a finite number", value, source, example)
        raise _type_error(key, "a number", value, source, example)
    if isinstance(value, str):
        return value
    hint = "one of: " + ", ".join(CHOICES[key]) if key in CHOICES else example
    raise _type_error(key, "a string", value, source, hint)


def flatten(cfg: Config) -> dict[str, Any]:
    """{dotted key: value} for every setting, in section/field order."""
    return {f"{s}.{k}": v for s, values in cfg.to_dict().items() for k, v in values.items()}


def _overlay(flat: dict[str, Any], origins: dict[str, str], d: Mapping[str, Any],
             source: str) -> None:
    """Check the nested dict ``d`` and write its values into ``flat``, noting their source."""
    if not isinstance(d, Mapping):
        raise UsageError(f"config from {source} must be a mapping of sections, got {_short(d)}",
                         "sections are " + ", ".join(SECTIONS))
    for section, values in d.items():
        if section not in SECTIONS:
            raise UsageError(f"unknown config section {_short(section)}{_where(source)}",
                             _section_hint(section))
        if values is None:  # a section header whose keys are all commented out
            continue
        if not isinstance(values, Mapping):
            raise UsageError(f"config section {section!r}{_where(source)} must be a mapping, "
                             f"got {_short(values)}", f"indent its keys under '{section}:'")
        for name, value in values.items():
            key = f"{section}.{name}"
            _check_key(key, source)
            flat[key] = _coerce(key, value, source)
            origins[key] = source


def _finish(flat: Mapping[str, Any], origins: Mapping[str, str]) -> Config:
    """Build a Config from a complete flat dict and validate it."""
    sections: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    for key, value in flat.items():
        section, name = key.split(".")
        sections[section][name] = value
    cfg = Config(**{s: SECTIONS[s](**values) for s, values in sections.items()})
    validate(cfg, origins)
    return cfg


def get(cfg: Config, key: str) -> Any:
    """The value of a dotted key, e.g. get(cfg, 'model.hidden_size')."""
    _check_key(key, None)
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)


def set_value(cfg: Config, key: str, value: Any, source: str = "--set") -> Config:
    """A validated copy of ``cfg`` with one dotted key changed; ``cfg`` itself is untouched."""
    _check_key(key, source)
    flat, origins = flatten(cfg), {}
    section, name = key.split(".")
    _overlay(flat, origins, {section: {name: value}}, source)
    return _finish(flat, origins)


def diff(a: Config, b: Config) -> list[str]:
    """Dotted keys whose values differ between ``a`` and ``b``, in section/field order."""
    fa, fb = flatten(a), flatten(b)
    return [key for key in KEYS if fa[key] != fb[key]]


# ------------------------------------------------------------------------ validation

# (keys, test, requirement as read in "KEY must be REQUIREMENT"). Tests are written so NaN fails.
_RULES: list[tuple[tuple[str, ...], Any, str]] = [
    (("model.hidden_size", "model.num_layers", "model.init_scale", "optim.lr", "optim.eps",
      "train.batch_size", "train.seq_len"), lambda v: v > 0, "> 0"),
    (("model.dropout", "optim.beta1", "optim.beta2", "optim.alpha", "optim.momentum", "optim.ema"),
     lambda v: 0 <= v < 1, "in [0, 1)"),
    (("model.embedding_size", "data.val_fraction", "data.test_fraction", "optim.weight_decay",
      "optim.grad_clip", "optim.grad_clip_value", "optim.warmup_steps", "optim.min_lr",
      "train.max_steps", "train.max_time", "train.eval_every",
      "train.eval_max_chars", "train.sample_every", "train.sample_length", "train.temperature",
      "train.checkpoint_every", "train.keep_last", "train.patience"), lambda v: v >= 0, ">= 0"),
    (("optim.decay_every", "train.log_every", "train.max_bad_steps"), lambda v: v >= 1, ">= 1"),
    (("train.max_epochs",), lambda v: v is None or v >= 0, ">= 0 or auto"),
    (("optim.decay_rate", "optim.decay_fraction"), lambda v: 0 < v <= 1, "in (0, 1]"),
    (("train.seed",), lambda v: 0 <= v < 2**32, "in [0, 2**32)"),  # what numpy accepts
]


def validate(cfg: Config, sources: Mapping[str, str] | None = None) -> None:
    """Raise UsageError for the first out-of-range setting.

    Zero means "off": train.eval_every, sample_every (never), checkpoint_every (no periodic
    checkpoints), max_steps, max_epochs, max_time (no limit), eval_max_chars (whole val split),
    keep_last (keep all), optim.grad_clip, grad_clip_value (no clipping), model.embedding_size
    (one-hot input), train.temperature (greedy). log_every, decay_every, max_bad_steps are >= 1.
    ``sources`` maps dotted keys to where they were set, so the message can name that place.
    """
    sources = sources or {}
    flat, defaults = flatten(cfg), flatten(Config())

    def fail(key: str, requirement: str, value: Any, hint: str | None = None) -> UsageError:
        return UsageError(
            f"{key} must be {requirement}, got {_short(value)}{_where(sources.get(key))}",
            hint or f"e.g. {key}={spell(key, defaults[key])}, the default")

    for key, choices in CHOICES.items():
        if flat[key] not in choices:
            close = difflib.get_close_matches(str(flat[key]).lower(), choices, n=1)
            hint = (f"did you mean {close[0]!r}? " if close else "") + "one of: "
            hint += ", ".join(choices)
            raise fail(key, "one of " + "|".join(choices), flat[key], hint)
    for keys, ok, requirement in _RULES:
        for key in keys:
            if not ok(flat[key]):
                raise fail(key, requirement, flat[key])

    d, o = cfg.data, cfg.optim
    if not d.val_fraction + d.test_fraction < 1:
        where = _where(sources.get("data.test_fraction") or sources.get("data.val_fraction"))
        raise UsageError(f"data.val_fraction + data.test_fraction must be < 1, got "
                         f"{d.val_fraction} + {d.test_fraction}{where}",
                         "leave some text for training, e.g. 0.05 each")
    if o.min_lr > o.lr:
        raise fail("optim.min_lr", f"<= optim.lr ({o.lr})", o.min_lr,
                   "lower optim.min_lr or raise optim.lr")
    try:
        # lookup() alone accepts bytes-to-bytes codecs like rot13; encoding a str rejects them.
        codecs.lookup(d.encoding)
        "".encode(d.encoding)
    except LookupError:
        raise fail("data.encoding", "a text encoding Python knows", d.encoding,
                   "e.g. utf-8, latin-1, cp1252") from None


# ------------------------------------------------------------------------ files and layers


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """The mapping at the top of a YAML file (empty file -> {}), read with a size bound and safe_yaml."""
    from .userfiles import CONFIG_CAP, read_bounded
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"config path is a directory, not a file: {p}",
                         "give the path to a .yaml file")
    if not p.exists() and not p.is_symlink():
        names = ", ".join(bundled_config_names())
        raise UsageError(f"config file not found: {p}", f"check the path; bundled configs: {names}")
    try:
        text = read_bounded(p, CONFIG_CAP, "config file").decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"config file {p} is not UTF-8 text", "save it as UTF-8") from None
    data = safe_yaml(text, str(p))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(
            f"config file {p} must hold a mapping of sections, got a {type(data).__name__}",
            "start with a section such as 'model:', as in configs/default.yaml")
    return data


def bundled_config_names() -> list[str]:
    """Names of the configs shipped with the package, e.g. ['default', 'gru', 'tiny']."""
    return sorted(p.stem for p in BUNDLED_DIR.glob("*.yaml"))


def resolve_config_path(name_or_path: str | os.PathLike) -> Path:
    """An existing file as is, else a bundled config by name ('tiny' or 'tiny.yaml')."""
    path = Path(name_or_path)
    if path.exists() and not path.is_dir():  # a FIFO or a device too: load_yaml reads it with a bound
        return path
    text = str(name_or_path)
    name = text.removesuffix(".yaml").removesuffix(".yml")
    if name and "/" not in text and os.sep not in text:
        bundled = BUNDLED_DIR / f"{name}.yaml"
        if bundled.is_file():
            return bundled
    names = bundled_config_names()
    close = difflib.get_close_matches(name, names, n=1)
    hint = (f"did you mean {close[0]!r}? " if close else "") + "bundled configs: "
    hint += ", ".join(names)
    raise UsageError(f"no config file or bundled config named {text!r}",
                     hint + "; or give a path to a .yaml file")


def parse_set(items: Iterable[str]) -> dict[str, dict[str, Any]]:
    """["model.hidden_size=512", "optim.lr=3e-3"] -> {"model": {"hidden_size": 512}, ...}.

    Values are read with yaml.safe_load so numbers, bools and strings come out typed; later items
    win. Key names are checked by from_dict/resolve, which can suggest the closest valid key.
    """
    nested: dict[str, dict[str, Any]] = {}
    for item in items:
        key, eq, raw = item.partition("=")
        key, raw = key.strip(), raw.strip()
        if not eq or not key:
            raise UsageError(f"bad --set item {item!r}: expected section.key=value",
                             "e.g. --set model.hidden_size=512")
        parts = key.split(".")
        if len(parts) != 2 or not all(parts):
            hint = _key_hint(key) if len(parts) == 2 else _section_hint(key)
            raise UsageError(f"bad --set item {item!r}: the key must be section.name", hint)
        if not raw:
            raise UsageError(f"bad --set item {item!r}: no value after '='",
                             f"e.g. --set {key}=VALUE")
        try:
            value = yaml.load(raw, Loader=BoundedLoader)  # noqa: S506  (a SafeLoader subclass)
        except TooBig as e:
            raise UsageError(f"bad --set item {item[:60]!r}: {e}", "write the value out") from None
        except (yaml.YAMLError, RecursionError):
            value = raw  # not valid YAML on its own (e.g. "a: b: c"): keep it as a plain string
        if isinstance(value, str) and re.fullmatch(_NUMBER, value):
            value = float(value)  # YAML 1.1 leaves "3e-3" a string
        nested.setdefault(parts[0], {})[parts[1]] = value
    return nested


def resolve(config_file: str | os.PathLike | None = None, sets: Iterable[str] = (),
            options: Mapping[str, Any] | None = None, base: Config | None = None) -> Config:
    """Defaults < YAML file (path or bundled name) < --set items < CLI options (None = unset).

    `base` replaces the defaults (on resume: the run's saved config)."""
    flat, origins = flatten(base or Config()), {}
    if config_file is not None:
        path = resolve_config_path(config_file)
        _overlay(flat, origins, load_yaml(path), str(path))
    _overlay(flat, origins, parse_set(sets), "--set")
    for key, value in (options or {}).items():
        if value is not None:
            _check_key(key, "the command-line options")
            section, name = key.split(".")
            _overlay(flat, origins, {section: {name: value}}, "the command-line options")
    return _finish(flat, origins)


def save_config(cfg: Config, path: str | os.PathLike) -> None:
    """Write ``cfg`` as YAML (sections and keys in definition order), atomically via os.replace."""
    from .userfiles import utf8
    path = Path(path)
    body = yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=False)
    # A temp file in the same directory so os.replace is atomic: readers never see half a file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(utf8("# charrnn resolved config\n" + body))
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise UsageError(f"cannot write config {path}: {e.strerror or e}",
                         "check that the directory is writable") from None

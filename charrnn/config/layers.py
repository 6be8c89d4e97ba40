"""A whole configuration from layers of sources: defaults < a YAML file < --set items < command-line
options (files.py reads the sources), each layer checked on its own so an error names where it came from,
then range checks once on the merged result (validate)."""

import codecs
import dataclasses
import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from charrnn.errors import UsageError

from .schema import CHOICES, KEYS, SECTIONS, TYPES, DataConfig, ModelConfig, OptimConfig, TrainConfig
from .values import check_key, coerce, section_hint, short, spell, where


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
        overlay_into(flat, origins, d, source)
        return finish(flat, origins)


def flatten(cfg: Config) -> dict[str, Any]:
    """{dotted key: value} for every setting, in section/field order."""
    return {f"{s}.{k}": v for s, values in cfg.to_dict().items() for k, v in values.items()}


def overlay_into(flat: dict[str, Any], origins: dict[str, str], d: Mapping[str, Any],
                 source: str) -> None:
    """Check the nested dict ``d`` and write its values into ``flat``, noting their source."""
    if not isinstance(d, Mapping):
        raise UsageError(f"config from {source} must be a mapping of sections, got {short(d)}",
                         "sections are " + ", ".join(SECTIONS))
    for section, values in d.items():
        if section not in SECTIONS:
            raise UsageError(f"unknown config section {short(section)}{where(source)}",
                             section_hint(section))
        if values is None:  # a section header whose keys are all commented out
            continue
        if not isinstance(values, Mapping):
            raise UsageError(f"config section {section!r}{where(source)} must be a mapping, "
                             f"got {short(values)}", f"indent its keys under '{section}:'")
        for name, value in values.items():
            key = f"{section}.{name}"
            check_key(key, source)
            flat[key] = coerce(key, value, source)
            origins[key] = source


def finish(flat: Mapping[str, Any], origins: Mapping[str, str]) -> Config:
    """Build a Config from a complete flat dict and validate it."""
    sections: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    for key, value in flat.items():
        section, name = key.split(".")
        sections[section][name] = value
    cfg = Config(**{s: SECTIONS[s](**values) for s, values in sections.items()})
    validate(cfg, origins)
    return cfg


def overlay(base: Config, sections: Mapping[str, Any], source: str) -> Config:
    """``base`` with a nested dict of sections on top, checked and validated; errors name ``source``."""
    flat, origins = flatten(base), {}
    overlay_into(flat, origins, sections, source)
    return finish(flat, origins)


def key_type(key: str) -> type:
    """The Python type of a dotted key's field (int, float, str, bool, or int | None ...)."""
    check_key(key, None)
    return TYPES[key]


def get(cfg: Config, key: str) -> Any:
    """The value of a dotted key, e.g. get(cfg, 'model.hidden_size')."""
    check_key(key, None)
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)


def set_value(cfg: Config, key: str, value: Any, source: str = "--set") -> Config:
    """A validated copy of ``cfg`` with one dotted key changed; ``cfg`` itself is untouched."""
    check_key(key, source)
    flat, origins = flatten(cfg), {}
    section, name = key.split(".")
    overlay_into(flat, origins, {section: {name: value}}, source)
    return finish(flat, origins)


def diff(a: Config, b: Config) -> list[str]:
    """Dotted keys whose values differ between ``a`` and ``b``, in section/field order."""
    fa, fb = flatten(a), flatten(b)
    return [key for key in KEYS if fa[key] != fb[key]]


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
            f"{key} must be {requirement}, got {short(value)}{where(sources.get(key))}",
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
        place = where(sources.get("data.test_fraction") or sources.get("data.val_fraction"))
        raise UsageError(f"data.val_fraction + data.test_fraction must be < 1, got "
                         f"{d.val_fraction} + {d.test_fraction}{place}",
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

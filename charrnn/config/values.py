"""One setting's value: reading it as its field's type, and the one-line errors with their hints
(did-you-mean for keys, an example for values)."""

import difflib
import math
import numbers
import re
from typing import Any

from charrnn.errors import UsageError

from .schema import CHOICES, KEYS, NULL_NAMES, SECTIONS, TYPES

# A decimal or scientific literal. PyYAML (YAML 1.1) reads "3e-3" as a *string*, so float fields
# accept such strings instead of surprising people who write `lr: 3e-3`.
NUMBER = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
_DURATION = re.compile(rf"({NUMBER})\s*([smhd]?)", re.IGNORECASE)
_UNIT_SECONDS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

# Names from Karpathy's char-rnn and PyTorch that difflib cannot map to ours.
_ALIASES = {"learning_rate": "optim.lr", "rnn_size": "model.hidden_size",
            "seq_length": "train.seq_len", "learning_rate_decay": "optim.decay_rate"}


def short(value: Any, limit: int = 60) -> str:
    """repr() cut short, for quoting user input in a one-line message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def spell(key: str, value: Any) -> Any:
    """A value as the user writes it: a null by its name (auto, null)."""
    return NULL_NAMES.get(key, "null") if value is None else value


def where(source: str | None) -> str:
    return f" in {source}" if source else ""


def key_hint(key: str) -> str:
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


def section_hint(section: Any) -> str:
    """Hint for an unknown top-level name: a misspelt section, or a key without its section."""
    text = str(section)
    if text in TYPES:  # `model.hidden_size: 512` written flat in a YAML file
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


def check_key(key: str, source: str | None) -> None:
    """UsageError (with a did-you-mean hint) unless ``key`` is a dotted config key."""
    if key not in TYPES:
        raise UsageError(f"unknown config key {short(key)}{where(source)}", key_hint(key))


def default_of(key: str) -> Any:
    """The default value of a dotted key."""
    section, name = key.split(".")
    return getattr(SECTIONS[section](), name)


def _type_error(key: str, what: str, value: Any, source: str | None, hint: str) -> UsageError:
    return UsageError(f"{key} must be {what}, got {short(value)}{where(source)}", hint)


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


def coerce(key: str, value: Any, source: str | None) -> Any:
    """The value as the field's type, or a UsageError; nothing is silently truncated."""
    if key == "train.max_time":
        return parse_duration(value, key, source)
    typ, default = TYPES[key], default_of(key)
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
        if isinstance(value, str) and re.fullmatch(NUMBER, value.strip()):
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

"""Configuration files: reading YAML (bounded, safe), the bundled configs, --set items, resolve() (every
layer a command line can give), and writing a run's config.yaml atomically."""

import difflib
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from charrnn.atomic import write_text_atomic
from charrnn.errors import UsageError
from charrnn.userfiles import CONFIG_CAP, read_bounded
from charrnn.yamlread import BoundedLoader, TooBig, safe_yaml

from .layers import Config, finish, flatten, overlay_into
from .values import NUMBER, check_key, key_hint, section_hint

# A symlink to the repo's configs/ (named _bundled, apart from the data/ package).
BUNDLED_DIR = Path(__file__).parent.parent / "_bundled" / "configs"


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """The mapping at the top of a YAML file (empty file -> {}), read with a size bound and safe_yaml."""
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
            hint = key_hint(key) if len(parts) == 2 else section_hint(key)
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
        if isinstance(value, str) and re.fullmatch(NUMBER, value):
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
        overlay_into(flat, origins, load_yaml(path), str(path))
    overlay_into(flat, origins, parse_set(sets), "--set")
    for key, value in (options or {}).items():
        if value is not None:
            check_key(key, "the command-line options")
            section, name = key.split(".")
            overlay_into(flat, origins, {section: {name: value}}, "the command-line options")
    return finish(flat, origins)


def save_config(cfg: Config, path: str | os.PathLike) -> None:
    """Write ``cfg`` as YAML (sections and keys in definition order), atomically (its temp file is one
    the run directory's cleanup recognises)."""
    path = Path(path)
    body = yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=False)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, "# charrnn resolved config\n" + body)
    except OSError as e:
        raise UsageError(f"cannot write config {path}: {e.strerror or e}",
                         "check that the directory is writable") from None

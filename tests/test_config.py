"""Tests for charrnn.config: defaults, layering, key/type/range checks, files and diffs."""

import json
from pathlib import Path

import pytest
import yaml

import charrnn
from charrnn import config as C
from charrnn.config import (
    SAFE_ON_RESUME,
    Config,
    diff,
    get,
    load_yaml,
    parse_set,
    resolve,
    resolve_config_path,
    save_config,
    set_value,
    validate,
)
from charrnn.errors import UsageError

REPO = Path(__file__).resolve().parent.parent


def usage_error(fn, *args, **kwargs) -> UsageError:
    """Run fn, expect a UsageError with a one-line message and hint, and return it."""
    with pytest.raises(UsageError) as info:
        fn(*args, **kwargs)
    err = info.value
    assert err.exit_code == 2
    assert "\n" not in str(err) and "\n" not in err.one_line()
    assert str(err) == err.message
    return err


def write(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------- defaults and files


def test_defaults():
    cfg = Config()
    assert (cfg.model.cell, cfg.model.hidden_size, cfg.model.num_layers, cfg.model.dropout) == ("lstm", 256, 2, 0.2)
    assert cfg.optim.lr == 0.003 and cfg.optim.eps == 1e-8
    assert (cfg.optim.schedule, cfg.optim.schedule_length, cfg.optim.decay_fraction) == ("linear", "auto", 0.2)
    assert cfg.train.batch_size == 64 and cfg.train.max_epochs is None and cfg.train.max_time == 0.0
    assert cfg.train.epoch_limit == 20  # auto, with no other limit
    assert cfg.data.encoding == "utf-8"
    validate(cfg)


@pytest.mark.parametrize("train, limit", [
    ({}, 20), ({"max_time": "10m"}, 0), ({"max_steps": 5000}, 0), ({"max_epochs": "AUTO", "max_steps": 1}, 0),
    ({"max_epochs": 3, "max_time": 60}, 3), ({"max_epochs": 0}, 0), ({"max_epochs": None}, 20)])
def test_max_epochs_auto_gives_way_to_the_users_limit(train, limit):
    # A user's --max-time 10m must be the budget: the default 20 epochs used to end such runs early.
    assert Config.from_dict({"train": train}).train.epoch_limit == limit


def test_max_epochs_rejects_what_is_neither_a_count_nor_auto():
    with pytest.raises(UsageError, match=r"train.max_epochs must be >= 0 or auto, got -1") as e:
        Config.from_dict({"train": {"max_epochs": -1}})
    assert "train.max_epochs=auto, the default" in e.value.hint
    with pytest.raises(UsageError, match=r"train.max_epochs must be an integer, got 'often'"):
        Config.from_dict({"train": {"max_epochs": "often"}})


def test_config_has_one_field_per_section_in_order():
    """config/schema.py's SECTIONS names the sections; layers.Config must hold exactly those, in that order."""
    import dataclasses
    fields = [(f.name, f.default_factory) for f in dataclasses.fields(Config)]
    assert fields == list(C.SECTIONS.items())


def test_to_dict_is_plain_and_ordered():
    d = Config().to_dict()
    assert list(d) == ["model", "data", "optim", "train"]
    assert d["model"]["hidden_size"] == 256
    assert json.loads(json.dumps(d)) == d
    assert Config.from_dict(d) == Config()


def test_default_yaml_matches_code():
    assert Config.from_dict(load_yaml(REPO / "configs" / "default.yaml")) == Config()


def test_default_yaml_lists_every_key():
    data = load_yaml(REPO / "configs" / "default.yaml")
    assert {f"{s}.{k}" for s, v in data.items() for k in v} == set(C.KEYS)


def test_gru_yaml():
    cfg = Config.from_dict(load_yaml(REPO / "configs" / "gru.yaml"))
    assert (cfg.model.cell, cfg.model.hidden_size, cfg.model.num_layers) == ("gru", 256, 2)
    assert diff(Config(), cfg) == ["model.cell"]


def test_partial_overlay_and_float_fields_take_ints():
    cfg = Config.from_dict({"model": {"hidden_size": 128}, "optim": {"lr": 1}, "data": None})
    assert cfg.model.hidden_size == 128 and cfg.model.num_layers == 2
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)


def test_yaml_overlay(tmp_path):
    path = write(tmp_path, "model:\n  cell: gru\n  hidden_size: 64\noptim:\n  lr: 3e-3\n")
    cfg = resolve(path)
    assert (cfg.model.cell, cfg.model.hidden_size, cfg.optim.lr) == ("gru", 64, 0.003)
    assert cfg.train == Config().train


def test_empty_yaml_is_defaults(tmp_path):
    assert resolve(write(tmp_path, "# nothing\n")) == Config()


# ---------------------------------------------------------------- precedence


def test_precedence(tmp_path):
    path = write(tmp_path, "model:\n  hidden_size: 64\n  num_layers: 3\noptim:\n  lr: 0.01\n")
    cfg = resolve(path, sets=["model.hidden_size=128", "optim.lr=0.02"],
                  options={"optim.lr": 0.05, "train.seed": None})
    assert cfg.model.num_layers == 3  # YAML over default
    assert cfg.model.hidden_size == 128  # --set over YAML
    assert cfg.optim.lr == 0.05  # option over --set
    assert cfg.train.seed == 1  # None option ignored


def test_later_set_wins():
    assert resolve(sets=["model.hidden_size=8", "model.hidden_size=16"]).model.hidden_size == 16


def test_set_value_returns_validated_copy():
    cfg = Config()
    new = set_value(cfg, "train.max_steps", 100)
    assert new.train.max_steps == 100 and cfg.train.max_steps == 0
    assert "--set" in str(usage_error(set_value, cfg, "optim.lr", 0))


def test_get():
    assert get(Config(), "optim.beta2") == 0.999
    assert "did you mean 'optim.beta2'" in usage_error(get, Config(), "optim.beta3").hint


# ---------------------------------------------------------------- unknown keys


def test_unknown_key_hint(tmp_path):
    path = write(tmp_path, "model:\n  hiden_size: 12\n")
    err = usage_error(resolve, path)
    assert "'model.hiden_size'" in str(err) and str(path) in str(err)
    assert err.hint == "did you mean 'model.hidden_size'?"


def test_unknown_key_in_set_names_source():
    err = usage_error(resolve, sets=["model.hiden_size=12"])
    assert "--set" in str(err) and "model.hidden_size" in err.hint


def test_unknown_option_names_source():
    assert "the command-line options" in str(usage_error(resolve, options={"model.size": 3}))


def test_key_in_wrong_section_suggests_right_one():
    assert usage_error(Config.from_dict, {"model": {"lr": 0.1}}).hint == "did you mean 'optim.lr'?"


def test_char_rnn_names_suggest_ours():
    err = usage_error(resolve, sets=["optim.learning_rate=1"])
    assert err.hint == "did you mean 'optim.lr'?"
    assert "model.hidden_size" in usage_error(parse_set, ["rnn_size=1"]).hint


def test_unknown_key_without_close_match_lists_section_keys():
    assert "hidden_size" in usage_error(Config.from_dict, {"model": {"zzzz": 1}}).hint


def test_unknown_section():
    err = usage_error(Config.from_dict, {"modle": {"hidden_size": 1}}, source="x.yaml")
    assert "'modle'" in str(err) and "x.yaml" in str(err)
    assert err.hint == "did you mean 'model'?"
    assert "model.hidden_size" in usage_error(Config.from_dict, {"hidden_size": 1}).hint
    assert "valid sections" in usage_error(Config.from_dict, {"qqq": {}}).hint


def test_section_must_be_mapping():
    assert "model" in str(usage_error(Config.from_dict, {"model": 3}))


# ---------------------------------------------------------------- types


@pytest.mark.parametrize("value", ["12a", 2.5, 256.0, True, None, [1]])
def test_int_field_rejects_non_int(value):
    err = usage_error(Config.from_dict, {"model": {"hidden_size": value}})
    assert str(err).startswith(f"model.hidden_size must be an integer, got {value!r}")


def test_wrong_type_message_exact():
    err = usage_error(resolve, sets=["model.hidden_size=12a"])
    assert str(err) == "model.hidden_size must be an integer, got '12a' in --set"


@pytest.mark.parametrize("value", ["fast", True, None, float("nan"), float("inf")])
def test_float_field_rejects(value):
    err = usage_error(Config.from_dict, {"optim": {"lr": value}})
    assert str(err).startswith("optim.lr must be")


def test_float_field_accepts_scientific_string():
    assert Config.from_dict({"optim": {"eps": "1e-6"}}).optim.eps == 1e-6


def test_str_field_rejects_number():
    err = usage_error(Config.from_dict, {"model": {"cell": 5}})
    assert "model.cell must be a string" in str(err) and "lstm" in err.hint


# ---------------------------------------------------------------- ranges


@pytest.mark.parametrize("key,value", [
    ("optim.lr", 0), ("optim.lr", -1e-3), ("model.dropout", 1.0), ("model.dropout", -0.1),
    ("model.hidden_size", 0), ("model.num_layers", 0), ("train.batch_size", 0),
    ("train.seq_len", -5), ("model.embedding_size", -1), ("model.init_scale", 0),
    ("data.val_fraction", -0.1), ("data.test_fraction", -0.1),
    ("model.cell", "transformer"), ("optim.optimizer", "adamw"), ("optim.schedule", "exponential"),
    ("data.errors", "ignore"), ("data.encoding", "klingon-8"), ("data.encoding", "rot13"),
    ("optim.beta1", 1.0), ("optim.beta2", -0.1), ("optim.alpha", 1.0), ("optim.momentum", 1.5),
    ("optim.eps", 0), ("optim.grad_clip", -1), ("optim.grad_clip_value", -1),
    ("optim.weight_decay", -1), ("optim.warmup_steps", -1), ("optim.decay_every", 0),
    ("optim.decay_rate", 0), ("optim.decay_rate", 1.5), ("optim.decay_fraction", 0),
    ("optim.decay_fraction", 1.2), ("optim.min_lr", -1),
    ("optim.min_lr", 0.01), ("train.max_steps", -1), ("train.max_epochs", -1),
    ("train.max_time", -1), ("train.log_every", 0), ("train.eval_every", -1),
    ("train.eval_max_chars", -1), ("train.sample_every", -1), ("train.sample_length", -1),
    ("train.temperature", -0.5), ("train.checkpoint_every", -1), ("train.keep_last", -1),
    ("train.max_bad_steps", 0), ("train.seed", -1), ("train.seed", 2**32),
])
def test_out_of_range(key, value):
    err = usage_error(resolve, sets=[f"{key}={value}"])
    assert str(err).startswith(f"{key} must be") and str(err).endswith("in --set")
    assert err.hint


def test_fractions_must_leave_training_text():
    err = usage_error(Config.from_dict, {"data": {"val_fraction": 0.5, "test_fraction": 0.5}})
    assert "val_fraction + data.test_fraction must be < 1" in str(err)


def test_choice_typo_hint():
    assert "did you mean 'gru'" in usage_error(resolve, sets=["model.cell=GRU"]).hint


@pytest.mark.parametrize("key", ["train.eval_every", "train.sample_every",
                                 "train.checkpoint_every", "train.keep_last", "optim.grad_clip"])
def test_zero_means_off_is_allowed(key):
    assert get(resolve(sets=[f"{key}=0"]), key) == 0


def test_other_encodings_allowed():
    assert resolve(sets=["data.encoding=latin-1", "data.errors=replace"]).data.encoding == "latin-1"


# ---------------------------------------------------------------- max_time


@pytest.mark.parametrize("value,seconds", [
    ("90s", 90.0), ("10m", 600.0), ("1.5h", 5400.0), ("2d", 172800.0), ("45", 45.0),
    (30, 30.0), (2.5, 2.5), ("0", 0.0), ("1.5 H", 5400.0),
])
def test_max_time_units(value, seconds):
    cfg = Config.from_dict({"train": {"max_time": value}})
    assert cfg.train.max_time == seconds and isinstance(cfg.train.max_time, float)


def test_max_time_via_set():
    assert resolve(sets=["train.max_time=10m"]).train.max_time == 600.0


@pytest.mark.parametrize("value", ["10x", "ten minutes", "m", "", True, [1]])
def test_max_time_bad(value):
    err = usage_error(Config.from_dict, {"train": {"max_time": value}})
    assert str(err).startswith("train.max_time must be seconds or a duration")


# ---------------------------------------------------------------- parse_set


def test_parse_set_values():
    assert parse_set(["model.hidden_size=512", "train.max_time=10m", "optim.lr=3e-3",
                      "model.cell=gru", "data.encoding = latin-1"]) == {
        "model": {"hidden_size": 512, "cell": "gru"}, "train": {"max_time": "10m"},
        "optim": {"lr": 0.003}, "data": {"encoding": "latin-1"}}
    assert parse_set([]) == {}


@pytest.mark.parametrize("item", ["model.hidden_size", "=3", "hidden_size=3", "a.b.c=3",
                                  ".x=1", "model.=1", "model.cell="])
def test_parse_set_malformed(item):
    assert repr(item) in str(usage_error(parse_set, [item]))


# ---------------------------------------------------------------- load_yaml


def test_yaml_syntax_error_has_line(tmp_path):
    path = write(tmp_path, "model:\n  hidden_size: 64\n  cell: [gru\ntrain:\n  seed: 1\n")
    err = usage_error(load_yaml, path)
    assert str(path) in str(err) and "line 4" in str(err)


def test_yaml_bad_indent_has_line(tmp_path):
    err = usage_error(load_yaml, write(tmp_path, "model:\n  cell: gru\n   hidden_size: 1\n"))
    assert "line 3" in str(err)


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_yaml_not_a_mapping(tmp_path, text):
    assert "must hold a mapping" in str(usage_error(load_yaml, write(tmp_path, text)))


def test_yaml_missing_and_directory(tmp_path):
    assert "not found" in str(usage_error(load_yaml, tmp_path / "nope.yaml"))
    assert "directory" in str(usage_error(load_yaml, tmp_path))


def test_yaml_not_utf8(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_bytes(b"model:\n  cell: \xff\xfe\n")
    assert "UTF-8" in str(usage_error(load_yaml, path))


def test_yaml_is_safe_loaded(tmp_path):
    path = write(tmp_path, "model: !!python/object/apply:os.system ['echo hi']\n")
    usage_error(load_yaml, path)


# ---------------------------------------------------------------- save, diff, bundled configs


def test_save_config_round_trip(tmp_path):
    cfg = resolve(sets=["model.cell=gru", "optim.eps=1e-7", "train.max_time=1.5h"])
    path = tmp_path / "run" / "config.yaml"
    save_config(cfg, path)
    assert Config.from_dict(load_yaml(path)) == cfg
    assert list(yaml.safe_load(path.read_text())) == ["model", "data", "optim", "train"]
    assert [p.name for p in path.parent.iterdir()] == ["config.yaml"]  # no temp file left
    save_config(Config(), path)  # overwrite in place
    assert Config.from_dict(load_yaml(path)) == Config()


def test_diff_and_safe_on_resume():
    a = Config()
    b = resolve(sets=["train.max_steps=10", "model.hidden_size=8", "train.temperature=1.0"])
    changed = diff(a, b)
    assert changed == ["model.hidden_size", "train.max_steps", "train.temperature"]
    assert [k for k in changed if k not in SAFE_ON_RESUME] == ["model.hidden_size"]
    assert diff(a, Config()) == []
    assert SAFE_ON_RESUME <= set(C.KEYS) and len(SAFE_ON_RESUME) == 13
    assert not any(k.startswith(("model.", "optim.", "data.")) for k in SAFE_ON_RESUME)


def test_resolve_bundled_config_path():
    bundled = Path(charrnn.__file__).parent / "_bundled" / "configs" / "gru.yaml"
    assert resolve_config_path("gru") == bundled
    assert resolve_config_path("gru.yaml") == bundled
    assert "default" in C.bundled_config_names() and "gru" in C.bundled_config_names()
    assert resolve("gru").model.cell == "gru"


def test_resolve_config_path_prefers_existing_file(tmp_path):
    path = write(tmp_path, "model:\n  cell: rnn\n", name="gru.yaml")
    assert resolve_config_path(path) == path
    assert resolve(str(path)).model.cell == "rnn"


def test_resolve_config_path_unknown():
    err = usage_error(resolve_config_path, "gruu")
    assert "'gruu'" in str(err) and "gru" in err.hint and "default" in err.hint
    assert "bundled configs" in usage_error(resolve_config_path, "no/such/file.yaml").hint

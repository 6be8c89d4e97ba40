"""The `charrnn` command line through click's CliRunner: every command's help, a tiny train end to end,
option precedence, every `sample` option, `eval` and `info` (table and --json)."""
import json
import math
import re
import subprocess
import sys

import numpy as np
import pytest
import yaml
from conftest import TINY, step_records

import charrnn
from charrnn.checkpoints import npz as checkpoint

COMMANDS = ["train", "sample", "eval", "info", "export"]


# -- version, help, import cost ---------------------------------------------------------------------
def test_version(cli):
    r = cli("--version")
    assert r.exit_code == 0
    assert charrnn.__version__ in r.stdout


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help(cli, command):
    r = cli(*([command] if command else []), "--help")
    assert r.exit_code == 0, r.output
    assert "Usage:" in r.stdout
    if command is None:
        for c in COMMANDS:
            assert c in r.stdout


def test_import_is_light_and_help_light():
    """`import charrnn` must not pull numpy/numba in; the API names resolve lazily; `charrnn --help` (every
    command's) loads neither, so it answers at once (measured, not timed here: ~0.3 s idle)."""
    code = ("import sys, charrnn; assert 'numpy' not in sys.modules, 'numpy imported'; "
            "assert 'numba' not in sys.modules; from charrnn import load, train, Model; "
            "assert callable(train) and callable(load) and isinstance(Model, type); "
            "import charrnn.training.trainer; assert charrnn.train is train, charrnn.train")
    subprocess.run([sys.executable, "-c", code], check=True)
    code = ("import sys\nfrom charrnn.cli import main\nfor argv in (['--help'], ['train', '--help'], "
            "['sample', '--help']):\n    try:\n        main(argv)\n    except SystemExit as e:\n"
            "        assert e.code == 0, e.code\n"
            "heavy = sorted({'numpy', 'numba', 'scipy'} & set(sys.modules))\nassert not heavy, heavy\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and "Usage" in r.stdout, r.stderr


def test_unknown_attribute():
    with pytest.raises(AttributeError):
        charrnn.no_such_thing  # noqa: B018


# -- train end to end ---------------------------------------------------------------------------------
def test_train_writes_every_file(cli, corpus, tmp_path):
    run = tmp_path / "run"
    r = cli("train", corpus, "--out", run, *TINY, "--max-steps", 20, "--eval-every", 10, "--sample-every", 10,
            "--checkpoint-every", 5, "--set", "train.log_every=5", "--keep-last", 0)
    assert r.exit_code == 0, r.output
    # plain mode (not a terminal): header lines, step lines, sample markers, the best checkpoint
    assert "model: LSTM 1x16" in r.stdout
    assert re.search(r"^step 10 \| epoch 1 \| loss \d+\.\d+ \| val \d+\.\d+", r.stdout, re.M)
    assert "--- sample @ step 10 ---" in r.stdout
    assert f"best checkpoint: {run / 'best.npz'}" in r.stdout
    assert "\x1b[" not in r.stdout  # no terminal control sequences when not a tty
    for name in ("config.yaml", "metrics.jsonl", "samples.txt", "best.npz", "last.npz"):
        assert (run / name).is_file(), name
    steps = sorted(p.name for p in run.glob("step*.npz"))
    assert any(re.fullmatch(r"step10_val\d+\.\d{4}\.npz", n) for n in steps), steps
    assert any(re.fullmatch(r"step20_val\d+\.\d{4}\.npz", n) for n in steps), steps
    assert "step5.npz" in steps and "step15.npz" in steps  # checkpoint_every without a val loss
    records = step_records(run)
    assert [m["step"] for m in records] == [5, 10, 15, 20]
    for m in records:
        assert list(m)[:6] == ["step", "epoch", "train_loss", "lr", "chars_per_sec", "elapsed_s"]
        assert ("val_loss" in m) == (m["step"] % 10 == 0)
        assert m["epoch"] == 1 and m["chars_per_sec"] > 0 and m["elapsed_s"] > 0
        # the default schedule holds lr (3e-3), then decays linearly to 0 over the last 20 % of the 20 steps
        assert m["lr"] == (0.003 if m["step"] <= 16 else pytest.approx(0.0, abs=1e-12))
        assert math.isfinite(m["train_loss"])
    samples = (run / "samples.txt").read_text(encoding="utf-8")
    assert re.findall(r"^=== step (\d+) ===$", samples, re.M) == ["10", "20"]
    # best.npz is the checkpoint with the lowest val loss; last.npz the newest
    _, last = checkpoint.load(run / "last.npz")
    _, best = checkpoint.load(run / "best.npz")
    assert last["progress"]["step"] == 20
    vals = [m["val_loss"] for m in records if "val_loss" in m]
    assert best["losses"]["val_loss"] == pytest.approx(min(vals))


def test_train_default_out_dir_is_runs_corpus_stem(cli, corpus, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = cli("train", corpus, *TINY, "--max-steps", 2, "--eval-every", 0, "--sample-every", 0)
    assert r.exit_code == 0, r.output
    assert (tmp_path / "runs" / "corpus" / "last.npz").is_file()


def test_option_precedence(cli, corpus, tmp_path):
    """defaults < --config YAML < --set < direct options, as saved in config.yaml."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model:\n  hidden_size: 24\n  num_layers: 2\n  dropout: 0.1\n"
                   "optim:\n  lr: 0.005\n  optimizer: rmsprop\n"
                   "train:\n  seq_len: 12\n  batch_size: 4\n  seed: 11\n")
    run = tmp_path / "run"
    r = cli("train", corpus, "--out", run, "--config", cfg, "--plain", "--max-steps", 2, "--sample-every", 0,
            "--eval-every", 0,
            "--set", "model.num_layers=1", "--set", "optim.lr=0.003", "--set", "train.seed=12",
            "--lr", 0.004)
    assert r.exit_code == 0, r.output
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model"]["hidden_size"] == 24        # YAML over default
    assert saved["model"]["dropout"] == 0.1
    assert saved["optim"]["optimizer"] == "rmsprop"
    assert saved["model"]["num_layers"] == 1          # --set over YAML
    assert saved["train"]["seed"] == 12
    assert saved["optim"]["lr"] == 0.004              # direct option over --set and YAML
    assert saved["train"]["max_steps"] == 2
    assert saved["model"]["cell"] == "lstm"           # default kept
    assert saved["train"]["seq_len"] == 12
    _, meta = checkpoint.load(run / "last.npz")
    assert meta["config"] == saved                    # the checkpoint holds the same resolved config


def test_bundled_config_by_name(cli, corpus, tmp_path):
    run = tmp_path / "run"
    r = cli("train", corpus, "--out", run, "--config", "tiny", "--hidden", 8, "--layers", 1, "--batch-size", 2,
            "--seq-len", 8, "--max-steps", 1, "--plain", "--sample-every", 0, "--eval-every", 0)
    assert r.exit_code == 0, r.output
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["optim"]["lr"] == 0.004 and saved["model"]["hidden_size"] == 8


# -- sample -------------------------------------------------------------------------------------------
def sample(cli, run, *args):
    r = cli("sample", run, *args)
    assert r.exit_code == 0, r.output
    return r.stdout


def test_sample_same_seed_same_text(cli, trained):
    a = sample(cli, trained, "-n", 200, "--seed", 5)
    assert a == sample(cli, trained, "-n", 200, "--seed", 5)
    assert a != sample(cli, trained, "-n", 200, "--seed", 6)
    assert len(a) == 201 and a.endswith("\n")


def test_sample_length_and_checkpoint_file(cli, trained):
    out = sample(cli, trained / "last.npz", "--length", 37, "--seed", 1)
    assert len(out) == 38
    assert sample(cli, trained, "-n", 37, "--seed", 1) == sample(cli, trained / "best.npz", "-n", 37, "--seed", 1)


def test_sample_argmax_deterministic_and_top_k_1(cli, trained):
    a = sample(cli, trained, "-n", 100, "--argmax")
    assert a == sample(cli, trained, "-n", 100, "--argmax")
    assert a == sample(cli, trained, "-n", 100, "--top-k", 1, "--seed", 3)
    assert a == sample(cli, trained, "-n", 100, "--top-k", 1, "--seed", 4)
    assert a == sample(cli, trained, "-n", 100, "-t", 0, "--seed", 9)  # temperature 0 is greedy too


def test_sample_prime_echo(cli, trained):
    out = sample(cli, trained, "-p", "the quick", "-n", 50, "--seed", 2)
    assert out.startswith("the quick") and len(out) == len("the quick") + 51
    bare = sample(cli, trained, "-p", "the quick", "-n", 50, "--seed", 2, "--no-echo")
    assert len(bare) == 51 and out == "the quick" + bare


def test_sample_prime_file(cli, trained, tmp_path):
    f = tmp_path / "prime.txt"
    f.write_text("to be or not", encoding="utf-8")
    a = sample(cli, trained, "--prime-file", f, "-n", 40, "--seed", 1)
    assert a == sample(cli, trained, "-p", "to be or not", "-n", 40, "--seed", 1)
    assert a.startswith("to be or not")


def test_sample_prime_unknown_skip(cli, trained):
    out = sample(cli, trained, "-p", "the QUICK fox", "--prime-unknown", "skip", "-n", 20, "--seed", 1)
    assert out == sample(cli, trained, "-p", "the  fox", "-n", 20, "--seed", 1)


def test_sample_temperature_top_k_top_p_change_text(cli, trained):
    base = sample(cli, trained, "-n", 300, "--seed", 8)
    hot = sample(cli, trained, "-n", 300, "--seed", 8, "-t", 1.5)
    topk = sample(cli, trained, "-n", 300, "--seed", 8, "--top-k", 3)
    topp = sample(cli, trained, "-n", 300, "--seed", 8, "--top-p", 0.5)
    assert len({base, hot, topk, topp}) == 4
    # each filtered run is itself reproducible
    assert topp == sample(cli, trained, "-n", 300, "--seed", 8, "--top-p", 0.5)
    assert topk == sample(cli, trained, "-n", 300, "--seed", 8, "--top-k", 3)


def test_sample_top_k_restricts_choices(cli, trained):
    """With top-k 2 every character is one of the model's two likeliest at that point."""
    m = charrnn.load(trained)
    text = m.sample(200, top_k=2, seed=3, prime="t", echo=False)
    ids = m.vocab.encode("t" + text).astype(np.int64)
    logits, _ = m.net.logits(ids[None, :-1], m.net.zero_state(1))
    top2 = np.argsort(-logits[0], axis=-1)[:, :2]
    assert all(ids[i + 1] in top2[i] for i in range(len(text)))


def test_sample_num_samples(cli, trained):
    out = sample(cli, trained, "-N", 3, "-n", 80, "--seed", 4, "-p", "the ")
    parts = re.split(r"^--- sample \d ---$\n", out, flags=re.M)
    assert parts[0] == "" and len(parts) == 4
    streams = [p.rstrip("\n") for p in parts[1:]]
    assert all(s.startswith("the ") and len(s) == 84 for s in streams)
    assert len(set(streams)) == 3
    # stream 0 of a batch equals the single-stream run with the same seed
    assert streams[0] + "\n" == sample(cli, trained, "-n", 80, "--seed", 4, "-p", "the ")


def test_sample_output_file(cli, trained, tmp_path):
    dest = tmp_path / "out.txt"
    r = cli("sample", trained, "-n", 60, "--seed", 1, "--output", dest)
    assert r.exit_code == 0, r.output
    assert r.stdout == ""
    assert "wrote 1 sample" in r.stderr
    assert dest.read_text(encoding="utf-8") == sample(cli, trained, "-n", 60, "--seed", 1)


def test_sample_without_seed_varies(cli, trained):
    outs = {sample(cli, trained, "-n", 100) for _ in range(3)}
    assert len(outs) > 1


# -- eval ---------------------------------------------------------------------------------------------
def test_eval_json(cli, trained, tmp_path):
    f = tmp_path / "held.txt"
    f.write_text("the quick brown fox jumps over the lazy dog.\nto be or not to be.\n", encoding="utf-8")
    r = cli("eval", trained, f, "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert {"loss", "bpc", "perplexity", "chars"} <= set(d)
    n = len(f.read_text(encoding="utf-8"))
    assert d["chars"] == n
    assert d["bpc"] == pytest.approx(d["loss"] / math.log(2))
    assert d["perplexity"] == pytest.approx(math.exp(d["loss"]))
    assert 0 < d["loss"] < math.log(len(charrnn.load(trained).vocab))  # better than uniform
    # the same number as the Python API
    assert d["loss"] == pytest.approx(charrnn.load(trained).loss(f.read_text(encoding="utf-8")), rel=1e-6)
    # table mode shows the same numbers
    table = cli("eval", trained, f)
    assert table.exit_code == 0 and f"{d['loss']:.4f}" in table.stdout and "perplexity" in table.stdout


@pytest.mark.parametrize("which", ["val", "test"])
def test_eval_split(cli, trained, which):
    r = cli("eval", trained, "--split", which, "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["chars"] > 16 and math.isfinite(d["loss"]) and d["loss"] > 0
    if which == "val":
        _, meta = checkpoint.load(trained / "best.npz")
        # eval streams the split as one sequence; training evaluated it as B streams: close, not equal
        assert d["loss"] == pytest.approx(meta["losses"]["val_loss"], rel=0.15)


def test_eval_needs_file_or_split(cli, trained, tmp_path):
    r = cli("eval", trained)
    assert r.exit_code == 2 and "exactly one of FILE or --split" in r.stderr


# -- info ---------------------------------------------------------------------------------------------
def test_info_json(cli, trained):
    r = cli("info", trained, "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["model"] == {"cell": "lstm", "num_layers": 1, "hidden_size": 16, "embedding_size": 0,
                          "parameters": d["model"]["parameters"]}
    V = d["vocab"]["size"]
    assert d["model"]["parameters"] == 4 * 16 * (V + 16 + 2) + V * 16 + V
    assert d["vocab"]["chars"] == charrnn.load(trained).vocab.chars
    assert d["training"]["step"] in (20, 40, 60) and d["training"]["skipped_steps"] == 0
    assert d["training"]["best_val_loss"] == pytest.approx(d["training"]["val_loss"])
    assert d["format_version"] == checkpoint.FORMAT_VERSION
    assert d["config"]["model"]["hidden_size"] == 16
    assert d["path"].endswith("best.npz")


def test_info_table(cli, trained):
    r = cli("info", trained / "last.npz")
    assert r.exit_code == 0, r.output
    for text in ("LSTM 1x16", "parameters", "vocabulary", "step / epoch", "60 / 1", "best val loss",
                 "model.hidden_size", "train.max_steps"):
        assert text in r.stdout, text
    # a null shown as a config file spells it: max_epochs auto, forget_bias null (not Python's None)
    assert re.search(r"train\.max_epochs\W+auto", r.stdout) and re.search(r"model\.forget_bias\W+null", r.stdout)
    assert "None" not in r.stdout

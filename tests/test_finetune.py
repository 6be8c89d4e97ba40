"""Fine-tuning: `charrnn train NEW.txt --init-from CHECKPOINT` (and `init_from=` in the API) starts a new
run from a checkpoint's weights, keeping its vocabulary; unknown characters are refused, added
(--extend-vocab) or replaced (--errors replace); `info` shows where the run came from."""
import json

import numpy as np
import pytest
from conftest import ENGLISH_LINES, TINY, make_text, one_line_error, snapshot, step_records

import charrnn
from charrnn.training import finetune
from charrnn.checkpoints import store
from charrnn.data.corpus import Corpus, Vocab
from charrnn.errors import UsageError
from charrnn.engine.params import Params, Shape, init_params

SHOUTING = make_text([line.upper() for line in ENGLISH_LINES], 60, seed=3)  # 26 letters the model lacks
FT = ["--plain", "--max-steps", 20, "--eval-every", 10, "--sample-every", 0]


def metrics(run):
    return step_records(run)


def test_fine_tune_starts_from_the_weights_with_a_fresh_optimizer(cli, trained, tmp_path):
    src = charrnn.load(trained)
    corpus = src.meta["corpus"]["path"]
    ft, fresh = tmp_path / "ft", tmp_path / "fresh"
    r = cli("train", corpus, "--init-from", trained, "--out", ft, *FT, "--set", "train.log_every=1")
    assert r.exit_code == 0, r.output
    assert "init from" in r.stdout and str(trained / "best.npz") in r.stdout
    r = cli("train", corpus, "--out", fresh, *TINY, *FT, "--set", "train.log_every=1", "--seed", 7, "--lr", 0.01)
    assert r.exit_code == 0, r.output
    # the same text: the fine-tuned run begins where the trained model is, far below a fresh start
    first_ft, first_fresh = metrics(ft)[0]["train_loss"], metrics(fresh)[0]["train_loss"]
    assert first_ft < src.meta["losses"]["train_loss"] + 0.3 < first_fresh
    got = charrnn.load(ft / "last.npz")
    assert got.vocab == src.vocab and got.net.shape == src.net.shape
    assert got.meta["progress"]["step"] == 20  # a new run at step 0, not the source's step 60 + 20
    arrays = np.load(ft / "last.npz", allow_pickle=False)
    assert int(arrays["optim.t"][0]) == 20  # Adam's step count restarted: fresh moments
    o = got.meta["init_from"]
    assert o["path"] == str((trained / "best.npz").resolve()) and o["step"] == src.meta["progress"]["step"]
    assert o["checksum"] == src.meta["checksum"] and o["vocab_added"] == ""
    # the source's model/optim/train settings are the base; options on top
    assert got.meta["config"]["optim"]["lr"] == src.meta["config"]["optim"]["lr"]
    assert got.meta["config"]["train"]["max_steps"] == 20


def test_unknown_characters_are_listed(cli, trained, tmp_path):
    new = tmp_path / "new.txt"
    new.write_text(SHOUTING, encoding="utf-8")
    before = snapshot(tmp_path)
    line = one_line_error(cli("train", new, "--init-from", trained, "--out", tmp_path / "ft", *FT))
    assert "26 character(s) not in the vocabulary of" in line
    assert "'A', 'B', 'C'" in line and "and 18 more" in line and "--extend-vocab" in line and "--errors replace" in line
    assert snapshot(tmp_path) == before  # no run directory left behind


def test_extend_vocab_keeps_old_rows_and_adds_new_ones(cli, trained, tmp_path):
    new = tmp_path / "new.txt"
    new.write_text(SHOUTING + make_text(ENGLISH_LINES, 30), encoding="utf-8")
    ft = tmp_path / "ft"
    r = cli("train", new, "--init-from", trained, "--out", ft, *FT, "--extend-vocab")
    assert r.exit_code == 0, r.output
    src, got = charrnn.load(trained), charrnn.load(ft)
    assert set(got.vocab.chars) == set(src.vocab.chars) | set(SHOUTING)
    assert got.meta["init_from"]["vocab_added"] == "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    r = cli("info", ft)
    assert "fine-tuned from" in r.stdout and "added 26 chars" in r.stdout
    d = json.loads(cli("info", ft, "--json").stdout)
    assert d["init_from"]["path"] == str((trained / "best.npz").resolve())
    assert cli("sample", ft, "-n", 50, "--seed", 1, "-p", "THE ").exit_code == 0  # new characters usable


def test_transfer_places_rows_by_character():
    old = Vocab("\n abc")
    new = Vocab(old.chars + "AZ")  # 'A' and 'Z' sort before 'a': every old letter moves to a new id
    for E in (0, 4):
        src_shape, dst_shape = Shape("lstm", old.size, 8, 2, E), Shape("lstm", new.size, 8, 2, E)
        p = Params(src_shape)
        init_params(p, np.random.default_rng(0))
        src = store.Loaded(charrnn.engine.model.Model(src_shape, p), old, {}, {}, None)
        dst = Params(dst_shape)
        init_params(dst, np.random.default_rng(1))
        fresh = dst.flat.copy()
        finetune.transfer(dst, src, new)
        for c in old.chars:
            i, j = old.chars.index(c), new.chars.index(c)
            assert (dst["decoder.weight"][j] == p["decoder.weight"][i]).all()
            assert dst["decoder.bias"][j] == p["decoder.bias"][i]
            if E:
                assert (dst["encoder.weight"][j] == p["encoder.weight"][i]).all()
            else:
                assert (dst["rnn.weight_ih_l0"][:, j] == p["rnn.weight_ih_l0"][:, i]).all()
        for c in "AZ":
            j = new.chars.index(c)
            assert dst["decoder.bias"][j] == p["decoder.bias"].min()
            fresh_dst = Params(dst_shape, flat=fresh)
            assert (dst["decoder.weight"][j] == fresh_dst["decoder.weight"][j]).all()  # its fresh init
        for name in ("rnn.weight_hh_l0", "rnn.weight_ih_l1", "rnn.bias_ih_l1"):
            assert (dst[name] == p[name]).all()


def test_errors_replace_substitutes_and_records_it(cli, trained, tmp_path):
    new = tmp_path / "new.txt"
    new.write_text(SHOUTING + make_text(ENGLISH_LINES, 30), encoding="utf-8")
    ft = tmp_path / "ft"
    r = cli("train", new, "--init-from", trained, "--out", ft, *FT, "--errors", "replace")
    assert r.exit_code == 0, r.output
    assert "replaced by ' '" in r.stderr  # the vocabulary has no U+FFFD or '?': a space stands in
    got = charrnn.load(ft)
    assert got.vocab == charrnn.load(trained).vocab
    assert "replaced by ' '" in got.meta["init_from"]["replaced"]
    # the run's text is the model's view of it, so its own splits evaluate and it resumes
    assert cli("eval", ft, "--split", "val").exit_code == 0
    r = cli("train", "--resume", ft, "--max-steps", 30, "--plain")
    assert r.exit_code == 0, r.output
    assert charrnn.load(ft / "last.npz").meta["init_from"] == got.meta["init_from"]


def test_fit_corpus_drops_when_nothing_can_stand_in():
    vocab = Vocab("ab")
    text = "abXbaY"
    corpus = Corpus(Vocab(text), Vocab(text).encode(text), None, "", len(text))
    fitted, added, note = finetune.fit_corpus(corpus, vocab, replace=True)
    assert fitted.vocab.decode(fitted.data) == "abba" and fitted.n_chars == 4 and added == []
    assert "2 occurrence(s) of 2 character(s)" in note and "dropped" in note
    with pytest.raises(UsageError, match="2 character"):
        finetune.fit_corpus(corpus, vocab)


def test_api_fine_tune(trained, tmp_path):
    src = charrnn.load(trained)
    best = charrnn.train(src.meta["corpus"]["path"], {"train": {"max_steps": 10, "eval_every": 5, "sample_every": 0}},
                         tmp_path / "ft", init_from=trained, live=False)
    assert charrnn.load(best).meta["init_from"]["step"] == src.meta["progress"]["step"]
    new = tmp_path / "new.txt"
    new.write_text(SHOUTING, encoding="utf-8")
    best = charrnn.train(new, {"train": {"max_steps": 5, "eval_every": 5, "sample_every": 0}}, tmp_path / "ft2",
                         init_from=trained, extend_vocab=True, live=False)
    assert charrnn.load(best).vocab.size == src.vocab.size + 26


@pytest.mark.parametrize(("args", "needle"), [
    (["--init-from", "{tmp}/nope.npz"], "does not exist"),
    (["--init-from", "{trained}", "--hidden", "32"], "cannot change model.hidden_size when fine-tuning"),
    (["--init-from", "{trained}", "--model", "gru"], "cannot change model.cell"),
    (["--init-from", "{trained}", "--resume", "{trained}"], "use one of them"),
    (["--extend-vocab"], "--extend-vocab only applies when fine-tuning"),
])
def test_bad_fine_tune_options(cli, trained, tmp_path, args, needle):
    corpus = charrnn.load(trained).meta["corpus"]["path"]
    args = [a.format(tmp=tmp_path, trained=trained) for a in args]
    line = one_line_error(cli("train", corpus, "--out", tmp_path / "ft", *FT, *args))
    assert needle in line
    assert not (tmp_path / "ft").exists()


def test_fine_tuning_into_the_source_run_is_refused(cli, trained, tmp_path):
    corpus = charrnn.load(trained).meta["corpus"]["path"]
    before = snapshot(trained)
    for extra in ([], ["--force"]):
        line = one_line_error(cli("train", corpus, "--init-from", trained, "--out", trained, *FT, *extra))
        assert "the checkpoint this run starts from" in line
    assert snapshot(trained) == before


@pytest.mark.parametrize(("edit", "field"), [
    (lambda m: m.update(init_from="runs/x"), "(init_from)"),
    (lambda m: m["corpus"].update(sources="a.txt"), "(corpus.sources)"),
    (lambda m: m["corpus"].update(files=[1, 2]), "(corpus.files)"),
])
def test_edited_origin_or_sources_are_refused_in_one_line(cli, trained, tmp_path, edit, field):
    from charrnn.checkpoints import npz as checkpoint
    arrays, meta = checkpoint.load(trained / "best.npz")
    meta = {k: v for k, v in meta.items() if k not in ("checksum", "format_version")}
    edit(meta)
    checkpoint.save(tmp_path / "edited.npz", arrays, meta)
    for args in (("info",), ("eval", "--split", "val"), ("export", "-f", "onnx", "-o", tmp_path / "x.onnx")):
        line = one_line_error(cli(args[0], tmp_path / "edited.npz", *args[1:]))
        assert "meta is missing or has a bad field " + field in line, line
    line = one_line_error(cli("train", "--resume", tmp_path / "edited.npz", "--out", tmp_path / "r", "--plain"))
    assert field in line

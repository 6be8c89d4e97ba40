"""`charrnn activations` and `charrnn eval --per-char`: features, unit choice, surprisal against eval,
the HTML page (parses, self-contained, one span per character), the PNG, the terminal view, bad input."""
import json
from html.parser import HTMLParser

import numpy as np
import pytest
from conftest import one_line_error

from charrnn.insight import activations as act
from charrnn.checkpoints import store
from charrnn.sampling.generate import evaluate
from charrnn.engine.model import Model
from charrnn.engine.params import Shape, init_params


class Page(HTMLParser):
    """Collects tags, attributes and the text of every .txt block's spans."""

    def __init__(self):
        super().__init__()
        self.tags, self.urls, self.blocks, self._in = [], [], [], 0

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        a = dict(attrs)
        self.urls += [v for k, v in attrs if k in ("src", "href") and v]
        if tag == "div" and a.get("class") == "txt":
            self.blocks.append([])
        if tag == "span" and self._in:  # the newline mark inside a character's span
            self._in += 1
        elif tag == "span" and self.blocks and a.get("class", "")[:1] in "ds" and a.get("class") != "scale":
            self._in = 1
            self.blocks[-1].append("")

    def handle_endtag(self, tag):
        if tag == "span" and self._in:
            self._in -= 1

    def handle_data(self, data):
        if self._in and self.blocks:
            self.blocks[-1][-1] += data


def test_features():
    text = 'ab "cd" (e[f])\nxy'
    f = act.features(text)
    inside = [text[t] for t in range(len(text)) if f["inside quotes"][t]]
    assert "".join(inside) == '"cd'  # on after the opening quote, off at the closing one
    assert f["position in line"][text.index("\n")] == 0 and f["position in line"][-1] == 2
    assert f["bracket depth"][text.index("[")] == 2 and f["bracket depth"][-1] == 0


def test_top_units_are_the_most_correlated():
    """A unit that is (by construction) the column count must be found first by --top."""
    m = Model(Shape("rnn", 5, 6, 1))
    init_params(m.params, np.random.default_rng(0), 0.3)
    text = "ab ab\nabba ab\nb\nab ab ba\n" * 3
    from charrnn.insight import forward64 as inside
    from charrnn.data.corpus import Vocab
    ins = inside.forward(m.params, Vocab(text).encode(text).reshape(1, -1))
    ins.h[0][:, 0, 4] = act.features(text)["position in line"] * 0.01 + 0.2
    units = act.pick_units(ins, text, None, 2, None, None)
    assert (units[0].layer, units[0].kind, units[0].index) == (0, "h", 4)
    assert units[0].note == "r = +1.00 with position in line"
    assert len({u.index for u in units}) == 2


def test_surprisal_sums_to_eval(trained):
    loaded = store.load(trained)
    text = "the quick brown fox jumps over the lazy dog.\n" * 3
    ids = loaded.vocab.encode(text)
    s = act.surprisal(loaded.model, ids, chunk=7)  # chunked with the state carried
    total, n = evaluate(loaded.model, ids)
    assert s.shape == (n,) and s.sum() == pytest.approx(total, rel=1e-5)
    assert (s > 0).all()


def test_activations_html_png(cli, trained, tmp_path):
    mpimg = pytest.importorskip("matplotlib.image")
    text = "to be or not to be,\nthat is the question.\n" * 4  # the tiny corpus has no quotes or brackets
    out = tmp_path / "a.html"
    r = cli("activations", trained, "--text", text, "--top", 3, "-o", out)
    assert r.exit_code == 0, r.output
    assert f"wrote {out}" in r.stderr and f"wrote {tmp_path / 'a.png'}" in r.stderr
    html = out.read_text(encoding="utf-8")
    page = Page()
    page.feed(html)
    page.close()
    assert page.tags[0] == "html" and "script" not in page.tags and "link" not in page.tags
    assert page.urls == [] and "http://" not in html and "https://" not in html and "@import" not in html
    assert len(page.blocks) == 4  # three units and surprisal
    for block in page.blocks:  # one span per character, in order (a newline shows as ↵ and breaks)
        assert "".join(block).replace("\u21b5\n", "\n") == text
    assert html.count("r = ") == 3
    img = mpimg.imread(tmp_path / "a.png")
    assert img.ndim == 3 and img.shape[0] > 300 and img[..., :3].std() > 0.05
    # printed: the chosen units
    assert len([ln for ln in r.stdout.splitlines() if ln.startswith("layer ")]) == 3


def test_activations_file_units_default_path_and_terminal(cli, trained, corpus):
    r = cli("activations", trained, corpus, "--units", "0,5", "--max-chars", 300)
    assert r.exit_code == 0, r.output
    page = Page()
    page.feed((trained / "activations.html").read_text(encoding="utf-8"))
    assert len(page.blocks) == 3 and "".join(page.blocks[0]).replace("\u21b5\n", "\n") == \
        corpus.read_text(encoding="utf-8")[:300]
    assert "layer 0 c[0]" in r.stdout and "layer 0 c[5]" in r.stdout
    r = cli("activations", trained, "--text", "to be or not to be", "--units", "3", "--kind", "h", "--terminal")
    assert r.exit_code == 0 and "layer 0 h[3]" in r.stdout and "surprisal" in r.stdout
    assert "to be or not to be" in r.stdout and "wrote" not in r.stderr


def test_eval_per_char(cli, trained, corpus, tmp_path):
    out = tmp_path / "pc.jsonl"
    r = cli("eval", trained, corpus, "--json", "--per-char", out)
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    text = corpus.read_text(encoding="utf-8")
    assert len(rows) == summary["predictions"] == len(text) - 1
    assert "".join(row["char"] for row in rows) == text[1:] and rows[0]["pos"] == 1
    assert sum(row["loss"] for row in rows) / len(rows) == pytest.approx(summary["loss"], rel=1e-5)
    r = cli("eval", trained, "--split", "val", "--per-char", out)
    assert r.exit_code == 0 and len(out.read_text().splitlines()) > 10


@pytest.mark.parametrize("args, words", [
    (["TRAINED"], "exactly one of FILE or --text"),
    (["TRAINED", "CORPUS", "--text", "ab"], "exactly one of FILE or --text"),
    (["TRAINED", "--text", "the", "--units", "a,b"], "comma-separated integers"),
    (["TRAINED", "--text", "the", "--units", "999"], "unit 999 is out of range"),
    (["TRAINED", "--text", "the", "--units", "1", "--top", "2"], "not both"),
    (["TRAINED", "--text", "the", "--top", "0"], "--top must be >= 1"),
    (["TRAINED", "--text", "the", "--layer", "3"], "--layer 3 is out of range"),
    (["TRAINED", "--text", "the \u00e9t\u00e9"], "never seen"),
    (["TRAINED", "--text", "the", "-o", "x.txt"], "ending in .html"),
    (["TRAINED", "--text", "the", "--max-chars", "1"], "--max-chars must be >= 2"),
    (["TRAINED", "MISSING"], "does not exist"),
])
def test_activations_bad_input(cli, trained, corpus, tmp_path, args, words):
    subst = {"TRAINED": trained, "CORPUS": corpus, "MISSING": tmp_path / "missing.txt"}
    line = one_line_error(cli("activations", *[subst.get(a, a) for a in args]))
    assert words in line, line


def test_kind_c_needs_lstm():
    m = Model(Shape("gru", 4, 3, 1))
    from charrnn.insight import forward64 as inside
    ins = inside.forward(m.params, np.zeros((1, 5), dtype=int))
    with pytest.raises(Exception, match="--kind c needs an LSTM"):
        act.pick_units(ins, "abcde", [0], None, None, "c")

"""`charrnn plot`: reading metrics.jsonl, smoothing, the best checkpoint, the overfitting hint, the PNG,
the terminal chart without matplotlib, the pointer `charrnn train` ends with, and bad input."""
import json
import math
import re

import pytest
from conftest import TINY, one_line_error, step_records

from charrnn.insight import curves


def write_metrics(run, train, val_every=2, val=None, extra=""):
    """A metrics.jsonl: train losses at steps 10, 20, ...; val at every val_every-th record."""
    run.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, loss in enumerate(train):
        rec = {"step": 10 * (i + 1), "epoch": 1, "train_loss": loss, "lr": 0.002, "chars_per_sec": 1.0,
               "elapsed_s": 0.5 * (i + 1)}
        if val is not None and (i + 1) % val_every == 0:
            rec["val_loss"] = val[(i + 1) // val_every - 1]
        lines.append(json.dumps(rec))
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n" + extra, encoding="utf-8")
    return run


def test_smoothing_is_debiased_and_zero_means_raw():
    values = [4.0, 3.0, 2.0, 2.5]
    assert curves.smooth(values, 0.0) == values
    s = curves.smooth(values, 0.9)
    assert s[0] == values[0]  # no pull towards zero at the start
    assert min(values) <= min(s) and max(s) <= max(values)
    assert s[-1] > values[2]  # lags behind: still above the dip


def test_read_run_best_and_partial_line(tmp_path):
    run = write_metrics(tmp_path / "r", [4.0, 3.5, 3.0, 2.8, 2.7, 2.6], val=[3.6, 2.9, 2.95],
                        extra='{"step": 70, "train_lo')  # a kill cut the last line short
    r = curves.read_run(run)
    assert r.steps == [10, 20, 30, 40, 50, 60] and r.val_steps == [20, 40, 60]
    assert r.best == (40, 2.0, 2.9)
    assert r.skipped_lines == 1


def test_overfitting_hint_only_when_val_rises_while_train_falls(tmp_path):
    train = [3.0 - 0.1 * i for i in range(12)]
    rising = curves.read_run(write_metrics(tmp_path / "a", train, val=[2.8, 2.5, 2.4, 2.5, 2.6, 2.7]))
    hint = curves.overfitting(rising)
    assert hint and "overfitting" in hint and "step 60" in hint and "2.400" in hint
    falling = curves.read_run(write_metrics(tmp_path / "b", train, val=[2.8, 2.6, 2.5, 2.45, 2.4, 2.35]))
    assert curves.overfitting(falling) is None
    one_bump = curves.read_run(write_metrics(tmp_path / "c", train, val=[2.8, 2.6, 2.5, 2.45, 2.4, 2.6]))
    assert curves.overfitting(one_bump) is None  # a single evaluation is not a trend
    both_up = curves.read_run(write_metrics(tmp_path / "d", [2.0 + 0.1 * i for i in range(12)],
                                            val=[2.8, 2.5, 2.4, 2.5, 2.6, 2.7]))
    assert curves.overfitting(both_up) is None  # that is divergence, not overfitting


def test_train_points_at_plot_and_plot_writes_png(cli, corpus, tmp_path):
    mpimg = pytest.importorskip("matplotlib.image")
    run = tmp_path / "run"
    r = cli("train", corpus, "--out", run, *TINY, "--max-steps", 20, "--eval-every", 10, "--sample-every", 0)
    assert r.exit_code == 0, r.output
    assert r.stdout.rstrip().splitlines()[-1] == f"loss curves: charrnn plot {run}"
    other = write_metrics(tmp_path / "other", [4.0, 3.0, 2.5, 2.2], val=[3.1, 2.3])
    r = cli("plot", run, other)
    assert r.exit_code == 0, r.output
    assert f"wrote {run / 'loss.png'}" in r.stderr
    img = mpimg.imread(run / "loss.png")
    assert img.ndim == 3 and img.shape[1] > 2 * img.shape[0] > 600  # two panels side by side
    assert img[..., :3].std() > 0.05
    assert "run" in r.stdout and "other" in r.stdout and "best val" in r.stdout
    out = tmp_path / "cmp.png"
    r = cli("plot", run, "-o", out)
    assert r.exit_code == 0 and mpimg.imread(out).shape == img.shape


@pytest.mark.parametrize("budget", [["--max-steps", 23], ["--max-epochs", 2]])
def test_the_last_evaluation_is_logged_and_plot_agrees_with_best_npz(cli, corpus, tmp_path, budget):
    """A run that ends between scheduled evaluations is evaluated at its last step; that evaluation is in
    metrics.jsonl (it is often the best: the schedule ends annealed), so `charrnn plot` names the step
    best.npz holds."""
    from charrnn.checkpoints import npz as checkpoint
    run = tmp_path / "run"
    r = cli("train", corpus, "--out", run, *TINY, "--eval-every", 10, "--sample-every", 0, "--lr", 0.01,
            "--set", "train.log_every=4", *budget)
    assert r.exit_code == 0, r.output
    records = step_records(run)
    _, last = checkpoint.load(run / "last.npz")
    end = last["progress"]["step"]
    assert end % 10 and records[-1]["step"] == end and "val_loss" in records[-1]
    assert records[-1]["val_loss"] == last["losses"]["val_loss"]
    assert [m["step"] for m in records if "val_loss" in m] == [*range(10, end, 10), end]
    _, best = checkpoint.load(run / "best.npz")
    assert curves.read_run(run).best[0] == best["progress"]["step"]
    assert curves.read_run(run).best[2] == best["losses"]["val_loss"]


def test_terminal_chart_and_hint(cli, tmp_path):
    train = [3.0 - 0.1 * i for i in range(12)]
    run = write_metrics(tmp_path / "over", train, val=[2.8, 2.5, 2.4, 2.5, 2.6, 2.7])
    r = cli("plot", run, "--terminal", "--x", "time")
    assert r.exit_code == 0, r.output
    assert "seconds" in r.stdout and "* best val" in r.stdout and "hint:" in r.stdout
    assert "overfitting" in r.stdout
    assert not (run / "loss.png").exists()
    chart = [ln for ln in r.stdout.splitlines() if re.match(r"[ \d.]{7}│", ln)]  # rows on the y axis
    assert len(chart) == 16 and any("*" in ln for ln in chart)
    # the lowest loss on the chart's bottom label, the highest on its top one
    assert f"{max(train):.3f}" in chart[0] and f"{min(curves.smooth(train, 0.6)):.3f}" in chart[-1]


def test_without_matplotlib_terminal_view_and_one_line_error(cli, tmp_path, monkeypatch):
    import charrnn.insight.figures
    monkeypatch.setattr(charrnn.insight.figures, "available", lambda: False)
    run = write_metrics(tmp_path / "r", [3.0, 2.5, 2.2, 2.0], val=[2.6, 2.1])
    r = cli("plot", run)
    assert r.exit_code == 0 and "│" in r.stdout and "pip install 'charrnn[plot]'" in r.stderr
    line = one_line_error(cli("plot", run, "-o", tmp_path / "x.png"))
    assert "needs matplotlib" in line and "pip install 'charrnn[plot]'" in line


@pytest.mark.parametrize("setup, args, words", [
    ("none", ["MISSING"], "does not exist"),
    ("empty_dir", ["DIR"], "holds no metrics.jsonl"),
    ("empty_log", ["DIR"], "has no logged steps yet"),
    ("garbage", ["DIR"], "has no logged steps yet"),
    ("ok", ["DIR", "--smooth", "1"], "--smooth must be in [0, 1)"),
    ("ok", ["DIR", "-o", "out.svg"], "written as PNG"),
    ("ok", ["DIR", "-o", "NODIR/x.png"], "cannot write"),
])
def test_plot_bad_input(cli, tmp_path, setup, args, words):
    d = tmp_path / "run"
    if setup != "none":
        d.mkdir()
    if setup == "empty_log":
        (d / "metrics.jsonl").write_text("")
    if setup == "garbage":
        (d / "metrics.jsonl").write_text("not json\n[1, 2]\n{\"step\": true}\n")
    if setup == "ok":
        write_metrics(d, [3.0, 2.0], val=[2.5])
    subst = {"MISSING": tmp_path / "missing", "DIR": d, "NODIR/x.png": tmp_path / "nodir" / "x.png"}
    if "-o" in args and args[-1] == "NODIR/x.png":
        pytest.importorskip("matplotlib")
    line = one_line_error(cli("plot", *[subst.get(a, a) for a in args]))
    assert words in line, line


def test_nonfinite_losses_are_left_out(tmp_path):
    run = write_metrics(tmp_path / "r", [3.0, math.inf, 2.0, 1.5], val=[2.5, 2.0])
    r = curves.read_run(run)
    assert r.train == [3.0, 2.0, 1.5] and all(math.isfinite(v) for v in r.smooth)


def test_readme_shows_the_see_inside_pictures():
    """Every picture the README's See inside section shows is in docs/ and decodes as a PNG."""
    from pathlib import Path
    mpimg = pytest.importorskip("matplotlib.image")
    root = Path(__file__).resolve().parent.parent
    text = (root / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## See inside"):text.index("## Python API")]
    pictures = re.findall(r"!\[[^\]]*\]\((docs/[^)]+\.png)\)", section)
    assert len(pictures) == 3, pictures
    for rel in pictures:
        img = mpimg.imread(root / rel)
        assert img.ndim == 3 and min(img.shape[:2]) > 300 and img[..., :3].std() > 0.05, rel
    assert (root / "docs" / "see-inside.sh").is_file() and "docs/see-inside.sh" in section


def test_plot_takes_a_checkpoint_for_its_run(cli, corpus, tmp_path):
    """`charrnn plot RUN/best.npz` said the run "has no logged steps yet"; every other command takes a
    checkpoint where a run directory is meant, and so does plot (its PNG goes to the run directory)."""
    run = tmp_path / "run"
    assert cli("train", corpus, "--out", run, *TINY, "--max-steps", 10, "--eval-every", 5).exit_code == 0
    by_dir, by_file = cli("plot", run, "--terminal"), cli("plot", run / "best.npz", "--terminal")
    assert by_file.exit_code == 0, by_file.output
    assert by_file.stdout == by_dir.stdout

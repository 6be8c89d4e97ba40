"""Every command the way a person runs it: the installed `charrnn` in a 100x30 pseudo-terminal (issue 12).

Until these, every test ran with stdout a pipe or a file, and `charrnn train` hung forever in a real
terminal without any test noticing. Waits fail on a hang (tests/terminal.py), never on speed.
"""
import json
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.pty import Hang, Terminal, charrnn_command, run
from support.runs import step_records

from charrnn.checkpoints import npz as checkpoint
from charrnn.data.sources import encode_escapes

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "corpora" / "tinyshakespeare.txt"
# A few steps of the tiny config, evaluating and sampling often enough to show both.
TINY = ["--config", "tiny", "--eval-every", "10", "--sample-every", "10", "--sample-length", "80"]
# One state of the live bar, as its text reads (escapes stripped).
BAR = re.compile(r"step (\d+)/(\d+) [━╸╺]+\s+epoch (\d+) \| loss (\d+\.\d+) \| val (-|\d+\.\d+) \| "
                 r"([\d,]+) chars/s \| eta (\d+:\d\d:\d\d|-:--:--)")

# Run inside the command's interpreter (terminal.py's startup=): each training step sleeps SLOW_STEP
# seconds so a test can pick its moment, and with SLOW_SAVE_MARKER set a checkpoint write first names
# itself in that file and then lingers SLOW_SAVE seconds inside the write. The numbers are unaffected.
SLOW = """
import os, time
from pathlib import Path
from charrnn.checkpoints import npz as checkpoint
from charrnn.training import trainer
_step, _save = trainer.Trainer.train_step, checkpoint.save

def train_step(self, x, y):
    time.sleep(float(os.environ.get("SLOW_STEP", "0")))
    return _step(self, x, y)

def save(path, *args, **kwargs):
    if os.environ.get("SLOW_SAVE_MARKER"):
        Path(os.environ["SLOW_SAVE_MARKER"]).write_text(str(path))
        time.sleep(float(os.environ["SLOW_SAVE"]))
    return _save(path, *args, **kwargs)

trainer.Trainer.train_step = train_step
checkpoint.save = save
"""


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("terminal")


@pytest.fixture(scope="module")
def tiny(work) -> Terminal:
    """`charrnn train` of the tiny config for 30 steps, finished; shared by the tests that read its run.
    Steps take at least 50 ms, so the bar (redrawn 4 times a second) shows several states before step 10."""
    return run(["train", CORPUS, *TINY, "--max-steps", "30", "--out", "run"], cwd=work, startup=SLOW,
               env={"SLOW_STEP": "0.05"})


def bars(t: Terminal) -> list[re.Match]:
    return list(BAR.finditer(t.text))


def plain(t: Terminal) -> str:
    """What the command printed, as a pipe would have it (the terminal turns \\n into \\r\\n)."""
    return t.text.replace("\r\n", "\n")


def piped(*args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([charrnn_command(), *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=150)


def assert_clean_exit(t: Terminal) -> None:
    """No traceback, and the cursor the live bar hid is visible again."""
    assert "Traceback" not in t.text
    hidden, shown = t.raw.rfind(b"\x1b[?25l"), t.raw.rfind(b"\x1b[?25h")
    assert hidden == -1 or hidden < shown, "the cursor stayed hidden"


def ending(run: str) -> list[str]:
    """The last two lines of a finished `charrnn train --out RUN`."""
    return [f"best checkpoint: {run}/best.npz", f"loss curves: charrnn plot {run}"]


def step_files(run_dir: Path) -> list[str]:
    return sorted(p.name for p in run_dir.glob("step*.npz"))


# -- train -----------------------------------------------------------------------------------------------
def test_train_draws_a_live_bar_and_finishes(tiny, work):
    assert tiny.code == 0, "\n".join(tiny.screen(history=True))
    assert_clean_exit(tiny)
    states = bars(tiny)
    steps = [int(m[1]) for m in states]
    assert len(set(steps)) >= 3 and steps == sorted(steps) and steps[-1] == 30, steps  # it updates
    assert {m[2] for m in states} == {"30"}
    assert states[0][5] == "-" and re.fullmatch(r"\d+\.\d+", states[-1][5])  # val once evaluated
    assert all(int(m[6].replace(",", "")) > 0 for m in states)
    assert states[-1][7] == "0:00:00" and any(m[7] != "-:--:--" for m in states[:-1])
    screen = tiny.screen(history=True)
    # the run header, then a samples panel per sample_every, drawn whole
    assert any(line.startswith("model") and "LSTM 2x128" in line for line in screen)
    for step in (10, 20, 30):
        top = next(i for i, line in enumerate(screen) if line.startswith("╭") and f"sample @ step {step}" in line)
        bottom = next(i for i in range(top, len(screen)) if screen[i].startswith("╰"))
        assert bottom > top + 1 and all(line.startswith("│") and line.endswith("│")
                                        for line in screen[top + 1:bottom])
    # the bar's redraws leave one bar behind (no stale copies); the end names the best checkpoint
    assert sum(1 for line in screen if line.startswith("step ")) == 1
    assert screen[-2:] == ending("run")
    assert (work / "run" / "best.npz").is_file()


def test_ctrl_c_writes_one_checkpoint_and_the_printed_command_resumes(work):
    with Terminal(["train", CORPUS, "--config", "tiny", "--max-steps", "60", "--out", "ctrlc"], cwd=work,
                  startup=SLOW, env={"SLOW_STEP": "0.1"}) as t:
        t.expect(BAR.pattern)
        t.send("\x03")
        assert t.wait() == 130
    assert_clean_exit(t)
    text = plain(t)
    screen = t.screen(history=True)
    # the warning on a line of its own above the bar (not written into it), and no stale copy of the bar
    assert any(line.startswith("warning: stopping after this step and writing a checkpoint") for line in screen)
    assert sum(1 for line in screen if line.startswith("step ")) == 1
    # a deliberate stop: said as such (not "error: interrupted"), with the command that goes on
    m = re.search(r"stopped at step (\d+): Ctrl-C \(SIGINT\); checkpoint saved in ctrlc\r?\ngo on with: (.*)", text)
    assert m, "\n".join(t.screen(history=True))
    assert "error" not in text
    step = int(m[1])
    assert 0 < step < 60
    run_dir = work / "ctrlc"
    assert step_records(run_dir)[-1]["step"] == step
    end = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert end["event"] == "end" and end["reason"] == "signal" and end["step"] == step
    assert checkpoint.load(run_dir / "last.npz")[1]["ended"]["reason"] == "signal"
    assert len(step_files(run_dir)) == 1 and step_files(run_dir)[0].startswith(f"step{step}_")
    assert checkpoint.load(run_dir / "last.npz")[1]["progress"]["step"] == step

    command = shlex.split(m[2])
    assert command[:2] == ["charrnn", "train"]
    again = run(command[1:], cwd=work)
    assert again.code == 0, "\n".join(again.screen(history=True))
    assert_clean_exit(again)
    assert f"(resumed at step {step})" in again.text
    assert int(bars(again)[0][1]) > step and bars(again)[-1][1] == "60"
    assert again.screen()[-2:] == ending("ctrlc")
    steps = [r["step"] for r in step_records(run_dir)]
    assert steps[-1] == 60 and steps == sorted(set(steps))


def test_second_ctrl_c_while_the_checkpoint_is_written(work):
    marker = work / "writing"
    with Terminal(["train", CORPUS, "--config", "tiny", "--max-steps", "60", "--out", "twice"], cwd=work,
                  startup=SLOW, env={"SLOW_STEP": "0.1", "SLOW_SAVE": "3", "SLOW_SAVE_MARKER": str(marker)}) as t:
        t.expect(BAR.pattern)
        t.send("\x03")
        t.expect("stopping after this step")
        deadline = time.monotonic() + 120
        while not marker.exists():  # the checkpoint write has begun, and lingers 3 s
            assert time.monotonic() < deadline and t.proc.poll() is None, "\n".join(t.screen())
            time.sleep(0.05)
        t.send("\x03")
        assert t.wait() == 130
    assert_clean_exit(t)
    text = plain(t)
    # the write in progress finished before leaving: the checkpoint is whole and last.npz points at it
    assert "quitting now; continue from the last checkpoint with: charrnn train --resume twice" in text
    assert "interrupted" in text.splitlines()[-1]
    run_dir = work / "twice"
    written = Path(marker.read_text()).name
    assert step_files(run_dir) == [written]
    assert not [p for p in run_dir.iterdir() if ".tmp-" in p.name]
    _, meta = checkpoint.load(run_dir / "last.npz")
    assert written.startswith(f"step{meta['progress']['step']}_")


def test_narrow_terminal_keeps_every_number(work):
    t = run(["train", CORPUS, *TINY, "--max-steps", "20", "--out", "narrow"], cwd=work, cols=40)
    assert t.code == 0, "\n".join(t.screen(history=True))
    assert_clean_exit(t)
    screen = t.screen(history=True)
    i = next(i for i, line in enumerate(screen) if line.startswith("step 20/20 ━"))
    stop = next(j for j, line in enumerate(screen) if line.startswith("stopped at step 20: "))
    status = " ".join(screen[i + 1:stop])  # the numbers, wrapped under the bar, then why it stopped
    assert re.fullmatch(r"epoch 1 \| loss \d+\.\d+ \| val \d+\.\d+ \| [\d,]+ chars/s \| eta 0:00:00", status), status
    assert sum(1 for line in screen if line.startswith("step ")) == 1
    assert not any("…" in line for line in screen)
    assert screen[-2:] == ending("narrow")


def test_resize_in_the_middle_of_training(work):
    with Terminal(["train", CORPUS, *TINY, "--max-steps", "40", "--out", "resized"], cwd=work,
                  startup=SLOW, env={"SLOW_STEP": "0.1"}) as t:
        before = int(t.expect(BAR.pattern)[1])
        t.resize(50, 30)
        # a later step drawn for 50 columns: the numbers on their own line under the bar
        t.expect(rf"step (?!{before}/)\d+/40 [━╸╺]+\r\nepoch \d+ \| loss")
        t.resize(120, 30)
        assert t.wait() == 0
    assert_clean_exit(t)
    screen = t.screen()
    assert screen[-2:] == ending("resized")
    assert screen[-4:-2] == ["stopped at step 40: the step budget (max_steps 40) is reached",
                             "go on with: charrnn train --resume resized --max-steps 80"]
    assert BAR.fullmatch(screen[-5]) and screen[-5].startswith("step 40/40")  # one line again at 120


# -- sample, eval, info ------------------------------------------------------------------------------------
def test_sample_streams_to_the_terminal(tiny, work):
    # Far more than can be done before the Ctrl-C: the text must show long before it could all be done.
    # (2,000,000 chars, once called "minutes of work", take ~17 s on two cores here, and twice in a full
    # CI run the command had finished by the time the Ctrl-C went in.)
    n = 1_000_000_000
    with Terminal(["sample", "run/best.npz", "-n", n, "--prime", "ROMEO:", "--seed", "1"], cwd=work) as t:
        t.expect(r"ROMEO:[\s\S]{300}")
        assert t.proc.poll() is None  # still generating
        t.send("\x03")
        code = t.wait()
        assert code == 130, f"exit {code} after Ctrl-C with {len(t.text):,} characters shown"
    assert "Traceback" not in t.text
    assert plain(t).rstrip().splitlines()[-1] == "interrupted"
    assert 300 < len(plain(t)) < n


@pytest.mark.parametrize("args", [["-n", "300", "--prime", "ROMEO:", "--seed", "3"], ["-n", "200", "--argmax"],
                                  ["-n", "120", "-N", "3", "--seed", "5"]], ids=["prime", "argmax", "three"])
def test_sample_in_the_terminal_prints_what_a_pipe_gets(tiny, work, args):
    t = run(["sample", "run/best.npz", *args], cwd=work)
    assert t.code == 0 and "Traceback" not in t.text
    p = piped("sample", "run/best.npz", *args, cwd=work)
    assert p.returncode == 0 and plain(t) == p.stdout
    if "--prime" in args:
        assert plain(t).startswith("ROMEO:") and len(plain(t)) == len("ROMEO:") + 300 + 1
    if "--argmax" in args:
        assert plain(run(["sample", "run/best.npz", *args], cwd=work)) == plain(t)
    if "-N" in args:
        assert re.findall(r"^--- sample (\d) ---$", plain(t), re.M) == ["1", "2", "3"]


def table_rows(screen: list[str]) -> dict[str, str]:
    """{label: value} from the rows of rich tables drawn with box characters."""
    rows = {}
    for line in screen:
        cells = [c.strip() for c in line.strip("│┃").split("│")]
        if len(cells) == 2 and cells[0]:
            rows[cells[0]] = cells[1]
    return rows


def assert_boxes_aligned(screen: list[str]) -> None:
    """Every table line drawn is as wide as its top border: nothing cut or wrapped out of its box."""
    width = None
    for line in screen:
        if line[:1] in "┏╭┌":
            width = len(line)
        if width is not None and line[:1] in "┃│├┡╞└╰┗":
            assert len(line) == width, line


def test_eval_table(tiny, work):
    t = run(["eval", "run/best.npz", "--split", "val"], cwd=work)
    assert t.code == 0 and "Traceback" not in t.text
    screen = t.screen()
    assert_boxes_aligned(screen)
    r = json.loads(piped("eval", "run/best.npz", "--split", "val", "--json", cwd=work).stdout)
    assert table_rows(screen) == {"loss (nats/char)": f"{r['loss']:.4f}", "bits/char": f"{r['bpc']:.4f}",
                                  "perplexity": f"{r['perplexity']:.3f}", "characters": f"{r['chars']:,}"}


def test_paths_stay_whole_at_80_columns(work):
    """eval's table title and info's corpus field folded file paths mid-word at 80 columns (inside a
    table's cell width); now each path is on a line, whole, when it fits the terminal."""
    def long_path(name: str, total: int = 76) -> Path:  # fits 80 columns, not beside a label or in a cell
        base = work / "long"
        return base / (Path(name).stem.ljust(total - len(str(base)) - 5, "x") + Path(name).suffix)
    text, run_dir = long_path("corpus.txt"), work / "long" / "r"
    text.parent.mkdir(exist_ok=True)
    text.write_text(CORPUS.read_text(encoding="utf-8")[:20_000], encoding="utf-8")
    assert run(["train", text, "--hidden", "16", "--layers", "1", "--max-steps", "2", "--plain", "--out", run_dir],
               cwd=work).code == 0
    ckpt = long_path("model.npz")
    shutil.copy(run_dir / "best.npz", ckpt)
    assert 60 < len(str(ckpt)) <= 80 and 60 < len(str(text)) <= 80
    for args in (["eval", ckpt, text], ["eval", ckpt, "--split", "val"], ["info", ckpt]):
        t = run(args, cwd=work, cols=80)
        screen = t.screen(history=True)
        assert t.code == 0, "\n".join(screen)
        assert str(ckpt) in screen, screen[:6]
        if args[0] == "info" or len(args) == 3:
            assert str(text) in screen, screen[:6]
        assert_boxes_aligned(screen)


def test_info_tables(tiny, work):
    t = run(["info", "run/best.npz"], cwd=work)
    assert t.code == 0 and "Traceback" not in t.text
    screen = t.screen(history=True)
    assert_boxes_aligned(screen)
    d = json.loads(piped("info", "run/best.npz", "--json", cwd=work).stdout)
    rows = table_rows(screen)
    m = d["model"]
    assert rows["model"].startswith(f"{m['cell'].upper()} {m['num_layers']}x{m['hidden_size']}")
    assert rows["parameters"] == f"{m['parameters']:,}"
    assert rows["step / epoch"] == f"{d['training']['step']} / {d['training']['epoch']}"
    # every config key as the JSON holds it; a null as a config file spells it (auto, null)
    named_nulls = {"train.max_epochs": "auto"}
    for section, values in d["config"].items():
        for key, value in values.items():
            want = (encode_escapes(value) if isinstance(value, str)
                    else named_nulls.get(f"{section}.{key}", "null") if value is None else str(value))
            assert rows[f"{section}.{key}"] == want


def _commands():
    from charrnn.cli import main
    return [[]] + [[name] for name in sorted(main.commands)]


@pytest.mark.parametrize("cols", [100, 40])
@pytest.mark.parametrize("command", _commands(), ids=lambda c: c[0] if c else "charrnn")
def test_help_of_every_command(work, command, cols):
    from charrnn.cli import main
    t = run([*command, "--help"], cwd=work, cols=cols)
    assert t.code == 0 and "Traceback" not in t.text
    text = " ".join(" ".join(t.screen(history=True)).split())
    assert text.startswith(f"Usage: {' '.join(['charrnn', *command])} ")
    group_or_command = main.commands[command[0]] if command else main
    for param in group_or_command.params:
        for opt in param.opts:
            assert opt in text or not opt.startswith("-"), opt
    if not command:
        assert all(name in text for name in main.commands)


# -- one stream redirected, the other the terminal -----------------------------------------------------------
def test_stdout_to_a_file_stderr_the_terminal(work):
    out = work / "train.log"
    t = run(["train", CORPUS, *TINY, "--max-steps", "20", "--out", "logged", "--set", "train.log_every=5"],
            cwd=work, stdout=out)
    assert t.code == 0 and t.text.strip() == ""  # nothing for the terminal: no bar drawn into the file
    log = out.read_text()
    assert "\x1b[" not in log
    assert [int(s) for s in re.findall(r"^step (\d+) \| epoch 1 \| loss", log, re.M)] == [5, 10, 15, 20]
    assert "--- sample @ step 10 ---" in log and log.splitlines()[-2:] == ending("logged")


def test_stderr_to_a_file_stdout_the_terminal(work):
    err = work / "train.err"
    with Terminal(["train", CORPUS, "--config", "tiny", "--max-steps", "60", "--out", "errlog"], cwd=work,
                  stderr=err, startup=SLOW, env={"SLOW_STEP": "0.1"}) as t:
        t.expect(BAR.pattern)
        t.send("\x03")
        assert t.wait() == 130
    assert_clean_exit(t)
    # the bar on the terminal; the warning and the error in the file, not drawn over the bar
    assert bars(t) and "warning" not in t.text and "error" not in t.text
    lines = err.read_text().splitlines()
    assert lines[0].startswith("warning: stopping after this step")
    assert lines[-2].startswith("stopped at step") and lines[-1] == "go on with: charrnn train --resume errlog"


def test_readme_capture_has_the_shape_of_a_run_today(tiny):
    """README's "What a run looks like" is a rendered screen (tools/capture_run.py), whose header, bar and
    last line read as a run of this version draws them."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- tools/capture_run.py: begin -->\n```text\n(.*?)\n```", readme, re.S)[1].splitlines()
    assert block[0] == "$ charrnn train corpora/tinyshakespeare.txt --config tiny --max-steps 200"
    assert all(len(line) <= 100 and "\x1b" not in line and "\r" not in line for line in block)

    def header_keys(screen):  # the run header's keys: every line before the first panel or bar
        end = next(i for i, line in enumerate(screen) if line.startswith(("╭", "step ")))
        return [line.split("  ")[0] for line in screen[:end]]
    assert header_keys(block[1:]) == header_keys(tiny.screen(history=True))
    assert any(line.startswith("╭") and "sample @ step 200" in line for line in block)
    assert BAR.fullmatch(block[-5]) and block[-5].startswith("step 200/200")
    assert block[-4:-2] == ["stopped at step 200: the step budget (max_steps 200) is reached",
                            "go on with: charrnn train --resume runs/tinyshakespeare --max-steps 400"]
    assert block[-2:] == ending("runs/tinyshakespeare")


def test_a_hang_is_reported_with_every_threads_stack(work):
    """The harness itself: a command that does not end in time is sent SIGABRT before it is killed, and the
    Hang says where each of its threads was (so an intermittent hang in CI can be read from its log)."""
    code = ("import threading, time\n"
            "def stuck_worker():\n    time.sleep(300)\n"
            "threading.Thread(target=stuck_worker, daemon=True).start()\n"
            "print('started', flush=True)\n"
            "def stuck_main():\n    time.sleep(300)\n"
            "stuck_main()\n")
    with Terminal([], cmd=[sys.executable, "-c", code], cwd=work) as t:
        t.expect("started")
        with pytest.raises(Hang) as e:
            t.wait(timeout=1)
    msg = str(e.value)
    assert "still running, killed" in msg and "faulthandler" in msg
    assert "stuck_worker" in msg and "stuck_main" in msg

"""Make the README's captured blocks from the commands they name, so they cannot drift from the code:
"What a run looks like" (a real run in a pseudo-terminal) and the "See inside" gradient table (the
numbers of `charrnn diagnose --json` for each row's command line).

    python tools/capture_run.py            # print both
    python tools/capture_run.py --readme   # and put them into README.md between their markers

Runs the installed `charrnn` (this venv's) on the bundled tiny Shakespeare with the tiny config in a
100x30 terminal (tests/terminal.py), in a scratch directory, and renders what the terminal shows at the
end with the pyte terminal emulator: the final state of every line, as a person sees it, not the stream
of redraws. Takes about half a minute on 2 cores.
"""
import argparse
import json
import os
import subprocess
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from terminal import run  # noqa: E402

COMMAND = ["train", "corpora/tinyshakespeare.txt", "--config", "tiny", "--max-steps", "200"]
BEGIN, END = "<!-- tools/capture_run.py: begin -->", "<!-- tools/capture_run.py: end -->"
# The "See inside" table: each row's label and the `charrnn diagnose` options that make it.
DIAGNOSE_ROWS = [
    ("RNN", ["--model", "rnn"]),
    ("GRU", ["--model", "gru"]),
    ("LSTM, the default init", ["--model", "lstm"]),
    ("LSTM, char-rnn's forget bias", ["--model", "lstm", "--forget-bias", "1"]),
    ("LSTM, a wide-open forget gate", ["--model", "lstm", "--forget-bias", "5"]),
]
DIAGNOSE_BEGIN = "<!-- tools/capture_run.py diagnose: begin -->"
DIAGNOSE_END = "<!-- tools/capture_run.py diagnose: end -->"


def capture() -> str:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "corpora").mkdir()
        os.symlink(ROOT / "corpora" / "tinyshakespeare.txt", Path(tmp) / "corpora" / "tinyshakespeare.txt")
        t = run(COMMAND, cwd=tmp)
        screen = t.screen(history=True)
        if t.code != 0:
            sys.exit("capture_run: the run failed:\n" + "\n".join(screen))
    return "\n".join(["$ charrnn " + " ".join(COMMAND), *screen])


def diagnose_table(charrnn: str | None = None) -> str:
    """The markdown table of `charrnn diagnose --model ... --hidden 128 --json` for every DIAGNOSE_ROWS
    row: the gradient of the last step's loss at h_T, T-10 and T-99, and the per-step factor."""
    from terminal import charrnn_command
    lines = ["| fresh 1x128 model | `charrnn diagnose --hidden 128` | mean forget gate | ‖∂L_T/∂h_T‖ | T-10 | T-99 "
             "| per step (log-linear fit) |", "|---|---|---|---|---|---|---|"]
    for label, options in DIAGNOSE_ROWS:
        out = subprocess.run([charrnn or charrnn_command(), "diagnose", *options, "--hidden", "128", "--json"],
                             check=True, capture_output=True, text=True).stdout
        layer = json.loads(out)["weights"]["init"]["layers"][0]
        g = layer["grad_last_step_by_distance"]
        f = layer.get("mean_forget_gate")
        lines.append(f"| {label} | `{' '.join(options)}` | {'-' if f is None else f'{f:.3f}'} | {g[0]:.1e} "
                     f"| {g[10]:.1e} | {g[99]:.1e} | ×{layer['decay_per_step']:.3f} |")
    return "\n".join(lines)


def replace_block(text: str, begin: str, end: str, body: str) -> str:
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        sys.exit(f"capture_run: README.md has no {begin} ... {end} markers")
    return pattern.sub(lambda _: f"{begin}\n{body}\n{end}", text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readme", action="store_true", help="write the captures into README.md")
    args = parser.parse_args()
    text, table = capture(), diagnose_table()
    print(text, table, sep="\n\n")
    if args.readme:
        readme = ROOT / "README.md"
        new = replace_block(readme.read_text(encoding="utf-8"), BEGIN, END, f"```text\n{text}\n```")
        readme.write_text(replace_block(new, DIAGNOSE_BEGIN, DIAGNOSE_END, table), encoding="utf-8")


if __name__ == "__main__":
    main()

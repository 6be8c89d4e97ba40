"""Make the README's "What a run looks like" block from a real run in a pseudo-terminal.

    python tools/capture_run.py            # print the capture
    python tools/capture_run.py --readme   # and put it into README.md between the capture markers

Runs the installed `charrnn` (this venv's) on the bundled tiny Shakespeare with the tiny config in a
100x30 terminal (tests/terminal.py), in a scratch directory, and renders what the terminal shows at the
end with the pyte terminal emulator: the final state of every line, as a person sees it, not the stream
of redraws. Takes about half a minute on 2 cores.
"""
import argparse
import os
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from support.pty import run  # noqa: E402

COMMAND = ["train", "corpora/tinyshakespeare.txt", "--config", "tiny", "--max-steps", "200"]
BEGIN, END = "<!-- tools/capture_run.py: begin -->", "<!-- tools/capture_run.py: end -->"


def capture() -> str:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "corpora").mkdir()
        os.symlink(ROOT / "corpora" / "tinyshakespeare.txt", Path(tmp) / "corpora" / "tinyshakespeare.txt")
        t = run(COMMAND, cwd=tmp)
        screen = t.screen(history=True)
        if t.code != 0:
            sys.exit("capture_run: the run failed:\n" + "\n".join(screen))
    return "\n".join(["$ charrnn " + " ".join(COMMAND), *screen])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readme", action="store_true", help="write the capture into README.md")
    args = parser.parse_args()
    text = capture()
    print(text)
    if args.readme:
        readme = ROOT / "README.md"
        old = readme.read_text(encoding="utf-8")
        pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
        if not pattern.search(old):
            sys.exit(f"capture_run: README.md has no {BEGIN} ... {END} markers")
        block = f"{BEGIN}\n```text\n{text}\n```\n{END}"
        readme.write_text(pattern.sub(lambda _: block, old), encoding="utf-8")


if __name__ == "__main__":
    main()

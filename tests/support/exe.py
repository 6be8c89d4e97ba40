"""The installed `charrnn` console script the tests run: the one beside this interpreter (the venv's
bin/charrnn), else PATH's; None when neither exists (tests needing it skip or fail by their marker)."""
import os
import shutil
import sys

CHARRNN = shutil.which("charrnn", path=os.path.dirname(sys.executable)) or shutil.which("charrnn")


def charrnn_command() -> str:
    """The path of the installed script, or RuntimeError saying how to install it."""
    if CHARRNN is None:
        raise RuntimeError("no installed charrnn command: pip install -e '.[test]' in this venv")
    return CHARRNN


def assert_child_exits(code: str, stdout: str, timeout: float = 120) -> None:
    """Run `code` in a fresh interpreter: it must exit 0 by itself within `timeout` seconds (a thread left
    spinning keeps the interpreter from exiting: a hang fails the test) and print exactly `stdout`."""
    import subprocess
    try:
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the child did not exit within {timeout:.0f} s: a thread was left running") from None
    assert r.returncode == 0 and r.stdout == stdout, r.stderr

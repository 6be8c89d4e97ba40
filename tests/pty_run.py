"""`run_in_pty` for the tests of export, stop strings and many-file corpora: the shared terminal layer
(tests/terminal.py) with the (exit code, plain text) shape those tests read."""
from terminal import run


def run_in_pty(args, cwd, timeout: float = 180.0) -> tuple[int, str]:
    """(exit code, output with \\r\\n as \\n and escape sequences removed). A hang fails (terminal.Hang)."""
    t = run(args, cwd=cwd, timeout=timeout)
    return t.code, t.text.replace("\r\n", "\n")

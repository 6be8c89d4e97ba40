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

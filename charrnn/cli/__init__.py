"""The `charrnn` command line: thin click commands; the only place errors become exit codes. common.py
holds the group and what commands share; commands.py and see.py register the commands on it."""
from . import commands, see  # noqa: F401  (registers every command on `main`)
from .common import main

__all__ = ["main"]

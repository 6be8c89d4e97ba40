"""The `charrnn` command line: thin click commands; the only place errors become exit codes."""
from .commands import main

__all__ = ["main"]

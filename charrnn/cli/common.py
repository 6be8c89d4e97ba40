"""What every `charrnn` command shares: the click group `main`, the consoles, the one place a
CharrnnError becomes one line on stderr and its exit code (no tracebacks for user errors), and writing
a file or stdout where the user asked.

Heavy modules (numpy, numba, the model) are imported inside command bodies so `charrnn --help` is
instant; the commands live in commands.py and see.py, which register themselves on `main`.
"""
import functools
import sys

import click

from .._version import __version__


def _err_console():
    from rich.console import Console
    return Console(stderr=True, highlight=False, soft_wrap=True)


def friendly_errors(fn):
    """Map CharrnnError to one line + its exit code; Ctrl-C to exit 130 without a traceback."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from ..errors import CharrnnError
        try:
            return fn(*args, **kwargs)
        except CharrnnError as e:
            _deaf()
            if getattr(e, "quiet", False):  # another rank of an MPI run says it (distributed/world.py)
                sys.exit(e.exit_code)
            if getattr(e, "deliberate", False):  # Ctrl-C/SIGTERM in training: stopped as asked, not an error
                _err_console().print(_escape(e.message + (f"\ngo on with: {e.hint}" if e.hint else "")))
            else:
                _err_console().print(f"[bold red]error:[/] {_escape(e.one_line())}")
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            _deaf()
            _err_console().print("[bold red]interrupted[/]")
            sys.exit(130)
        except BrokenPipeError:  # the reader went away (`| head`): not an error
            _silence_stdout()
            sys.exit(0)
        except MemoryError as e:
            _deaf()
            reason = f" ({_escape(str(e))})" if str(e) else ""
            _err_console().print(f"[bold red]error:[/] not enough memory{reason} "
                                 "(ask for less: fewer samples or characters, a smaller model or batch, a "
                                 "shorter input file)")
            sys.exit(1)
    return wrapper


def _stdout():
    """sys.stdout, or a one-line error when the shell closed it (`charrnn ... >&-`)."""
    from ..errors import UsageError
    if sys.stdout is None:
        raise UsageError("standard output is closed", "redirect it to a file, or use --output FILE where offered")
    return sys.stdout


def _emit(write) -> None:
    """Run write() (which writes to stdout) and flush: a full disk or a bad redirection becomes one line."""
    from ..errors import CharrnnError
    try:
        write()
        _stdout().flush()
    except BrokenPipeError:
        raise
    except OSError as e:
        _silence_stdout()  # else Python retries the buffered bytes at exit: another error, exit 120
        raise CharrnnError(f"cannot write to standard output: {e.strerror or e}",
                           "check the free space where it is redirected") from None


def _silence_stdout() -> None:
    from ..training.stdout import silence
    silence(sys.stdout)


def _console():
    """A rich Console on stdout whose broken pipe ends the command like any other (exit 0, no message)."""
    from rich.console import Console
    console = Console(file=_stdout())

    def broken_pipe():
        raise BrokenPipeError
    console.on_broken_pipe = broken_pipe
    return console


def _deaf():
    """Ignore further Ctrl-C/SIGTERM while a failed or interrupted command leaves: the process is
    exiting anyway, and a signal landing in the message or while Python joins its worker threads at
    shutdown would print a traceback."""
    import signal
    import threading
    if threading.current_thread() is threading.main_thread():
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, signal.SIG_IGN)


def _escape(text: str) -> str:
    from rich.markup import escape
    return escape(text)


class _OneLineGroup(click.Group):
    """click's own usage errors (a bad option value, an unknown option, a missing argument) as one line,
    like every other error, instead of click's Usage/Try/Error block."""

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        from ..userfiles import tolerant_streams
        tolerant_streams()
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)
        except click.UsageError as e:
            if type(e).__name__ == "NoArgsIsHelpError":  # bare `charrnn` (click >= 8.2): the help is the answer
                e.show()
                sys.exit(e.exit_code)
            where = e.ctx.command_path if e.ctx is not None else "charrnn"
            _err_console().print(f"[bold red]error:[/] {_escape(e.format_message())} (see {_escape(where)} --help)")
            sys.exit(e.exit_code)
        except click.ClickException as e:
            e.show()
            sys.exit(e.exit_code)
        except click.Abort:  # Ctrl-C while click itself was running (parsing, a prompt)
            _err_console().print("[bold red]interrupted[/]")
            sys.exit(130)
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group(cls=_OneLineGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="charrnn")
def main():
    """charrnn: character-level LSTM/GRU/RNN language models, trained fast on the CPU."""


def write_file(path, data, what: str) -> None:
    """Write text or bytes where the user asked (atomically; a read-only file is refused); an OSError
    becomes the one-line "cannot write" error naming the option (`what`) to change."""
    from ..errors import cannot_write
    from .outfile import write_user_file
    try:
        write_user_file(path, data)
    except OSError as e:
        raise cannot_write(path, e, what) from None

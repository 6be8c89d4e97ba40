"""The one error type library code raises; only the CLI (cli/common.py) turns it into a message and an
exit code."""


class CharrnnError(Exception):
    """A problem the user can fix: what is wrong (message) and what to do (hint).

    exit_code 2 means a usage error (bad option, bad config, bad input file), 1 anything else.
    """

    def __init__(self, message: str, hint: str | None = None, exit_code: int = 1):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.exit_code = exit_code

    def one_line(self) -> str:
        """The message and hint joined on one line, as the CLI prints it."""
        return f"{self.message} ({self.hint})" if self.hint else self.message


class UsageError(CharrnnError):
    """Bad options, config or input: exit code 2."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message, hint, exit_code=2)


def cannot_write(path, e: OSError, option: str) -> UsageError:
    """The one message for a file the user named that cannot be written (`option`: the flag naming it)."""
    return UsageError(f"cannot write {path}: {e.strerror or e}", f"choose a writable {option} path")

"""Stop strings: end a generated text at the first occurrence of any of them (the stop string itself is
not part of the text), releasing text for streaming only once it cannot be the start of a match, so a
terminal never shows characters past the stop (or the first half of one)."""
from __future__ import annotations

from collections.abc import Iterable

from ..errors import UsageError


def check_stops(stop: str | Iterable[str] | None) -> tuple[str, ...]:
    """stop as a tuple of non-empty strings: None -> (), a str -> (str,); UsageError otherwise."""
    if stop is None:
        return ()
    items = [stop] if isinstance(stop, str) else list(stop) if isinstance(stop, (list, tuple)) else None
    if items is None or not all(isinstance(s, str) for s in items):
        raise UsageError(f"stop must be a str or a list of str, got {stop!r:.60}")
    if any(not s for s in items):
        raise UsageError("a stop string is empty", "give at least one character, e.g. --stop '\\n\\n'")
    return tuple(dict.fromkeys(items))  # duplicates dropped, order kept


class StopCutter:
    """One stream's text, cut at the first stop string. feed(piece) returns the text that is safe to
    show now; finish() returns what was held back (a possible start of a stop string that the text
    ended on). `done` once a stop string was found: later pieces are ignored."""

    def __init__(self, stops: tuple[str, ...]):
        self.stops = stops
        self.held = ""  # a suffix of the text so far that is a proper prefix of some stop string
        self.done = False

    def feed(self, piece: str) -> str:
        if self.done:
            return ""
        text = self.held + piece
        hits = [i for i in (text.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.done, self.held = True, ""
            return text[:min(hits)]
        keep = self._open_prefix(text)
        self.held = text[len(text) - keep:] if keep else ""
        return text[:len(text) - keep]

    def finish(self) -> str:
        out, self.held = self.held, ""
        return out

    def _open_prefix(self, text: str) -> int:
        """The length of the longest suffix of text that some stop string starts with (and is longer than)."""
        longest = max(len(s) for s in self.stops) - 1
        for k in range(min(longest, len(text)), 0, -1):
            tail = text[-k:]
            if any(len(s) > k and s.startswith(tail) for s in self.stops):
                return k
        return 0

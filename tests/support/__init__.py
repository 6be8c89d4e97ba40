"""Helpers shared by the tests, one module per kind: exe (the installed `charrnn`), pty (running it in a
pseudo-terminal), runs (text, corpora, run directories and their logs), models (small random models)."""

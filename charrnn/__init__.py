"""charrnn: character-level RNN language models (LSTM, GRU, RNN) trained fast on the CPU with Numba.

The public API (`charrnn.train`, `charrnn.load`, `charrnn.Model`, `charrnn.export`) lives in `charrnn.api` and is
imported on first use: `import charrnn` (and so `charrnn --help`) must not pay for numpy and Numba.
"""

from ._version import __version__

__all__ = ["Model", "export", "load", "train", "__version__"]

_LAZY = frozenset({"Model", "export", "load", "train"})


def __getattr__(name: str):
    # PEP 562: called only for names not found normally, i.e. the first access of each API name.
    if name in _LAZY:
        from . import api
        value = getattr(api, name)
        globals()[name] = value  # later lookups skip __getattr__
        return value
    raise AttributeError(f"module 'charrnn' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _LAZY)

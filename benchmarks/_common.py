"""Shared pieces of benchmarks/bench.py and benchmarks/quality.py: machine header, FLOP counts,
optional torch import, a silent reporter and a plain-text table printer.

Nothing here times anything on import; importing it is cheap (numpy only).
"""
from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

try:  # `python benchmarks/bench.py` from a checkout without `pip install -e .` or PYTHONPATH
    import charrnn  # noqa: F401
except ImportError:  # pragma: no cover - depends on how it is launched
    sys.path.insert(0, str(ROOT))
    import charrnn  # noqa: F401

GATES = {"lstm": 4, "gru": 3, "rnn": 1}
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS",
              "OMP_WAIT_POLICY", "NUMBA_CACHE_DIR")
# Set on some machines for old OpenBLAS builds; they push numpy onto slower kernels (Haswell's on an
# AVX-512 CPU: 2048^3 sgemm 215 vs 345 GFLOP/s) that a user's machine would not run. torch ignores them.
# Unset them in the benchmark's command line (env -u ...), not here: the header reports what was set.
OPENBLAS_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def blas_kernel() -> str:
    """The OpenBLAS core numpy's sgemm runs (threadpoolctl's `architecture`), or why it is unknown."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "unknown (pip install threadpoolctl)"
    import numpy  # noqa: F401 - load numpy's BLAS before asking
    for info in threadpool_info():
        if info.get("internal_api") == "openblas" and "numpy" in (info.get("filepath") or ""):
            return f"{info.get('architecture')} (OpenBLAS {info.get('version')}, numpy's)"
    return "not OpenBLAS or not found"


# -- FLOPs -------------------------------------------------------------------------------------------
def forward_flops_per_char(cell: str, vocab: int, hidden: int, layers: int) -> int:
    """Forward GEMM FLOPs per character (2 per multiply-add; biases and gate math not counted).

    layer 0:    2*V*G (input GEMM, the one-hot input counted as if it were a dense GEMM) + 2*H*G (recurrent)
    layer k>0:  2*H*G (input) + 2*H*G (recurrent)
    decoder:    2*H*V
    with G = gates*H (LSTM 4, GRU 3, RNN 1).
    """
    G = GATES[cell] * hidden
    f = 2 * vocab * G + 2 * hidden * G
    f += (layers - 1) * 4 * hidden * G
    f += 2 * hidden * vocab
    return f


def train_flops_per_char(cell: str, vocab: int, hidden: int, layers: int) -> int:
    """Training FLOPs per character: forward x 3 (backward = two GEMMs per forward GEMM)."""
    return 3 * forward_flops_per_char(cell, vocab, hidden, layers)


# -- optional torch ----------------------------------------------------------------------------------
def import_torch():
    """The torch module, or None when it is not installed (the [bench] extra brings it)."""
    try:
        import torch
    except ImportError:
        return None
    return torch


# -- a reporter that says nothing ---------------------------------------------------------------------
class SilentReporter:
    """Stands in for charrnn.training.report.Reporter in a hand-built Trainer: every call is a no-op."""

    def warn(self, *a, **k):
        pass

    info = step = sample = start = close = warn


# -- machine header ------------------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_isa() -> list[str]:
    """The AVX family flags of the first CPU (AVX2 / FMA / AVX-512 decide the GEMM ceiling)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = line.split(":", 1)[1].split()
                    return sorted(x for x in flags if x.startswith("avx") or x == "fma")
    except OSError:
        pass
    return []


def git_revision() -> str | None:
    try:
        rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return (rev + ("+dirty" if dirty else "")) or None
    except (OSError, subprocess.SubprocessError):
        return None


def machine_header(torch=None, torch_threads: int | None = None) -> dict:
    import numba
    import numpy as np
    import scipy
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    h = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "isa": " ".join(cpu_isa()),
        "cores": os.cpu_count(),
        "cores_usable": affinity,
        "loadavg_1_5_15": load,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "numba": numba.__version__,
        "torch": torch.__version__ if torch is not None else None,
        "charrnn": charrnn.__version__,
        "charrnn_git": git_revision(),
        "numba_threads": numba.config.NUMBA_NUM_THREADS,
        "torch_threads": (torch.get_num_threads() if torch is not None else None),
        "torch_threads_requested": torch_threads,
        "env": {k: os.environ.get(k) for k in THREAD_ENV if os.environ.get(k) is not None},
        "blas_kernel": blas_kernel(),
        "openblas_env": {k: os.environ.get(k) for k in OPENBLAS_ENV},
    }
    return h


def print_header(h: dict, title: str) -> None:
    print(f"== {title} ==")
    print(f"date      {h['date']}   charrnn {h['charrnn']} ({h['charrnn_git'] or 'no git'})")
    print(f"cpu       {h['cpu']}  [{h['isa'] or 'isa unknown'}]")
    print(f"cores     {h['cores']} (usable {h['cores_usable']}), load avg {h['loadavg_1_5_15']}")
    oe = h.get("openblas_env") or {}
    state = ", ".join(f"{k}={v}" for k, v in oe.items() if v is not None) or "unset (as on a user's machine)"
    print(f"blas      numpy sgemm kernel {h.get('blas_kernel')}; OPENBLAS_CORETYPE/L2_SIZE: {state}")
    print(f"versions  python {h['python']}, numpy {h['numpy']}, scipy {h['scipy']}, numba {h['numba']}, "
          f"torch {h['torch'] or 'not installed'}")
    env = ", ".join(f"{k}={v}" for k, v in h["env"].items()) or "no thread env vars set"
    print(f"threads   torch {h['torch_threads'] if h['torch'] else '-'} (set_num_threads), numba "
          f"{h['numba_threads']}, charrnn: {h.get('charrnn_threads') or _charrnn_threads()} threads (engine.threads), "
          f"numpy's OpenBLAS at 1 thread each; {env}")


def _charrnn_threads():
    try:
        from charrnn.engine.threads import threads
    except ImportError:  # older layouts: two fixed stream-group threads
        return "2 stream-group"
    return threads()


# -- plain-text table ------------------------------------------------------------------------------------
def print_table(headers: list[str], rows: list[list[str]], right: set[int] | None = None) -> None:
    """Fixed-width columns; columns in `right` (indices) are right-aligned."""
    right = right if right is not None else set(range(1, len(headers)))
    cells = [headers] + rows
    widths = [max(len(str(r[i])) for r in cells) for i in range(len(headers))]

    def fmt(r):
        return "  ".join(str(c).rjust(w) if i in right else str(c).ljust(w)
                         for i, (c, w) in enumerate(zip(r, widths))).rstrip()
    print(fmt(headers))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print(fmt(r))


def fmt_num(x, spec: str = ",.0f", none: str = "-") -> str:
    return none if x is None else format(x, spec)


def note_load_at_end(header: dict) -> None:
    """Record the load average after the measurements (a busy machine makes them meaningless)."""
    try:
        header["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass


def save_json(results: dict, path: str | None) -> None:
    """Write the results as JSON when --json was given."""
    if path:
        import json
        Path(path).write_text(json.dumps(results, indent=1, default=float) + "\n", encoding="utf-8")
        print(f"saved {path}")

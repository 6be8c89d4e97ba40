"""Text, corpora and run directories for the tests: sample lines, the tiny training options, reading a
run's metrics.jsonl, snapshots of a directory, the one-line error of a failed command."""
import hashlib
import json
import os
import random
from pathlib import Path

ENGLISH_LINES = [
    "the quick brown fox jumps over the lazy dog.",
    "a stitch in time saves nine, said the old tailor.",
    "all that glitters is not gold; all who wander are not lost.",
    "to be or not to be, that is the question.",
    "the rain in spain stays mainly in the plain.",
]
VIETNAMESE_LINES = [
    "Trăm năm trong cõi người ta, chữ tài chữ mệnh khéo là ghét nhau.",
    "Trải qua một cuộc bể dâu, những điều trông thấy mà đau đớn lòng.",
    "Lạ gì bỉ sắc tư phong, trời xanh quen thói má hồng đánh ghen.",
]

# Small model, small batches: every CLI train in the tests uses these unless it says otherwise.
TINY = ["--hidden", "16", "--layers", "1", "--batch-size", "4", "--seq-len", "16", "--plain",
        "--sample-length", "20"]


def make_text(lines: list[str], n_lines: int, seed: int = 0) -> str:
    """n_lines lines drawn (reproducibly) from lines: repetitive enough for a tiny model to learn fast."""
    rng = random.Random(seed)
    return "".join(rng.choice(lines) + "\n" for _ in range(n_lines))


def snapshot(root: Path, exclude: tuple[str, ...] = ()) -> dict[str, str]:
    """{relative path: sha256} of every file under root, skipping paths under any `exclude` prefix."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            if any(rel == e or rel.startswith(e.rstrip("/") + "/") for e in exclude):
                continue
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def one_line_error(result, code: int = 2) -> str:
    """Assert a CLI failure with exit `code`, no traceback, one non-empty line on stderr; return it."""
    assert result.exit_code == code, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip() and not ln.startswith("warning:")]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def read_metrics(run: Path) -> list[dict]:
    """Every record of a run directory's metrics.jsonl, in order."""
    return [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]


def step_records(run: Path) -> list[dict]:
    """metrics.jsonl's step records, without a session's closing {"event": ...} record."""
    return [r for r in read_metrics(run) if "event" not in r]

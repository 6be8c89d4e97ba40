"""The README's Python API example runs as written (in a scratch directory holding the corpus)."""
import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_readme_python_example_runs(tmp_path, monkeypatch, capsys):
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks, "README has no python example"
    (tmp_path / "corpora").mkdir()
    os.symlink(ROOT / "corpora" / "tinyshakespeare.txt", tmp_path / "corpora" / "tinyshakespeare.txt")
    monkeypatch.chdir(tmp_path)
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {"__name__": "__readme__"})
    out = capsys.readouterr().out
    assert out.strip(), "the example prints a sample and a loss"
    assert (tmp_path / "runs" / "api-demo" / "best.npz").exists()

"""The README's examples run as written: its Python API example, and every shell example in the order the
README gives them, in one shell, from a fresh clone in a scratch directory.

The shell examples run with the substitutions in SUBSTITUTE (each one a README text, what runs instead,
and why); every entry must still match the README, so the table cannot outlive the text it describes.
The files the examples take as the reader's own (my.txt, book1.txt, poems/, ...) are made by
reader_files(). Blocks that need a service the test does not have are in SKIP_BLOCKS, with the reason.
"""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
SHORT = "--max-steps 2 --eval-every 0 --sample-every 0"

# (README text, what runs instead, why). Applied to each command line in order; regexes.
SUBSTITUTE = [
    (r"^git clone <url of this repository> charrnn && cd charrnn$",
     "git clone -q {root} charrnn && cd charrnn && cp -R {files}/. .",
     "no network: clone this checkout, then add the reader's own files (reader_files)"),
    (r"^python3 -m venv \.venv && \. \.venv/bin/activate$", ":",
     "the test's own venv has this checkout installed (CI's .ci/run makes a fresh one and installs it)"),
    (r"^pip install \.$", ":", "installed already, as above"),
    (r"^pip install -e '\.\[test\]' && python -m pytest -q$", ":", "that is this test suite itself"),
    (r"^pip install 'charrnn\[export\]'$", ":", "the test extra includes the export extra"),
    (r"^(charrnn train\b.*)$", rf"\1 {SHORT}",
     "the README's budgets are minutes to an hour: 2 steps each, evaluated at the last (the last option given wins)"),
    (r"^(charrnn sweep (examples/sweep-shakespeare\.yaml|my-sweep\.yaml my\.txt)\b.*)$", r"\1 --trials 2",
     "two trials of the sweep file instead of its 20 (each trial's budget is cut by sweep_files())"),
]
SKIP_BLOCKS = {
    "export CHARRNN_SWEEP_STORAGE": "a cluster sweep needs a PostgreSQL server (tests/test_sweep_cluster.py "
                                    "runs one under CI)",
    "apt-get install openmpi-bin": "installs system packages (CI's .ci/mpi.sh installs these; the test extra "
                                   "brings mpi4py)",
    "mpirun -q -n 4 charrnn train": "MPI launchers and a cluster (tests/mpi/ run mpirun on one host and across two "
                                    "network namespaces, under CI with .ci/mpi.sh's Open MPI)",
    "charrnn serve --watch runs/live": "a server runs until it is stopped (tests/test_serve*.py run it on "
                                       "loopback, with the curl and openai examples' requests)",
}


def shell_commands() -> list[str]:
    """Every command line of the README's ```bash blocks, in order, comments dropped."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        if any(marker in block for marker in SKIP_BLOCKS):
            continue
        for line in block.splitlines():
            line = re.sub(r"\s{2,}#.*$", "", line).strip()  # the README puts two spaces before a comment
            if line and not line.startswith("#"):
                out.append(line)
    return out


def substituted(commands: list[str], root: Path, files: Path) -> tuple[list[str], set[int]]:
    lines, used = [], set()
    for command in commands:
        for i, (pattern, replacement, _) in enumerate(SUBSTITUTE):
            if re.search(pattern, command):
                command = re.sub(pattern, replacement.format(root=root, files=files) if "{" in replacement
                                 else replacement, command)
                used.add(i)
                break
        lines.append(command)
    return lines, used


def reader_files(d: Path) -> None:
    """The texts the README's examples call the reader's own: slices of tiny Shakespeare and Python files."""
    text = (ROOT / "corpora" / "tinyshakespeare.txt").read_text(encoding="utf-8")
    d.mkdir()
    (d / "my.txt").write_text(text[:60_000], encoding="utf-8")
    known = set(text[:60_000])  # new.txt fine-tunes runs/my, so it holds only characters my.txt has
    (d / "new.txt").write_text("".join(c for c in text[60_000:80_000] if c in known), encoding="utf-8")
    for name, part in (("book1.txt", 1), ("book2.txt", 2), ("a.txt", 3), ("b.txt", 4)):
        (d / name).write_text(text[part * 20_000:(part + 1) * 20_000], encoding="utf-8")
    (d / "poems" / "sonnets").mkdir(parents=True)
    (d / "poems" / "one.txt").write_text(text[200_000:215_000], encoding="utf-8")
    (d / "poems" / "sonnets" / "two.txt").write_text(text[215_000:230_000], encoding="utf-8")
    (d / "src").mkdir()
    for f in sorted((ROOT / "charrnn").glob("*.py"))[:8]:
        shutil.copy(f, d / "src" / f.name)
    (d / "src" / "notes.md").write_text("not read: --glob '*.py'\n", encoding="utf-8")
    sweep = "train: {max_steps: 4, eval_every: 2, sample_every: 0}\nspace:\n  optim.lr: {log_uniform: [1.0e-3, 1.0e-2]}\n"
    (d / "my-sweep.yaml").write_text(sweep + "model: {hidden_size: 32}\nsweep: {trials: 4, seed: 0}\n", encoding="utf-8")


def sweep_files(script: list[str]) -> list[str]:
    """After the clone: the bundled sweep file's per-trial budget (60 s) becomes 4 steps, and its hidden
    sizes (128 to 512) 16 or 32, so its two trials take seconds."""
    cut = ("sed -i -e 's/^train: {max_time: 60, eval_every: 50,/train: {max_steps: 4, eval_every: 2,/' "
           "-e 's/choice: \\[128, 256, 512\\]/choice: [16, 32]/' examples/sweep-shakespeare.yaml && "
           "grep -q 'max_steps: 4' examples/sweep-shakespeare.yaml && grep -q '\\[16, 32\\]' "
           "examples/sweep-shakespeare.yaml")
    return script[:1] + [cut] + script[1:]


def test_readme_substitutions_all_apply():
    """Each substitution still matches a README command (else the table describes a README that is gone)."""
    _, used = substituted(shell_commands(), ROOT, ROOT)
    assert used == set(range(len(SUBSTITUTE))), [SUBSTITUTE[i][0] for i in set(range(len(SUBSTITUTE))) - used]
    assert all(any(m in block for block in re.findall(r"```bash\n(.*?)```", README, re.S)) for m in SKIP_BLOCKS)


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git to clone the checkout")
def test_readme_shell_examples_run_in_order(tmp_path):
    files = tmp_path / "reader"
    reader_files(files)
    script, _ = substituted(shell_commands(), ROOT, files)
    script = sweep_files(script)
    assert script[0].startswith("git clone") and any(c.startswith("charrnn train") for c in script)
    work = tmp_path / "work"
    work.mkdir()
    # One shell, as a reader types them: each command echoed, the first failure ends it with its status.
    body = "set -e\n" + "".join(f"echo \">>> $(date +%s.%N) {c.replace(chr(39), '').replace(chr(34), '')}\"\n"
                                 f"{c} </dev/null\n" for c in script) + "echo \">>> $(date +%s.%N) end\"\n"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "COLUMNS": "100"}
    done = subprocess.run(["bash", "-c", body], cwd=work, env=env, capture_output=True, text=True, timeout=900)
    marks = [(float(t), c) for t, c in re.findall(r"^>>> (\S+) (.*)$", done.stdout, re.M)]
    ran = [c for _, c in marks[:len(script)]]
    assert done.returncode == 0, (f"README command {len(ran)} of {len(script)} failed: {ran[-1] if ran else '?'}\n"
                                  f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    assert len(ran) == len(script)
    took = sorted(((b[0] - a[0], a[1]) for a, b in zip(marks, marks[1:])), reverse=True)
    print("slowest README commands:", *(f"{s:6.1f} s  {c}" for s, c in took[:6]), sep="\n")
    clone = work / "charrnn"
    for run in ("first", "tinyshakespeare", "my", "my-big", "book1", "poems", "src", "a", "my-new", "my-ext",
                "my-rep"):
        assert (clone / "runs" / run / "best.npz").is_file(), run
    assert (clone / "my.onnx").is_file() and (clone / "my.safetensors").is_file()
    assert (clone / "sweeps" / "my" / "best.yaml").is_file()


def test_readme_python_example_runs(tmp_path, monkeypatch, capsys):
    """Twice: a reader who runs the snippet again must not meet an error (it passes force=True)."""
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    assert blocks, "README has no python example"
    (tmp_path / "corpora").mkdir()
    os.symlink(ROOT / "corpora" / "tinyshakespeare.txt", tmp_path / "corpora" / "tinyshakespeare.txt")
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        for code in blocks:
            exec(compile(code, "README.md", "exec"), {"__name__": "__readme__"})
        out = capsys.readouterr().out
        printed = out.split("\ngo on with: ", 1)[1].split("\n", 1)[1]  # after the run's log (live=False)
        assert printed.startswith("ROMEO:"), "the sample echoes its prime, as the README says"
    assert (tmp_path / "runs" / "api-demo" / "best.npz").exists()

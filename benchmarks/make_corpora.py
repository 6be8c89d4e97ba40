#!/usr/bin/env python
"""Build the extra corpora of the quality benchmark from material already on the machine, reproducibly.

  pystdlib     the Python standard library's own top-level modules (Lib/*.py of the interpreter running
               this script), whole files in sorted file-name order, up to --max-chars characters.
  manpages-de  the German manual pages installed under /usr/share/man/de (the translations that Debian
               packages such as apt, dpkg, man-db and passwd ship), each rendered to plain text by
               `man -l` at 80 columns and `col -bx`, in sorted path order, up to --max-chars characters.
               German prose with umlauts and ß, plus the option names and command lines of a manual.

Both stop at whole files, so the text is the same on any machine with the same Python version (pystdlib)
or the same packages and groff (manpages-de); NAME.json beside NAME.txt records the source, the files
used, the versions and the sha256, to compare. The default size is about tiny Shakespeare's (1.1 M chars),
so a time budget buys a similar number of epochs. Output goes to corpora/built/ (not committed).

    python benchmarks/make_corpora.py                      # both, into corpora/built/
    python benchmarks/make_corpora.py --names pystdlib --max-chars 2000000
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILT = ROOT / "corpora" / "built"
NAMES = ("pystdlib", "manpages-de")
MAN_DIR = Path("/usr/share/man/de")
DEFAULT_CHARS = 1_100_000


def _pystdlib_files() -> list[tuple[str, str]]:
    lib = Path(sysconfig.get_paths()["stdlib"])
    out = []
    for p in sorted(lib.glob("*.py")):
        try:
            out.append((p.name, p.read_text(encoding="utf-8")))
        except (UnicodeDecodeError, OSError):
            continue  # a module in another encoding would make the vocabulary depend on the decoder
    return out


def _man_files() -> list[tuple[str, str]]:
    if not MAN_DIR.is_dir():
        raise SystemExit(f"error: {MAN_DIR} is missing: install manpages-de (apt-get install manpages-de)")
    if not (shutil.which("man") and shutil.which("col")):
        raise SystemExit("error: rendering the manual pages needs `man` and `col` (apt-get install man-db bsdextrautils)")
    env = dict(os.environ, MANWIDTH="80", LANG="C.UTF-8", LC_ALL="C.UTF-8", MAN_KEEP_FORMATTING="")
    out = []
    for p in sorted(MAN_DIR.glob("man*/*")):
        if p.is_symlink() or not p.is_file():
            continue  # aliases of pages already included
        head = gzip.open(p).read(200) if p.suffix == ".gz" else p.read_bytes()[:200]
        if head.startswith(b".so "):
            continue  # a ".so other-page" stub: the same text again
        man = subprocess.run(["man", "-l", "-E", "UTF-8", str(p)], capture_output=True, env=env, timeout=60)
        if man.returncode != 0 or not man.stdout:
            continue
        col = subprocess.run(["col", "-bx"], input=man.stdout, capture_output=True, env=env, timeout=60)
        text = col.stdout.decode("utf-8", errors="replace")
        if "\ufffd" not in text:
            out.append((str(p.relative_to(MAN_DIR)), text))
    return out


def _versions(name: str, used: list[str]) -> dict:
    """pystdlib: the Python version. manpages-de: the Debian packages that own the pages used, and groff."""
    if name == "pystdlib":
        return {"python": platform.python_version(), "stdlib": sysconfig.get_paths()["stdlib"]}
    owners = subprocess.run(["dpkg", "-S", *(str(MAN_DIR / f) for f in used)], capture_output=True, text=True)
    pkgs = sorted({line.split(":")[0] for line in owners.stdout.splitlines() if ":" in line} | {"groff-base"})
    v = {}
    for pkg in pkgs:
        r = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True)
        v[pkg] = r.stdout.strip() if r.returncode == 0 else None
    return v


def build(name: str, out_dir: Path = BUILT, max_chars: int = DEFAULT_CHARS) -> Path:
    files = _pystdlib_files() if name == "pystdlib" else _man_files()
    parts, used, n = [], [], 0
    for fname, text in files:
        if not text.endswith("\n"):
            text += "\n"
        if n + len(text) > max_chars and parts:
            break
        parts.append(text)
        used.append(fname)
        n += len(text)
    body = "".join(parts)[:max_chars]
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.txt"
    tmp = path.with_suffix(".txt.tmp")
    tmp.write_text(body, encoding="utf-8")
    os.replace(tmp, path)
    manifest = {"name": name, "chars": len(body), "vocab": len(set(body)),
                "non_ascii_chars": sum(1 for c in body if ord(c) > 127),
                "sha256": hashlib.sha256(body.encode("utf-8")).hexdigest(), "files": used,
                "versions": _versions(name, used), "max_chars": max_chars, "built_by": "benchmarks/make_corpora.py"}
    (out_dir / f"{name}.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return path


def corpus_path(name: str, out_dir: Path = BUILT) -> Path:
    """The built corpus NAME, building it first when it is not there yet."""
    path = out_dir / f"{name}.txt"
    return path if path.is_file() else build(name, out_dir)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--names", default=",".join(NAMES), help=f"comma-separated, from: {', '.join(NAMES)}")
    p.add_argument("--out", default=str(BUILT), help="output directory (default corpora/built/)")
    p.add_argument("--max-chars", type=int, default=DEFAULT_CHARS)
    a = p.parse_args(argv)
    names = [x for x in a.names.split(",") if x]
    bad = [x for x in names if x not in NAMES]
    if bad or a.max_chars < 1000:
        p.error(f"unknown corpus {bad[0]!r}" if bad else "--max-chars must be >= 1000")
    for name in names:
        path = build(name, Path(a.out), a.max_chars)
        m = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
        print(f"{path}: {m['chars']:,} chars, vocab {m['vocab']}, {m['non_ascii_chars']:,} non-ASCII, "
              f"{len(m['files'])} files, sha256 {m['sha256'][:12]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

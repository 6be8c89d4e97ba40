"""The package's shape (docs/architecture.md): no import cycles, lazy imports included, and every import
goes to the same or a lower layer. Read from the source with ast, so an import inside a function counts."""
import ast
from pathlib import Path

import charrnn

ROOT = Path(charrnn.__file__).resolve().parent
# Lowest first. A module may import modules of its own layer or below, never above.
LAYERS = [
    {"errors", "_version", "atomic", "userfiles", "yamlread"},
    {"engine"},
    {"config"},
    {"data", "checkpoints"},
    {"sampling", "insight", "formats", "serve", "distributed"},
    {"training"},
    {"api"},
    {"sweep"},  # a sweep trial is a whole `charrnn.train` run
    {"cli", "__main__", "__init__"},
]
RANK = {part: i for i, layer in enumerate(LAYERS) for part in layer}


def module_names() -> dict[str, Path]:
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = ["charrnn", *path.relative_to(ROOT).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The charrnn modules `name` imports (a name imported from a package counts as its submodule when
    it is one, else as the package)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(base + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base not in modules:
                continue
            for a in node.names:
                found.add(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base)
    found.discard(name)
    return found


def graph() -> dict[str, set[str]]:
    modules = module_names()
    return {name: imports(name, path, modules) for name, path in modules.items()}


def layer_of(name: str) -> int:
    parts = name.split(".")
    key = "__init__" if len(parts) == 1 else parts[1]
    assert key in RANK, f"{name}: no layer in tests/test_layers.py (add it, and to docs/architecture.md)"
    return RANK[key]


def test_no_import_cycles():
    g = graph()
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for m in sorted(g[n]):
            if state.get(m) == 1:
                cycle = stack[stack.index(m):] + [m]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(g):
        if n not in state:
            visit(n)


def test_imports_go_down_the_layers():
    upward = [f"{a} imports {b}" for a, targets in sorted(graph().items()) for b in sorted(targets)
              if layer_of(b) > layer_of(a)]
    assert not upward, "\n".join(upward)


def test_inner_modules_do_not_import_the_package_itself():
    """`from charrnn import __version__` inside the package runs charrnn/__init__ first and ties every layer
    to the top; the version lives in a leaf module."""
    g = graph()
    assert [n for n, targets in g.items() if "charrnn" in targets and n != "charrnn.__main__"] == []


def test_commands_without_kernels_import_no_numba():
    """The CLI's group and the sweep's parent process (which only starts workers) never load Numba."""
    import subprocess
    import sys
    code = "import sys, charrnn.cli, charrnn.sweep.main; assert 'numba' not in sys.modules, 'numba imported'"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr

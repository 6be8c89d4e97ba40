"""The longest functions under charrnn/ (lines from `def` to the last line of the body, docstring
included; a click command's option decorators are not): `python tools/longest_functions.py [N]`. The project's bar is ~60 lines a function."""
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "charrnn"


def functions(root: Path = ROOT) -> list[tuple[int, str]]:
    out = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out.append((node.end_lineno - node.lineno + 1, f"{path.relative_to(root.parent)}:{node.lineno} {node.name}"))
    return sorted(out, reverse=True)


if __name__ == "__main__":
    for n, where in functions()[: int(sys.argv[1]) if len(sys.argv) > 1 else 10]:
        print(f"{n:4d}  {where}")

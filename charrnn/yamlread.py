"""YAML from a user's file or option, read safely: yaml.safe_load (no objects, no code) with the
expansion of aliases capped, so a few hundred bytes cannot make billions of values (an alias bomb)."""
from typing import Any

import yaml

from .errors import UsageError

# Nodes a YAML document may expand to through its aliases: a config holds about a hundred, and an alias
# bomb (each anchor a list of the one before, nine times over) expands to billions.
MAX_YAML_NODES = 100_000


class BoundedLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a document whose aliases (*name) expand to more than MAX_YAML_NODES
    nodes, or refer to themselves, before anything is constructed from it."""

    def compose_document(self):
        node = super().compose_document()
        _expanded_size(node, {}, set())
        return node


class TooBig(yaml.YAMLError):
    """A document refused for what its aliases expand to (the message says how)."""


def _expanded_size(node, sizes: dict[int, int], open_nodes: set[int]) -> int:
    """Nodes below and including node with every alias expanded (memoised per node; a cycle is refused)."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_nodes:
        raise TooBig("an alias refers to the node that holds it")
    open_nodes.add(key)
    n = 1
    if isinstance(node.value, list):
        for child in node.value:
            for part in (child if isinstance(child, tuple) else (child,)):  # a mapping's (key, value) pairs
                n += _expanded_size(part, sizes, open_nodes)
                if n > MAX_YAML_NODES:
                    raise TooBig(f"its aliases expand it to more than {MAX_YAML_NODES:,} values")
    open_nodes.discard(key)
    sizes[key] = n
    return n


def safe_yaml(text: str, source: str) -> Any:
    """yaml.safe_load with alias expansion capped; one-line UsageError on bad YAML naming source."""
    try:
        return yaml.load(text, Loader=BoundedLoader)  # noqa: S506  (a SafeLoader subclass)
    except TooBig as e:
        raise UsageError(f"YAML in {source} refused: {e}",
                         "write the values out instead of nesting aliases (*name)") from None
    except RecursionError:
        raise UsageError(f"YAML in {source} is nested too deeply", "write a flat config") from None
    except yaml.YAMLError as e:
        # Parser errors carry a mark (0-based line/column); the reader's encoding errors do not.
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or getattr(e, "context", None) or str(e)
        raise UsageError(f"invalid YAML in {source}{where}: {' '.join(str(problem).split())}",
                         "check the indentation and 'key: value' syntax there") from None

"""YAML files as ``fraud-rules`` reads them: often straight from a pull request, so bounded.

PyYAML's safe loader builds no objects but expands aliases, so a file of a few hundred bytes
(anchors of anchors: a "billion laughs") can need gigabytes. A file is read only if it is at
most :data:`MAX_FILE_BYTES` and its documents, aliases expanded, hold at most
:data:`MAX_NODES` nodes, counted on the composed graph before anything is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import yaml

MAX_FILE_BYTES: Final = 4 << 20
MAX_NODES: Final = 1_000_000


class FileProblem(ValueError):
    """A file that cannot be read as YAML, with why."""


def read_documents(path: Path) -> list[Any]:
    """Every YAML document of ``path``; :class:`FileProblem` when it is missing, too big, not
    YAML, or expands past :data:`MAX_NODES` nodes."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise FileProblem(f"{path}: {size:,} bytes; files up to {MAX_FILE_BYTES:,} are read")
        text = path.read_text()
        expanded = sum(_expanded_size(node, {}) for node in yaml.compose_all(text, yaml.SafeLoader))
        if expanded > MAX_NODES:
            raise FileProblem(
                f"{path}: {expanded:,} YAML nodes once its aliases are expanded; at most "
                f"{MAX_NODES:,} are read"
            )
        return list(yaml.safe_load_all(text))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise FileProblem(f"{path}: {exc}") from exc


def _expanded_size(node: yaml.Node, seen: dict[int, int]) -> int:
    """Nodes under ``node``, each alias counted as a copy of what it names (memoised: an
    alias is a shared node in the composed graph, so this is linear in the file)."""
    known = seen.get(id(node))
    if known is not None:
        return known
    seen[id(node)] = 1  # a node reached again while counting it (a recursive alias)
    total = 1
    if isinstance(node, yaml.SequenceNode):
        total += sum(_expanded_size(child, seen) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        total += sum(_expanded_size(k, seen) + _expanded_size(v, seen) for k, v in node.value)
    seen[id(node)] = total
    return total

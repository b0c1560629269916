"""YAML loading that remembers where each value came from.

Validation errors must say *which line* to fix; plain ``yaml.safe_load`` loses
that, so we compose the node graph and record the line of every key path.
"""

from __future__ import annotations

from typing import Any

import yaml

Path_ = tuple  # a key path: ("nodes", 1, "resources", "cpu")


def load_with_lines(text: str, file: str = "<string>") -> tuple[Any, dict[Path_, int]]:
    """Parse YAML, returning the data and a map key-path -> 1-based line."""
    from .errors import TopologyError

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise TopologyError(f"not valid YAML: {problem}", file=file, line=line) from exc
    lines: dict[Path_, int] = {}
    if root is None:
        return None, lines
    constructor = yaml.SafeLoader("")

    def walk(node: yaml.Node, path: Path_) -> Any:
        lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            out: dict = {}
            for knode, vnode in node.value:
                key = constructor.construct_object(knode, deep=True)
                if key in out:
                    raise TopologyError(
                        f"duplicate key {key!r}", file=file, path=fmt_path(path + (key,)), line=knode.start_mark.line + 1
                    )
                out[key] = walk(vnode, path + (key,))
                lines[path + (key,)] = knode.start_mark.line + 1
            return out
        if isinstance(node, yaml.SequenceNode):
            return [walk(v, path + (i,)) for i, v in enumerate(node.value)]
        return constructor.construct_object(node, deep=True)

    return walk(root, ()), lines


def fmt_path(path: Path_) -> str:
    """("nodes", 1, "cpu") -> "nodes[1].cpu"."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out

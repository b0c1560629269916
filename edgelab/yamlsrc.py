"""YAML loading that remembers where each value came from, within bounded time and memory.

Validation errors must say *which line* to fix; plain ``yaml.safe_load`` loses
that, so we compose the node graph and record the line of every key path.

Topology files come from anyone, so every input is bounded before it can cost
much: the size (``MAX_BYTES``) before parsing, then one pass over the parser's
event stream (iterative: no recursion, so 5000-deep nesting is an error, not a
RecursionError) that enforces the nesting depth, the number of aliases and a
budget of values, so that an alias bomb ("billion laughs") or a recursive
alias is an error, not exhausted memory.
Keys must be plain scalars: complex keys and merge keys (``<<``) are refused
with their line, as is text that is not UTF-8.
"""

from __future__ import annotations

from typing import Any

import yaml

Path_ = tuple  # a key path: ("nodes", 1, "resources", "cpu")

#: Largest topology file accepted: real ones are a few KiB; this leaves room for
#: generated ones (thousands of groups) and keeps a parse under about a second.
MAX_BYTES = 1 << 20
#: Deepest nesting of mappings and sequences (a topology needs 5).
MAX_DEPTH = 32
#: Aliases (``*name``) in one file: a few are handy, many are an expansion attack.
MAX_ALIASES = 64
#: Values in all, aliases counted as what they stand for: bounds time and memory whatever
#: the aliases do (a topology of MAX_NODES groups in flow style has about 40 000).
MAX_NODES = 100_000

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MERGE_TAG = "tag:yaml.org,2002:merge"
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"


def decode(data: bytes, file: str = "<string>") -> str:
    """UTF-8 text of a topology file, or a TopologyError with the line of the first bad byte."""
    from .errors import TopologyError

    if len(data) > MAX_BYTES:
        raise TopologyError(f"file is larger than the {MAX_BYTES // 1024} KiB limit for a topology "
                            f"({len(data)} bytes or more); split it or generate fewer groups", file=file)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise TopologyError(f"not UTF-8 text: byte 0x{data[e.start]:02x} at column {col}; save the file as UTF-8",
                            file=file, line=line) from None


def _raise_yaml(exc: yaml.YAMLError, file: str) -> None:
    from .errors import TopologyError

    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    line = mark.line + 1 if mark is not None else None
    problem = getattr(exc, "problem", None) or str(exc)
    raise TopologyError(f"not valid YAML: {problem}", file=file, line=line) from None


class _Frame:
    """An open mapping or sequence while the event stream is read."""

    __slots__ = ("value", "path", "anchor", "key", "key_line", "weight")

    def __init__(self, value: Any, path: Path_, anchor: Any) -> None:
        self.value = value
        self.path = path
        self.anchor = anchor
        self.key: Any = _NO_KEY
        self.key_line = 0
        self.weight = 1


_NO_KEY = object()


def load_with_lines(text: str, file: str = "<string>") -> tuple[Any, dict[Path_, int]]:
    """Parse YAML, returning the data and a map key-path -> 1-based line.

    One pass over the parser's events with an explicit stack (no recursion, so
    no depth can overflow a stack), stopping at the first budget exceeded. An
    alias shares the anchored value instead of copying it, and its weight (the
    values it stands for) counts against ``MAX_NODES``, so no later traversal
    can be made to visit more than that either.
    """
    from .errors import TopologyError

    if len(text) > MAX_BYTES:
        raise TopologyError(f"text is larger than the {MAX_BYTES // 1024} KiB limit for a topology "
                            f"({len(text)} characters)", file=file)
    lines: dict[Path_, int] = {}
    resolver = yaml.resolver.Resolver()
    constructor = yaml.SafeLoader("")
    anchors: dict[str, tuple[Any, int]] = {}   # name -> (value, weight)
    open_anchors: set[str] = set()
    stack: list[_Frame] = []
    root: list[Any] = []
    total = aliases = documents = 0

    def fail(message: str, path: Path_, line: int) -> TopologyError:
        return TopologyError(message, file=file, path=fmt_path(path), line=line)

    def child_path(line: int) -> Path_:
        if not stack:
            return ()
        f = stack[-1]
        if isinstance(f.value, list):
            return f.path + (len(f.value),)
        if f.key is _NO_KEY:
            raise fail("a key must be a plain name, not a mapping, a list or an alias", f.path, line)
        return f.path + (f.key,)

    def attach(value: Any, weight: int, path: Path_, line: int, new: int = 1) -> None:
        """Add ``value`` (standing for ``weight`` values, ``new`` of them not counted yet) to its parent."""
        nonlocal total
        total += new
        if total > MAX_NODES:
            raise fail(f"more than {MAX_NODES} values (aliases expanded); a topology has far fewer", path, line)
        lines.setdefault(path, line)
        if not stack:
            root.append(value)
            return
        f = stack[-1]
        f.weight += weight
        if isinstance(f.value, list):
            f.value.append(value)
        else:
            f.value[f.key] = value
            lines[path] = f.key_line
            f.key = _NO_KEY

    def scalar(ev: yaml.ScalarEvent, path: Path_, line: int) -> Any:
        tag = ev.tag
        if tag is None or tag == "!":
            tag = resolver.resolve(yaml.ScalarNode, ev.value, ev.implicit)
        if tag == _MERGE_TAG:
            raise fail("merge keys (<<) are not supported; write the keys out", path, line)
        make = constructor.yaml_constructors.get(tag)
        if make is None:
            raise fail(f"cannot read this value: tag {tag!r} is not allowed", path, line)
        try:
            return make(constructor, yaml.ScalarNode(tag, ev.value, ev.start_mark, ev.end_mark, ev.style))
        except (yaml.YAMLError, ValueError, TypeError, OverflowError) as exc:
            problem = getattr(exc, "problem", None) or str(exc)
            raise fail(f"cannot read this value: {problem}", path, line) from None

    try:
        for ev in yaml.parse(text, Loader=_Loader):
            line = ev.start_mark.line + 1 if ev.start_mark is not None else None
            if isinstance(ev, yaml.DocumentStartEvent):
                documents += 1
                if documents > 1:
                    raise fail("expected a single YAML document, found another (---)", (), line)
            elif isinstance(ev, yaml.ScalarEvent):
                if stack and isinstance(stack[-1].value, dict) and stack[-1].key is _NO_KEY:
                    f = stack[-1]
                    key = scalar(ev, f.path, line)
                    if key in f.value:
                        raise fail(f"duplicate key {key!r}", f.path + (key,), line)
                    f.key, f.key_line = key, line
                    continue
                path = child_path(line)
                value = scalar(ev, path, line)
                if ev.anchor is not None:
                    anchors[ev.anchor] = (value, 1)
                attach(value, 1, path, line)
            elif isinstance(ev, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                path = child_path(line)
                if len(stack) >= MAX_DEPTH:
                    raise fail(f"nested more than {MAX_DEPTH} levels deep; a topology needs about 5", path, line)
                if ev.tag not in (None, "!", _MAP_TAG, _SEQ_TAG):
                    raise fail(f"cannot read this value: tag {ev.tag!r} is not allowed", path, line)
                if ev.anchor is not None:
                    open_anchors.add(ev.anchor)
                lines[path] = line
                stack.append(_Frame({} if isinstance(ev, yaml.MappingStartEvent) else [], path, ev.anchor))
            elif isinstance(ev, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                f = stack.pop()
                if f.anchor is not None:
                    open_anchors.discard(f.anchor)
                    anchors[f.anchor] = (f.value, f.weight)
                attach(f.value, f.weight, f.path, lines[f.path])
            elif isinstance(ev, yaml.AliasEvent):
                aliases += 1
                path = child_path(line)
                if aliases > MAX_ALIASES:
                    raise fail(f"more than {MAX_ALIASES} aliases (*name); write the values out", path, line)
                if ev.anchor in open_anchors:
                    raise fail(f"recursive alias *{ev.anchor}: a value that contains itself", path, line)
                if ev.anchor not in anchors:
                    raise fail(f"alias *{ev.anchor} names no anchor (&{ev.anchor}) defined before it", path, line)
                value, weight = anchors[ev.anchor]
                attach(value, weight, path, line, new=weight)
    except yaml.YAMLError as exc:
        _raise_yaml(exc, file)
    return (root[0] if root else None), lines


def fmt_path(path: Path_) -> str:
    """("nodes", 1, "cpu") -> "nodes[1].cpu"."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out

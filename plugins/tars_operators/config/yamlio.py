"""YAML reading: a fast path for valid files and a position-tracking path for error messages.

Both are ``safe_load`` semantics (no tags that build Python objects). Valid configs go through
libyaml when it is available; only a file that fails validation is parsed again with
:class:`PositionLoader` so every error can point at a line and column.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, cast

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.resolver import Resolver

PathKey = tuple[str | int, ...]

_CBase: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
_SEQ = "tag:yaml.org,2002:seq"
_MAP = "tag:yaml.org,2002:map"
_MERGE = "tag:yaml.org,2002:merge"


@dataclass(frozen=True)
class Pos:
    """A 1-based line and column in a file."""

    line: int
    col: int


@dataclass(frozen=True)
class Spot:
    """Where a mapping key and its value (or a list item) start."""

    key: Pos
    value: Pos


class Positions:
    """Line/column of every key and list item of one document, by path."""

    def __init__(self, spots: dict[PathKey, Spot]):
        self.spots = spots

    def depth(self, path: PathKey) -> int:
        """Length of the longest prefix of ``path`` present in the document."""
        for size in range(len(path), 0, -1):
            if path[:size] in self.spots:
                return size
        return 0

    def locate(self, path: PathKey, at_key: bool = False) -> Pos:
        """The position of ``path``, or of its deepest existing ancestor's key."""
        size = self.depth(path)
        if size == 0:
            return Pos(1, 1)
        spot = self.spots[path[:size]]
        if size < len(path) or at_key:
            return spot.key
        return spot.value


class PositionLoader(yaml.SafeLoader):
    """SafeLoader that keeps the node tree so positions can be read after construction."""


# Tag resolution of a node depends only on (kind, value, implicit) for the safe resolver (it
# has no path resolvers), and keys and values repeat a lot: memoise it in C, where a hit costs
# no Python frame. libyaml's parser calls ``self.resolve`` for every node.
# Small: the repeated keys and values stay in it, and each entry is one more object for the
# garbage collector to visit for the life of the process.
_resolve = lru_cache(maxsize=1024)(Resolver().resolve)


class _FastLoader(_CBase):  # type: ignore[misc]
    """libyaml parser without per-node Python calls the safe schema does not need."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self.resolve = _resolve
        # Path resolvers are never registered on the safe loader, so libyaml's composer calls
        # these two for every node to do nothing; C callables that accept the same arguments
        # and return an ignored value save two Python frames per node.
        self.descend_resolver = slice
        self.ascend_resolver = tuple


def _construct(loader: Any, node: Node, memo: dict[int, Any]) -> Any:
    # A direct walk for the common tags; anything else goes to SafeConstructor. Plain strings
    # (most keys and values) are taken inline, without a call. Collections are memoised by
    # node so aliases share one object (no alias-bomb blow-up).
    cls = node.__class__
    if cls is ScalarNode:
        return node.value if node.tag == _STR else _scalar(loader, cast(ScalarNode, node))
    done = memo.get(id(node))
    if done is not None:
        return done
    if cls is SequenceNode and node.tag == _SEQ:
        items: list[Any] = []
        memo[id(node)] = items
        for item in node.value:
            if item.__class__ is ScalarNode and item.tag == _STR:
                items.append(item.value)
            else:
                items.append(_construct(loader, item, memo))
        return items
    if cls is MappingNode and node.tag == _MAP:
        result: dict[Any, Any] = {}
        memo[id(node)] = result
        for key_node, value_node in node.value:
            if key_node.__class__ is ScalarNode and key_node.tag == _STR:
                key = key_node.value
            elif key_node.tag == _MERGE:  # `<<: *base`: merge the keys in, then start again
                loader.flatten_mapping(node)
                del memo[id(node)]
                return _construct(loader, node, memo)
            else:
                key = _construct(loader, key_node, memo)
                if isinstance(key, (list, dict)):
                    return loader.construct_document(node)  # raises the standard error
            if value_node.__class__ is ScalarNode and value_node.tag == _STR:
                result[key] = value_node.value
            else:
                result[key] = _construct(loader, value_node, memo)
        return result
    return loader.construct_object(node, deep=True)


def _scalar(loader: Any, node: ScalarNode) -> Any:
    tag = node.tag
    if tag == _INT:
        value = node.value  # plain decimals (ports, timeouts) directly; 0o/0x/1_000/1:30 below
        if value.isdigit() and value[0] != "0":
            return int(value)
        return loader.construct_yaml_int(node)
    if tag == _BOOL:
        return loader.construct_yaml_bool(node)
    if tag == _NULL:
        return None
    return loader.construct_object(node, deep=True)


def parse_fast(text: str) -> Any:
    """Parse one YAML document quickly (safe tags only). Raises ``yaml.YAMLError``."""
    loader = _FastLoader(text)
    try:
        node = loader.get_single_node()
        return None if node is None else _construct(loader, node, {})
    finally:
        loader.dispose()


def parse_with_positions(text: str) -> tuple[Any, Positions]:
    """Parse one YAML document and record where every key and list item starts."""
    loader = PositionLoader(text)
    try:
        node = loader.get_single_node()
        data = None if node is None else loader.construct_document(node)
    finally:
        loader.dispose()
    spots: dict[PathKey, Spot] = {}
    if node is not None:
        _walk(node, (), spots, set())
    return data, Positions(spots)


def _pos(node: Node) -> Pos:
    return Pos(node.start_mark.line + 1, node.start_mark.column + 1)


def _walk(node: Node, path: PathKey, spots: dict[PathKey, Spot], seen: set[int]) -> None:
    if id(node) in seen:  # an alias met again: its positions are already recorded
        return
    seen.add(id(node))
    if isinstance(node, MappingNode):
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                continue
            key = key_node.value
            if key_node.tag == _INT:
                key = int(key) if key.lstrip("-").isdigit() else key
            child = (*path, key)
            spots.setdefault(child, Spot(_pos(key_node), _pos(value_node)))
            _walk(value_node, child, spots, seen)
    elif isinstance(node, SequenceNode):
        for index, item in enumerate(node.value):
            child = (*path, index)
            spots[child] = Spot(_pos(item), _pos(item))
            _walk(item, child, spots, seen)


def syntax_error_position(error: yaml.YAMLError) -> Pos:
    """Where a YAML error happened (the problem mark, else the context mark)."""
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    return Pos(mark.line + 1, mark.column + 1) if mark is not None else Pos(1, 1)


def syntax_error_text(error: yaml.YAMLError) -> str:
    """The parser's words without its file excerpt: 'mapping values are not allowed here'."""
    problem = getattr(error, "problem", None)
    context = getattr(error, "context", None)
    mark = getattr(error, "context_mark", None)
    if problem and context:
        started = f" started at line {mark.line + 1}" if mark is not None else ""
        return f"{problem} ({context}{started})"
    return str(problem or context or error).splitlines()[0]

"""A YAML parser that refuses what no study needs (issue 18), on top of PyYAML's safe loader.

While the document is composed, before any Python object is built:
- aliases are followed but counted at their expanded size, so the document may hold at most
  MAX_YAML_NODES values once expanded (an alias bomb of a few hundred bytes fails at once, having
  allocated nothing); an alias to a value that contains it is refused;
- nesting deeper than MAX_YAML_DEPTH (aliases expanded) is refused before it recurses;
- a key given twice in one mapping is refused, naming the key and both lines (a typo must not
  change a measurement silently; merge keys `<<` may still be overridden);
- every number must be finite (`.inf`, `.nan`, `1e+400` are refused), integers must fit in 64 bits,
  and a date must be a real date.
Every refusal is a `RefusedYAML` (a `yaml.MarkedYAMLError`) with the line and column of the value
and `field`, its dotted path in the document (`experiments[2].decoder.temperature`).
"""

from __future__ import annotations

import math
from typing import Any

import yaml
from yaml.events import AliasEvent, MappingEndEvent, MappingStartEvent, SequenceStartEvent
from yaml.nodes import MappingNode, Node, ScalarNode

from llem_ray.config.limits import MAX_YAML_DEPTH, MAX_YAML_NODES

_MERGE_TAG = "tag:yaml.org,2002:merge"
_CHECKED_SCALAR_TAGS = frozenset({"tag:yaml.org,2002:int", "tag:yaml.org,2002:float", "tag:yaml.org,2002:timestamp"})
MAX_INT_BITS = 64
"""Integers in a document must fit in this many bits (signed)."""


class RefusedYAML(yaml.MarkedYAMLError):
    """Well-formed YAML that is refused; `field` is the dotted path of the value ('' at the top)."""

    def __init__(self, field: str, problem: str, mark: yaml.Mark | None):
        super().__init__(problem=problem, problem_mark=mark)
        self.field = field


def _path_text(path: list[str | int]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


class BoundedSafeLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` with the bounds of the module docstring (pure Python: the composer is ours)."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._expanded_nodes = 0
        self._child_heights = [0]  # one entry per open mapping/list, plus one for the document
        self._open_anchors: set[str] = set()
        self._anchor_stats: dict[str, tuple[int, int]] = {}  # anchor -> (expanded nodes, height)
        self._path: list[str | int] = []

    def _field(self, *more: str) -> str:
        return _path_text([*self._path, *more])

    def _grow(self, nodes: int, mark: yaml.Mark) -> None:
        self._expanded_nodes += nodes
        if self._expanded_nodes > MAX_YAML_NODES:
            raise RefusedYAML(
                self._field(), f"the document holds more than {MAX_YAML_NODES:,} values (aliases expanded)", mark
            )

    def _check_depth(self, depth: int, mark: yaml.Mark) -> None:
        if depth > MAX_YAML_DEPTH:
            raise RefusedYAML(self._field(), f"nested more than {MAX_YAML_DEPTH} levels deep", mark)

    def _check_scalar(self, node: ScalarNode) -> None:
        try:
            value = self.yaml_constructors[node.tag](self, node)
        except (ValueError, OverflowError) as exc:
            reason = str(exc).split(";")[0]
            raise RefusedYAML(self._field(), f"cannot read {node.value[:40]!r}: {reason}", node.start_mark) from None
        if isinstance(value, float) and not math.isfinite(value):
            raise RefusedYAML(self._field(), f"must be a finite number, got {node.value[:40]!r}", node.start_mark)
        if isinstance(value, int) and value.bit_length() >= MAX_INT_BITS:
            raise RefusedYAML(self._field(), f"integer out of range (more than {MAX_INT_BITS} bits)", node.start_mark)

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        segment = index.value if isinstance(index, ScalarNode) else index if isinstance(index, int) else None
        if segment is not None:
            self._path.append(segment)
        try:
            return self._compose_bounded(parent, index)
        finally:
            if segment is not None:
                self._path.pop()

    def _compose_bounded(self, parent: Node | None, index: Any) -> Node:
        event = self.peek_event()
        if isinstance(event, AliasEvent):
            if event.anchor in self._open_anchors:
                raise RefusedYAML(
                    self._field(), f"alias *{event.anchor} refers to a value that contains it", event.start_mark
                )
            stats = self._anchor_stats.get(event.anchor)
            if stats is not None:  # an undefined alias is left to PyYAML's own error
                nodes, height = stats
                self._grow(nodes, event.start_mark)
                self._check_depth(len(self._child_heights) - 1 + height, event.start_mark)
                self._child_heights[-1] = max(self._child_heights[-1], height)
            return super().compose_node(parent, index)
        start = self._expanded_nodes
        self._grow(1, event.start_mark)
        nested = isinstance(event, (MappingStartEvent, SequenceStartEvent))
        if nested:
            self._check_depth(len(self._child_heights), event.start_mark)
            self._child_heights.append(0)
            if event.anchor is not None:
                self._open_anchors.add(event.anchor)
        node = super().compose_node(parent, index)
        height = 0
        if nested:
            height = 1 + self._child_heights.pop()
            self._open_anchors.discard(event.anchor)
        elif node.tag in _CHECKED_SCALAR_TAGS:
            self._check_scalar(node)
        self._child_heights[-1] = max(self._child_heights[-1], height)
        if event.anchor is not None:
            self._anchor_stats[event.anchor] = (self._expanded_nodes - start, height)
        return node

    def compose_mapping_node(self, anchor: str | None) -> MappingNode:
        """PyYAML's own, plus the duplicate-key check."""
        start_event = self.get_event()
        tag = start_event.tag
        if tag is None or tag == "!":
            tag = self.resolve(MappingNode, None, start_event.implicit)
        node = MappingNode(tag, [], start_event.start_mark, None, flow_style=start_event.flow_style)
        if anchor is not None:
            self.anchors[anchor] = node
        seen: dict[tuple[str, str], yaml.Mark] = {}
        while not self.check_event(MappingEndEvent):
            key = self.compose_node(node, None)
            if isinstance(key, ScalarNode) and key.tag != _MERGE_TAG:
                first = seen.setdefault((key.tag, key.value), key.start_mark)
                if first is not key.start_mark:
                    raise RefusedYAML(
                        self._field(key.value),
                        f"duplicate key {key.value!r} (first on line "
                        f"{first.line + 1}, again on line {key.start_mark.line + 1})",
                        key.start_mark,
                    )
            value = self.compose_node(node, key)
            node.value.append((key, value))
        node.end_mark = self.get_event().end_mark
        return node


def parse(text: str) -> Any:
    """The one YAML document in `text` as Python data (None when empty).

    Raises `RefusedYAML` for the refusals of the module docstring and `yaml.YAMLError` for
    anything PyYAML's safe loader rejects (syntax, unknown tags, several documents).
    """
    loader = BoundedSafeLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()

"""The one YAML loader: bounded in size, depth and alias expansion before anything is built.

``yaml.safe_load`` expands aliases while constructing Python objects, so a
536-byte "billion laughs" file becomes gigabytes (issue 15). Composing is
different: an alias node is the anchor's node object again, so the composed
graph is as small as the text. We compose with a loader that counts alias
references and nesting as it goes, and weighs each node by the size it
*would* have once expanded (memoised per node, so weighing is linear); only
a document under every bound is then constructed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml
from yaml.events import AliasEvent

from expwatch.limits import YamlLimits, input_limits


class YamlRefused(Exception):
    """Invalid YAML or YAML over a bound; ``line`` is 1-based when known."""

    def __init__(self, label: str, line: int | None, message: str):
        super().__init__(f"{label}:{line}: {message}" if line else f"{label}: {message}")
        self.label, self.line, self.message = label, line, message


@dataclass(frozen=True)
class YamlDocument:
    data: Any
    root: yaml.Node | None  # for line numbers of fields


class _Over(Exception):
    def __init__(self, line: int | None, message: str):
        self.line, self.message = line, message


class _BoundedLoader(yaml.SafeLoader):
    def __init__(self, text: str, limits: YamlLimits):
        super().__init__(text)
        self._limits = limits
        self._depth = 0
        self._aliases = 0
        self._weight: dict[int, int] = {}

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        line = self.peek_event().start_mark.line + 1
        if self.check_event(AliasEvent):
            self._aliases += 1
            if self._aliases > self._limits.max_aliases:
                raise _Over(line, f"more than {self._limits.max_aliases} aliases")
        self._depth += 1
        if self._depth > self._limits.max_depth:
            raise _Over(line, f"nested deeper than {self._limits.max_depth} levels")
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if id(node) not in self._weight:
            self._weight[id(node)] = self._weigh(node)
        if self._weight[id(node)] > self._limits.max_nodes:
            raise _Over(line, f"expands to more than {self._limits.max_nodes} nodes (aliases)")
        return node

    def _weigh(self, node: yaml.Node) -> int:
        if isinstance(node, yaml.SequenceNode):
            return 1 + sum(self._weight.get(id(child), 1) for child in node.value)
        if isinstance(node, yaml.MappingNode):
            return 1 + sum(self._weight.get(id(k), 1) + self._weight.get(id(v), 1) for k, v in node.value)
        return 1


def parse_yaml(text: str, label: str, limits: YamlLimits | None = None) -> YamlDocument:
    """One YAML document, built only if it is within ``limits``; raises YamlRefused naming label:line."""
    limits = limits or input_limits().yaml
    size = len(text.encode("utf-8", errors="replace"))
    if size > limits.max_bytes:
        raise YamlRefused(label, None, f"{size} bytes, more than the {limits.max_bytes} allowed")
    loader = None
    try:
        loader = _BoundedLoader(text, limits)  # its reader refuses control characters already here
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except _Over as over:
        raise YamlRefused(label, over.line, f"refused: {over.message}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise YamlRefused(label, mark.line + 1 if mark else None, f"not valid YAML ({getattr(exc, 'problem', None) or exc})") from None
    except (ValueError, OverflowError) as exc:
        # PyYAML's scanner turns an escape past U+10FFFF ("\U100010000") into chr() of it, unchecked:
        # ValueError, or OverflowError past a C int ("\U80001000", found by tests/test_fuzz_loaders.py).
        raise YamlRefused(label, loader.get_mark().line + 1 if loader is not None else None, f"not valid YAML ({exc})") from None
    finally:
        if loader is not None:
            loader.dispose()
    return YamlDocument(data, root)


def node_at(node: yaml.Node, path: list[Any]) -> yaml.Node:
    """The YAML node at a JSON path, as deep as it exists (for line numbers)."""
    for key in path:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if k.value == key), None)
            if match is None:
                match = next((k for k, _ in node.value if k.value == key), None)
                return match or node
            node = match
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
        else:
            return node
    return node


def line_at(root: yaml.Node | None, path: list[Any]) -> int | None:
    return node_at(root, path).start_mark.line + 1 if root is not None else None

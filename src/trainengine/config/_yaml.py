"""The YAML reader of config files and ``--set`` values: PyYAML's safe loader, made strict.

PyYAML's ``SafeLoader`` builds only plain data, but it still accepts three things a config must not:

- **duplicate keys**: ``epochs: 1`` then ``epochs: 2`` in one mapping silently keeps the last one;
  here it is an error naming both lines;
- **alias bombs** ("billion laughs"): nine nested anchors of nine aliases each make a 315-byte file
  stand for 9^9 values; validating or printing it took 1.3 GB. Anchors and aliases stay allowed
  (``<<: *defaults`` is a common idiom), but all the aliases of a document together may stand for at
  most :data:`MAX_ALIAS_NODES` values, and a value may not contain itself;
- **deep nesting**: ``[[[[...]]]]`` 50,000 levels deep ends in a ``RecursionError``; here more than
  :data:`MAX_DEPTH` levels is an error.

Each refusal is a :class:`ConfigYAMLError` (a ``yaml.YAMLError``) with a one-line message that gives
the line; :func:`trainengine.config.read_config_file` adds the file name.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

__all__ = ["MAX_ALIAS_NODES", "MAX_DEPTH", "ConfigYAMLError", "ConfigLoader", "load_yaml"]

#: Values (scalars, lists, mappings) that all the aliases of one document may add together when
#: expanded. A real config shares a few dozen (a gate table, a list of tags); an alias bomb adds
#: millions. Change it by assigning ``trainengine.config._yaml.MAX_ALIAS_NODES``.
MAX_ALIAS_NODES = 10_000

#: Deepest nesting of lists and mappings accepted. A config is 2-4 levels deep
#: (``registry.gates.production.val_loss``); ``model.options`` may add a few.
MAX_DEPTH = 64

_MERGE_TAG = "tag:yaml.org,2002:merge"


class ConfigYAMLError(yaml.YAMLError):
    """A YAML document that parses but is refused as a config (duplicate key, alias bomb, too deep)."""


class ConfigLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses duplicate keys, alias bombs and deep nesting.

    Example:
        >>> yaml.load("a: 1\\nb: [x, y]\\n", Loader=ConfigLoader)
        {'a': 1, 'b': ['x', 'y']}
        >>> yaml.load("a: 1\\na: 2\\n", Loader=ConfigLoader)
        Traceback (most recent call last):
        ...
        trainengine.config._yaml.ConfigYAMLError: duplicate key 'a' at line 2 (first at line 1) — keep one
    """

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._depth = 0
        self._aliases_used = False

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if self.check_event(yaml.AliasEvent):
            self._aliases_used = True
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                line = self.peek_event().start_mark.line + 1
                raise ConfigYAMLError(f"nested more than {MAX_DEPTH} levels deep at line {line}")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_mapping_node(self, anchor: Any) -> MappingNode:
        node: MappingNode = super().compose_mapping_node(anchor)
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG or not isinstance(key_node, ScalarNode):
                continue  # "<<: *base" may be overridden by the mapping's own keys: not a duplicate
            key = self._key(key_node)
            line = key_node.start_mark.line + 1
            if key in first:
                raise ConfigYAMLError(
                    f"duplicate key {key_node.value!r} at line {line} (first at line {first[key]}) — keep one"
                )
            first[key] = line
        return node

    def _key(self, node: ScalarNode) -> Any:
        # ``true`` and ``yes`` (or ``1`` and ``0x1``) are the same key once constructed; compare
        # the constructed scalar, which for these tags has no side effects.
        try:
            return (node.tag, self.yaml_constructors[node.tag](self, node))
        except Exception:  # noqa: BLE001  # an odd key falls back to its text; the constructor reports it later
            return (node.tag, node.value)

    def compose_document(self) -> Node | None:
        self._aliases_used = False
        node: Node | None = super().compose_document()
        if node is not None and self._aliases_used:
            _check_alias_expansion(node)
        return node


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _check_alias_expansion(root: Node) -> None:
    """Refuse a document whose aliases stand for more than MAX_ALIAS_NODES values, or contain themselves.

    Counts without expanding: each node's expanded size is 1 + its children's, memoised by node
    identity (an alias is the same node object), in an iterative depth-first walk.
    """
    sizes: dict[int, int] = {}
    on_path: set[int] = set()  # the ancestors of the node being visited: seeing one again is a cycle
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            on_path.discard(key)
            sizes[key] = 1 + sum(sizes[id(c)] for c in _children(node))
            # Values seen so far never exceed the distinct ones of the whole document, so this
            # stops early and soundly: no huge count is ever built.
            if sizes[key] - len(sizes) > MAX_ALIAS_NODES:
                raise ConfigYAMLError(
                    f"the aliases (*name) near line {node.start_mark.line + 1} expand to more than "
                    f"{MAX_ALIAS_NODES:,} values — write the values out instead of nesting aliases"
                )
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise ConfigYAMLError(f"the alias at line {node.start_mark.line + 1} refers to a value that contains it")
        on_path.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in sizes)


def load_yaml(text: str) -> Any:
    """Parse one YAML document with :class:`ConfigLoader` (safe types only, strict as above).

    Raises:
        yaml.YAMLError: not YAML; :class:`ConfigYAMLError` for the refusals above.

    Example:
        >>> load_yaml("defaults: &d {lr: 0.1}\\nrun: {<<: *d, lr: 0.2}\\n")["run"]
        {'lr': 0.2}
    """
    return yaml.load(text, Loader=ConfigLoader)  # ConfigLoader is a SafeLoader subclass: plain data only

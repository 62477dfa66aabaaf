"""YAML's safe loader with a bound on alias expansion: a config can never make us walk 10⁹ values.

PyYAML builds an alias as a reference to the anchored node, so a "billion laughs" document is small in
memory; what explodes is every later walk over it (schema validation, error messages, geometry parsing).
The bound is checked on the node graph before any Python object is built.
"""

from __future__ import annotations

from typing import Any

import yaml

MAX_YAML_NODES = 500_000
"""Values a config may hold once YAML aliases (``*name``) are expanded, each use of an anchor counting in
full: about what 2 MiB of plain YAML can hold. An alias bomb ("billion laughs": a few hundred bytes that
expand to 10⁹ values) is refused here before anything walks the expanded structure."""


class YamlTooLargeError(ValueError):
    """The YAML document expands to too many values, or refers to itself."""


def load_bounded(text: str) -> Any:
    """``yaml.safe_load`` that raises ``YamlTooLargeError`` instead of expanding an alias bomb."""
    return yaml.load(text, Loader=BoundedLoader)  # BoundedLoader is a SafeLoader


_SafeBase: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class BoundedLoader(_SafeBase):  # type: ignore[misc, valid-type]
    """YAML's safe loader that refuses documents whose aliases expand beyond ``MAX_YAML_NODES`` values.

    The node graph is checked before any Python object is built: an alias is only a reference there, so
    the check costs one visit per distinct node however large the expansion.
    """

    def construct_document(self, node: yaml.Node) -> Any:
        count = expanded_nodes(node)
        if count > MAX_YAML_NODES:
            raise YamlTooLargeError(
                f"the YAML expands to more than {MAX_YAML_NODES:,} values once its aliases (*name) are "
                "repeated; a regions config needs far fewer: write the values out, or put geometries in "
                "GeoJSON files"
            )
        return super().construct_document(node)


def expanded_nodes(root: yaml.Node) -> int:
    """How many nodes a YAML node graph holds with every alias expanded (capped just above the bound).

    Iterative, memoised per node; a node that contains itself (``&a [*a]``) is refused.
    """
    cap = MAX_YAML_NODES + 1
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        children = _children(node)
        if finished:
            open_nodes.discard(key)
            sizes[key] = min(cap, 1 + sum(sizes[id(c)] for c in children))
            continue
        if key in sizes:
            continue
        if key in open_nodes:
            raise YamlTooLargeError(
                "an alias refers to a value that contains it (a recursive YAML structure)"
            )
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in sizes)
    return sizes[id(root)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []

"""A YAML loader that refuses a key given twice, for config files and override values.

PyYAML keeps the last of two equal keys in a mapping; in a config file that silently
drops a setting, so :class:`_StrictLoader` raises :class:`_DuplicateKeyError` instead,
with the dotted key and both line numbers. Otherwise it is ``yaml.SafeLoader``.
"""

from __future__ import annotations

import yaml


class _DuplicateKeyError(yaml.YAMLError):
    """A mapping key given twice: the dotted ``key``, its ``line`` and ``first_line``."""

    def __init__(self, key: str, line: int, first_line: int) -> None:
        super().__init__(f"duplicate key {key} on line {line} (first on line {first_line})")
        self.key, self.line, self.first_line = key, line, first_line


def _check_unique_keys(node: yaml.Node, prefix: str = "", seen_nodes: set | None = None) -> None:
    """Raise :class:`_DuplicateKeyError` for a key given twice in one mapping under ``node``."""
    seen_nodes = set() if seen_nodes is None else seen_nodes
    if id(node) in seen_nodes:  # an alias of a node already checked
        return
    seen_nodes.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first: dict[tuple[str, str], int] = {}
        for key_node, value_node in node.value:
            child = prefix
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                line = key_node.start_mark.line + 1
                key = (key_node.tag, key_node.value)
                if key in first:
                    raise _DuplicateKeyError(prefix + key_node.value, line, first[key])
                first[key] = line
                child = f"{prefix}{key_node.value}."
            _check_unique_keys(value_node, child, seen_nodes)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _check_unique_keys(item, prefix, seen_nodes)


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping key given twice (PyYAML keeps the last)."""

    def compose_document(self) -> yaml.Node:
        node = super().compose_document()
        _check_unique_keys(node)
        return node

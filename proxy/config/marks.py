"""Where in the YAML file a problem is: line and column for every path, and the real path.

pydantic reports an error at a *location* that mixes the keys of the file with names of
its own (union tags such as ``sqlite``, validator names); the file's map keys, such as an
app registration's name, are in it too, but a path computed from the model alone cannot
tell one from the other. The data itself can: walking the location through the parsed
YAML keeps exactly the keys and indexes that are in the file. The marks (line, column of
every key and list item) are kept from the composed YAML nodes, so each problem line can
start with ``file:line:column``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from proxy.errors import ConfigError

Key = str | int
KeyPath = tuple[Key, ...]
Position = tuple[int, int]  # line, column, both from 1


@dataclass(frozen=True, slots=True)
class Marks:
    """Line and column of every mapping key and list item of one YAML document."""

    at: dict[KeyPath, Position]

    def find(self, path: KeyPath) -> Position | None:
        """The position of `path`, or of the deepest part of it that is in the file."""
        for end in range(len(path), 0, -1):
            found = self.at.get(path[:end])
            if found is not None:
                return found
        return None

    def locate(self, problem: str) -> Position | None:
        """The position of the path a problem line starts with (``a.b[2].c: ...``)."""
        return self.find(parse_path(problem.split(": ", 1)[0].split(" ", 1)[0]))


NO_MARKS = Marks({})


def collect_marks(node: yaml.Node | None, data: Any) -> Marks:
    at: dict[KeyPath, Position] = {}
    if node is not None:
        _walk(node, data, (), at)
    return Marks(at)


def _walk(node: yaml.Node, data: Any, path: KeyPath, at: dict[KeyPath, Position]) -> None:
    if isinstance(node, yaml.MappingNode) and isinstance(data, dict):
        for key_node, value_node in node.value:
            key = _key_in(data, key_node)
            if key is None:
                continue  # a merge key or a complex key: no path an admin would write
            at[(*path, key)] = _position(key_node.start_mark)
            _walk(value_node, data[key], (*path, key), at)
    elif isinstance(node, yaml.SequenceNode) and isinstance(data, list):
        for index, (item_node, item) in enumerate(zip(node.value, data, strict=False)):
            at[(*path, index)] = _position(item_node.start_mark)
            _walk(item_node, item, (*path, index), at)


def _key_in(data: dict[Any, Any], key_node: yaml.Node) -> Key | None:
    if not isinstance(key_node, yaml.ScalarNode):
        return None
    if key_node.value in data:
        return str(key_node.value)
    for key in data:  # a key YAML read as a number or a boolean
        if isinstance(key, int) and str(key).lower() == key_node.value.lower():
            return key
    return None


def _position(mark: yaml.Mark) -> Position:
    return mark.line + 1, mark.column + 1


def data_path(data: Any, loc: Sequence[Key], missing: bool = False) -> KeyPath:
    """The part of pydantic's location that is keys and indexes in the file.

    A part that is not in the data is a name pydantic adds (a union tag, a validator)
    and is left out, except the last part of a `missing` error: the key to add.
    """
    path: list[Key] = []
    node = data
    for i, part in enumerate(loc):
        if isinstance(node, dict) and part in node:
            path.append(part)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            path.append(part)
            node = node[part]
        elif missing and i == len(loc) - 1:
            path.append(part)
    return tuple(path)


def format_path(path: KeyPath) -> str:
    out = ""
    for part in path:
        if isinstance(part, int) and not isinstance(part, bool) and out:
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def parse_path(text: str) -> KeyPath:
    """``rules[1].match.groups`` -> ("rules", 1, "match", "groups")."""
    return tuple(int(index) if index else name for name, index in _PART.findall(text))


def located(exc: ConfigError, marks: Marks) -> ConfigError:
    """The same problems, each with the line and column of the path it names."""
    positions = [
        given or marks.locate(problem)
        for problem, given in zip(exc.problems, exc.positions, strict=True)
    ]
    return ConfigError(exc.problems, exc.source, positions)

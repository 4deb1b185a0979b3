"""Reading the YAML files the proxy is given (config and policy), with limits.

People write these files, and the policy is reloaded while the proxy serves: whatever a
file says, reading it must cost no more than its size suggests. So, for every file:

- it is read up to `MAX_YAML_BYTES` (1 MiB); a larger one is refused unread;
- aliases (`*name`) may add at most `MAX_ALIAS_NODES` (10,000) values to the document,
  counted as if each were written out where it is used. A few hundred bytes of nested
  aliases ("billion laughs") would otherwise stand for billions of values, which every
  later step (validation, error messages) walks one by one. The count is kept while
  composing, so such a file is refused at the first alias past the limit;
- values nest at most `MAX_DEPTH` (64) levels, aliases included, and an alias may not
  refer to a value that contains it;
- a key given twice is an error (YAML itself would silently keep the last one).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.nodes import MappingNode, Node, SequenceNode

from proxy.config.marks import Marks, collect_marks
from proxy.errors import ConfigError

MAX_YAML_BYTES = 1024 * 1024
MAX_ALIAS_NODES = 10_000
MAX_DEPTH = 64


class YamlLimitError(ComposerError):
    """A file within YAML's grammar but beyond what the proxy reads."""


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that enforces the limits above and refuses a key given twice."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._open: set[str] = set()  # anchors of values still being composed
        self._measured: dict[int, tuple[int, int]] = {}  # id(node) -> (values, height)
        self._alias_nodes = 0

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        event: Any = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent):
            return self._compose_alias(parent, index, event)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise _refused(f"values nest deeper than {MAX_DEPTH} levels", event)
        anchor = event.anchor
        if anchor is not None:
            self._open.add(anchor)
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1
            if anchor is not None:
                self._open.discard(anchor)

    def _compose_alias(self, parent: Node | None, index: int, event: Any) -> Node | None:
        if event.anchor in self._open:
            raise _refused(f"alias *{event.anchor} refers to a value that contains it", event)
        node = super().compose_node(parent, index)
        if node is None:
            return None
        values, height = self._measure(node)
        self._alias_nodes += values
        if self._alias_nodes > MAX_ALIAS_NODES:
            problem = (
                f"aliases expand to more than {MAX_ALIAS_NODES} values (a limit against "
                "alias bombs): write the repeated part out, or use fewer aliases"
            )
            raise _refused(problem, event)
        if self._depth + height > MAX_DEPTH:
            problem = f"alias *{event.anchor} makes values nest deeper than {MAX_DEPTH} levels"
            raise _refused(problem, event)
        return node

    def _measure(self, node: Node) -> tuple[int, int]:
        """How many values `node` stands for, written out, and how deep they nest.

        Every alias is measured as it is composed, so what an alias points to is known
        already: the work is one visit per node, and the recursion is no deeper than
        the nesting the composer allowed."""
        known = self._measured.get(id(node))
        if known is None:
            children: list[Node] = []
            if isinstance(node, MappingNode):
                children = [part for pair in node.value for part in pair]
            elif isinstance(node, SequenceNode):
                children = node.value
            values, height = 1, 1
            for child in children:
                child_values, child_height = self._measure(child)
                values += child_values
                height = max(height, child_height + 1)
            known = self._measured[id(node)] = (values, height)
        return known


def _refused(problem: str, event: Any) -> YamlLimitError:
    return YamlLimitError(None, None, problem, event.start_mark)


def _construct_mapping(loader: _BoundedLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} is given twice", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_BoundedLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def parse_yaml(text: str, source: str) -> Any:
    return parse_yaml_document(text, source)[0]


def parse_yaml_document(text: str, source: str) -> tuple[Any, Marks]:
    """The data, and the line and column of each of its keys and list items (`marks`)."""
    if len(text) > MAX_YAML_BYTES:
        raise ConfigError([_too_large()], source)
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        data = None if node is None else loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        verdict = "refused" if isinstance(exc, YamlLimitError) else "not valid YAML"
        raise ConfigError([f"{where}{verdict}: {problem}"], source) from None
    finally:
        loader.dispose()
    return data, collect_marks(node, data)


def read_yaml_file(path: Path | str) -> Any:
    return read_yaml_document(path)[0]


def read_yaml_document(path: Path | str) -> tuple[Any, Marks]:
    path = Path(path)
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_YAML_BYTES + 1)
        if len(raw) > MAX_YAML_BYTES:
            raise ConfigError([_too_large()], str(path))
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError([f"cannot read the file: {reason}"], str(path)) from None
    return parse_yaml_document(text, str(path))


def _too_large() -> str:
    return (
        f"refused: larger than {MAX_YAML_BYTES // 1024} KiB, the limit for a YAML file the "
        "proxy reads"
    )

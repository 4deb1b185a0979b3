"""Reading YAML within limits: size, aliases, nesting. Every file the proxy reads (config,
policy) goes through this reader, so a hostile or broken file costs what its size says."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.config import MAX_ALIAS_NODES, MAX_DEPTH, MAX_YAML_BYTES, parse_yaml, read_yaml_file
from proxy.errors import ConfigError


def alias_bomb(levels: int, width: int = 9) -> str:
    """ "Billion laughs": each level lists the previous one `width` times; a few hundred
    bytes that stand for width**levels values."""
    lines = ["a0: &a0 [" + ", ".join(["lol"] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def problem(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_yaml(text, "policy.yaml")
    [line] = caught.value.problems
    assert caught.value.source == "policy.yaml"
    return line


ALIASES_REFUSED = (
    f"refused: aliases expand to more than {MAX_ALIAS_NODES} values (a limit against alias "
    "bombs): write the repeated part out, or use fewer aliases"
)


@pytest.mark.parametrize("levels", [6, 9, 30])
def test_an_alias_bomb_is_refused_at_the_alias_past_the_limit(levels: int) -> None:
    text = alias_bomb(levels)
    assert len(text) < 2000
    line = problem(text)
    assert line.endswith(ALIASES_REFUSED)
    # a1..a3 add 90 + 819 + 7380 values; the first *a3 (7381 more) is past the limit.
    assert line.startswith("line 5, column 10: ")


def test_aliases_within_the_limit_are_read_as_written_out() -> None:
    text = "scopes: &scopes [Calendars.Read, Contacts.Read]\n" + "".join(
        f"rule{i}: {{scopes: *scopes}}\n" for i in range(100)
    )
    data = parse_yaml(text, "policy.yaml")
    assert data["rule99"] == {"scopes": ["Calendars.Read", "Contacts.Read"]}


def test_the_alias_budget_counts_every_value_an_alias_stands_for() -> None:
    block = "[" + ", ".join(["x"] * 99) + "]"  # 100 values with its list
    fits = f"a: &a {block}\n" + "".join(f"b{i}: *a\n" for i in range(MAX_ALIAS_NODES // 100))
    assert len(parse_yaml(fits, "p")) == MAX_ALIAS_NODES // 100 + 1
    assert problem(fits + "one_more: *a\n").endswith(ALIASES_REFUSED)


def test_a_recursive_alias_is_refused() -> None:
    assert problem("a: &a [1, *a]\n") == (
        "line 1, column 11: refused: alias *a refers to a value that contains it"
    )
    assert problem("a: &a {self: *a}\n").endswith("refers to a value that contains it")


def test_deep_nesting_is_refused_before_python_recursion_runs_out() -> None:
    assert problem("[" * 100_000).endswith(f"refused: values nest deeper than {MAX_DEPTH} levels")
    nested = "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1)
    assert parse_yaml(nested, "p") is not None


def test_an_alias_cannot_smuggle_in_nesting() -> None:
    half = MAX_DEPTH // 2 + 2
    text = f"a: &a {'[' * half}1{']' * half}\nb: {'[' * half}*a{']' * half}\n"
    assert problem(text).endswith(f"makes values nest deeper than {MAX_DEPTH} levels")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: *nowhere\n", "line 1, column 4: not valid YAML: found undefined alias 'nowhere'"),
        ("a: &x 1\nb: &x 2\n", "line 2, column 4: not valid YAML: second occurrence"),
        ("a: 1\na: 2\n", "line 2, column 1: not valid YAML: key 'a' is given twice"),
    ],
)
def test_garbage_gets_one_clear_line(text: str, expected: str) -> None:
    assert problem(text) == expected


def test_a_file_larger_than_the_limit_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_bytes(b"# " + b"x" * MAX_YAML_BYTES + b"\n")
    with pytest.raises(ConfigError) as caught:
        read_yaml_file(path)
    assert caught.value.problems == [
        "refused: larger than 1024 KiB, the limit for a YAML file the proxy reads"
    ]
    assert caught.value.source == str(path)
    path.write_bytes(b"# " + b"x" * (MAX_YAML_BYTES - 100) + b"\nversion: 1\n")
    assert read_yaml_file(path) == {"version": 1}

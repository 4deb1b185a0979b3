"""The admin-facing files are interfaces: every option documented, every example valid."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

from proxy.config import Settings
from proxy.config.loader import models_in

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config.example.yaml"
POLICIES = sorted((ROOT / "policies").rglob("*.yaml"))


def option_names(model: type[BaseModel], seen: set[type[BaseModel]] | None = None) -> set[str]:
    seen = seen if seen is not None else set()
    if model in seen:
        return set()
    seen.add(model)
    names: set[str] = set()
    for name, field in model.model_fields.items():
        names.add(name)
        for inner in models_in(field.annotation):
            names |= option_names(inner, seen)
    return names


def test_every_option_is_documented_in_the_example_config() -> None:
    text = EXAMPLE.read_text()
    missing = sorted(n for n in option_names(Settings) if not re.search(rf"\b{n}:", text))
    assert missing == []


def consent_proxy(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxy.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )


def test_example_config_passes_check() -> None:
    result = consent_proxy("check", str(EXAMPLE))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{EXAMPLE}: OK\n"


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_policy_file_passes_check(policy: Path) -> None:
    result = consent_proxy("check", "--policy", str(policy))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{policy}: OK\n"
    assert "Traceback" not in result.stderr


def test_readme_opens_with_the_two_commands() -> None:
    head = (ROOT / "README.md").read_text().splitlines()[:12]
    commands = [line.strip() for line in head if line.startswith("    ")]
    assert commands[0].endswith("consent-proxy demo")
    assert "pytest" in commands[1]
    assert commands[1] in (ROOT / ".ci" / "run").read_text()

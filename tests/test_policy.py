"""The policy package as a whole: its public names, and the policy files it ships."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy import policy as policy_module
from proxy.policy import (
    IntegrationState,
    TenantState,
    check_apps,
    evaluate,
    load_policy,
    policy_warnings,
)

from .policy_cases import EXAMPLES, NOW, POLICIES, policy, user

# --- the shipped files -----------------------------------------------------------------------


def test_examples_are_found() -> None:
    names = {p.relative_to(POLICIES).as_posix() for p in EXAMPLES}
    assert names == {
        "default.yaml",
        "examples/admin-only-tenant.yaml",
        "examples/every-sign-in.yaml",
        "examples/hybrid-ews.yaml",
        "examples/read-write-for-sales.yaml",
    }


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_shipped_policy_loads_cleanly(path: Path) -> None:
    loaded = load_policy(path)
    assert policy_warnings(loaded) == []
    assert check_apps(loaded, []) == []
    assert "# " in path.read_text()  # documented for the admin who copies it


def test_default_policy_is_the_built_in_defaults() -> None:
    loaded = load_policy(POLICIES / "default.yaml")
    assert loaded.rules == ()
    assert loaded.defaults == policy("version: 1").defaults
    decision = evaluate(loaded, user(), IntegrationState(), TenantState(), NOW)
    assert (decision.action, decision.rule, decision.prompt) == (
        "consent",
        "defaults",
        "first_sign_in",
    )
    assert decision.scopes == ("Calendars.Read", "Contacts.Read")
    assert decision.user_consent == "allowed"


def test_public_names_exist() -> None:
    for name in policy_module.__all__:
        assert hasattr(policy_module, name), name

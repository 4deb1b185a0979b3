"""Which rule applies to a user: each criterion, the first match, and users from a sign-in
or from `explain`'s options."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.errors import ConfigError
from proxy.identity.sso import SignIn
from proxy.policy import IntegrationState, PolicyUser, TenantState, evaluate, user_from_options

from .policy_cases import NOW, OTHER_TENANT, TENANT, policy, user

MATCHING = policy(
    f"""
    version: 1
    rules:
      - name: exact
        match: {{email_domain: [contoso.com]}}
      - name: subdomains
        match: {{email_domain: ["*.contoso.com"]}}
      - name: idn
        match: {{email_domain: [xn--bcher-kva.de]}}
      - name: tenant
        match: {{tenant_id: ["{TENANT}"]}}
      - name: groups
        match: {{groups: [Sales, Support]}}
      - name: attributes
        match: {{attributes: {{department: [Finance], level: ["3", "4"]}}}}
      - name: everything
        match:
          email_domain: [fabrikam.com]
          tenant_id: ["{OTHER_TENANT}"]
          groups: [Admins]
          attributes: {{country: [NL]}}
    """
)

EMAIL_CASES = [
    ("alice@contoso.com", "exact"),
    ("ALICE@CONTOSO.COM", "exact"),
    ("alice@Contoso.Com", "exact"),
    ("o'brien+tag@contoso.com", "exact"),
    ("alice@eu.contoso.com", "subdomains"),
    ("alice@a.b.contoso.com", "subdomains"),
    ("alice@xn--bcher-kva.de", "idn"),
    # nothing: lookalikes, ambiguities and other domains
    ("alice@evilcontoso.com", "defaults"),
    ("alice@contoso.com.evil.com", "defaults"),
    ("alice@contoso.co", "defaults"),
    ("a@b.com@contoso.com", "defaults"),
    ("alice@contoso.com@evil.com", "defaults"),
    ("alice@evil.com@contoso.com", "defaults"),
    ("alice@contoso.com.", "defaults"),
    ("alice@eu.contoso.com.", "defaults"),
    ("alice@.contoso.com", "defaults"),
    ("alice@contoso..com", "defaults"),
    ("alice@-contoso.com", "defaults"),
    ("@contoso.com", "defaults"),
    ("alice.@contoso.com", "defaults"),
    ("alice@", "defaults"),
    ("contoso.com", "defaults"),
    ("", "defaults"),
    (" alice@contoso.com", "defaults"),
    ("alice@contoso.com ", "defaults"),
    ("alice @contoso.com", "defaults"),
    ("alice@contoso.com\n", "defaults"),
    ("alice@contoso.com\t", "defaults"),
    ("alice@contoso.com\x00", "defaults"),
    ('"alice"@contoso.com', "defaults"),
    ('"a@evil.com"@contoso.com', "defaults"),
    ("a\\@evil.com@contoso.com", "defaults"),
    ("alice@[10.0.0.1]", "defaults"),
    ("alice@10.0.0.1", "defaults"),
    ("alice@contoso\u3002com", "defaults"),  # ideographic full stop
    ("alice@contoso\uff0ecom", "defaults"),  # fullwidth full stop
    ("alice\uff20contoso.com", "defaults"),  # fullwidth commercial at
    ("alice@\u0441ontoso.com", "defaults"),  # Cyrillic es
    ("alice@contoso.com\u200b", "defaults"),  # zero-width space
    ("alice@b\u00fccher.de", "defaults"),  # IDN in Unicode form
    ("(comment)alice@contoso.com", "defaults"),
    ("@evil.com:alice@contoso.com", "defaults"),
    ("a" * 65 + "@contoso.com", "defaults"),
    ("alice@" + "a" * 64 + ".contoso.com", "defaults"),
    (None, "defaults"),
]


@pytest.mark.parametrize(("email", "rule"), EMAIL_CASES)
def test_email_domain_matching(email: str | None, rule: str) -> None:
    decision = evaluate(MATCHING, user(email), IntegrationState(), TenantState(), NOW)
    assert decision.rule == rule


@pytest.mark.parametrize(
    ("tenant_id", "rule"),
    [
        (TENANT, "tenant"),
        (TENANT.upper(), "tenant"),
        (OTHER_TENANT, "defaults"),
        ("{" + TENANT + "}", "defaults"),
        (TENANT.replace("-", ""), "defaults"),
        (TENANT + " ", "defaults"),
        ("contoso.onmicrosoft.com", "defaults"),
        (None, "defaults"),
    ],
)
def test_tenant_matching(tenant_id: str | None, rule: str) -> None:
    who = user("x@example.org", tenant_id=tenant_id)
    assert evaluate(MATCHING, who, IntegrationState(), TenantState(), NOW).rule == rule


@pytest.mark.parametrize(
    ("groups", "attributes", "rule"),
    [
        (("Sales",), {}, "groups"),
        (("Staff", "Support"), {}, "groups"),
        (("sales",), {}, "defaults"),  # exact, case-sensitive
        (("Sales ",), {}, "defaults"),
        ((), {"groups": ("Sales",)}, "defaults"),  # groups come from PolicyUser.groups
        ((), {"department": ("Finance",), "level": ("3",)}, "attributes"),
        ((), {"department": ("HR", "Finance"), "level": ("4",)}, "attributes"),
        ((), {"department": ("Finance",)}, "defaults"),  # every attribute must hold
        ((), {"department": ("finance",), "level": ("3",)}, "defaults"),
        ((), {"department": ("Finance",), "level": ()}, "defaults"),
    ],
)
def test_group_and_attribute_matching(
    groups: tuple[str, ...], attributes: dict[str, tuple[str, ...]], rule: str
) -> None:
    who = user("x@example.org", groups=groups, attributes=attributes)
    assert evaluate(MATCHING, who, IntegrationState(), TenantState(), NOW).rule == rule


def test_every_criterion_must_hold() -> None:
    full: dict[str, Any] = {
        "email": "ann@fabrikam.com",
        "tenant_id": OTHER_TENANT,
        "groups": ("Admins",),
        "attributes": {"country": ("NL",)},
    }
    everyone = PolicyUser(**full)
    assert evaluate(MATCHING, everyone, IntegrationState(), TenantState(), NOW).rule == "everything"
    for key, wrong in [
        ("email", "ann@fabrikam.org"),
        ("tenant_id", TENANT.replace("7", "8")),
        ("groups", ("Users",)),
        ("attributes", {"country": ("BE",)}),
    ]:
        who = PolicyUser(**{**full, key: wrong})
        assert evaluate(MATCHING, who, IntegrationState(), TenantState(), NOW).rule == "defaults"


def test_first_match_wins() -> None:
    loaded = policy(
        """
        version: 1
        rules:
          - name: sales
            match: {groups: [Sales]}
            prompt: every_sign_in
          - name: contoso
            match: {email_domain: [contoso.com]}
            prompt: never
        """
    )
    both = user(groups=("Sales",))
    decision = evaluate(loaded, both, IntegrationState(), TenantState(), NOW)
    assert (decision.rule, decision.rule_index, decision.prompt) == ("sales", 0, "every_sign_in")
    decision = evaluate(loaded, user(), IntegrationState(), TenantState(), NOW)
    assert (decision.rule, decision.rule_index, decision.prompt) == ("contoso", 1, "never")


def test_user_from_sign_in() -> None:
    sign_in = SignIn(
        subject="S-1",
        email="alice@contoso.com",
        tenant_id=TENANT,
        attributes={"groups": ("Sales",), "department": ("Finance",)},
    )
    who = PolicyUser.from_sign_in(sign_in)
    assert who == PolicyUser(
        "alice@contoso.com", TENANT, ("Sales",), {"groups": ("Sales",), "department": ("Finance",)}
    )
    assert PolicyUser.from_sign_in(SignIn(subject="bob@contoso.com")).email == "bob@contoso.com"


def test_user_from_options() -> None:
    who = user_from_options("a@contoso.com", TENANT, ["groups=Sales", "groups=HR", "level=3=x"])
    assert who == PolicyUser(
        "a@contoso.com",
        TENANT,
        ("Sales", "HR"),
        {
            "groups": ("Sales", "HR"),
            "level": ("3=x",),
        },
    )
    with pytest.raises(ConfigError) as caught:
        user_from_options("a@contoso.com", attrs=["groups"])
    assert caught.value.problems == ["--attr 'groups': write name=value, e.g. groups=Sales"]

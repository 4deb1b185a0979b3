"""Strict parsing of values: normalised when written by admins, and email addresses that
parse only when plain."""

from __future__ import annotations

import random

from proxy.policy import EwsAuthorization, GraphAuthorization, email_domain

from .policy_cases import TENANT, policy, random_text


def test_values_are_normalised() -> None:
    loaded = policy(
        f"""
        version: 1
        rules:
          - name: a
            match:
              email_domain: [" Contoso.COM ", "*.EU.contoso.com", contoso.com]
              tenant_id: ["{TENANT.upper()}"]
              attributes: {{level: [3]}}
            authorization:
              type: graph
              scopes: [calendars.read, "https://graph.microsoft.com/Calendars.Read", USER.READ]
        """
    )
    rule = loaded.rules[0]
    assert rule.match.email_domain == ("contoso.com", "*.eu.contoso.com")
    assert rule.match.tenant_id == (TENANT,)
    assert rule.match.attributes == {"level": ("3",)}
    assert rule.authorization == GraphAuthorization(
        type="graph", scopes=("Calendars.Read", "User.Read")
    )


def test_ews_scope_is_the_on_premises_host() -> None:
    loaded = policy(
        """
        version: 1
        defaults:
          authorization: {type: ews, ews_url: "https://Mail.Contoso.com/ews/exchange.asmx"}
        """
    )
    assert isinstance(loaded.defaults.authorization, EwsAuthorization)
    assert loaded.defaults.authorization.effective_scopes == (
        "https://mail.contoso.com/EWS.AccessAsUser.All",
    )


def test_email_domain_checks_ascii_before_lowercasing() -> None:
    kelvin = "bob@\u212aontoso.com"  # KELVIN SIGN lowercases to an ASCII "k"
    assert kelvin.lower() == "bob@kontoso.com"
    assert email_domain(kelvin) is None
    assert email_domain("bob@Kontoso.com") == "kontoso.com"
    assert email_domain(42) is None


def test_a_parsed_domain_is_what_follows_the_only_at() -> None:
    rng = random.Random(7)
    for _ in range(5000):
        email = random_text(rng, "alice", "@contoso.com", "@", ".", "a.b")
        domain = email_domain(email)
        if domain is not None:
            assert email.isascii() and email.count("@") == 1
            assert email.lower().endswith("@" + domain)
            assert not any(c.isspace() or c in '"\\\x00' for c in email)

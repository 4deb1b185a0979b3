"""`explain`: every rule tried and why, as lines for people and as JSON."""

from __future__ import annotations

import yaml

from proxy.policy import (
    IntegrationState,
    PolicyUser,
    TenantState,
    explain,
    explain_json,
    user_from_options,
)

from .policy_cases import NOW, TENANT, policy, user

EXPLAINED = policy(
    f"""
    version: 1
    rules:
      - name: hybrid
        match:
          email_domain: [onprem.contoso.com]
          tenant_id: ["{TENANT}"]
        authorization: {{type: ews, ews_url: "https://mail.contoso.com/EWS/Exchange.asmx"}}
      - name: sales
        match:
          email_domain: [contoso.com, "*.contoso.com"]
          groups: [Sales]
        prompt: every_sign_in
        authorization: {{type: graph, scopes: [Calendars.ReadWrite, Contacts.ReadWrite]}}
        app: sales
    """
)


def test_explain_lines() -> None:
    who = user_from_options("Alice@Contoso.com", TENANT, ["groups=Sales", "department=Finance"])
    state = IntegrationState("connected", True, ("Calendars.Read", "Contacts.Read"))
    tenant = TenantState(False, 1_900_000_000.0)
    assert explain(EXPLAINED, who, state, tenant, now=NOW).splitlines() == [
        "user: Alice@Contoso.com",
        f"  tenant_id: {TENANT}",
        "  groups: Sales",
        "  attributes.department: Finance",
        "integration: connected, prompted before, granted: Calendars.Read, Contacts.Read",
        "tenant: no admin consent, admin approval awaited until 2030-03-17 17:46:40 UTC",
        'rules[0] "hybrid": no match',
        "  email_domain [onprem.contoso.com]: no match (domain contoso.com)",
        f"  tenant_id [{TENANT}]: match (tenant {TENANT})",
        'rules[1] "sales": match',
        "  email_domain [contoso.com, *.contoso.com]: match (domain contoso.com)",
        "  groups [Sales]: match (user has Sales)",
        "decision: pass",
        '  rule: rules[1] "sales"',
        "  prompt: every_sign_in",
        "  authorization: graph",
        "  scopes: Calendars.ReadWrite Contacts.ReadWrite",
        "  user_consent: allowed",
        "  app: sales",
        "reasons:",
        '  rule_matched: rules[1] "sales" matched',
        "  scopes_missing: connected, but the grant lacks Calendars.ReadWrite, Contacts.ReadWrite",
        "  tenant_waiting_for_admin: an admin's approval is awaited for this tenant: "
        "the user is not asked until then",
    ]


def test_explain_defaults_for_a_bad_address() -> None:
    text = explain(EXPLAINED, user("a@onprem.contoso.com@evil.com"))
    assert "  email_domain [onprem.contoso.com]: no match " in text
    assert "'a@onprem.contoso.com@evil.com' is not a plain email address" in text
    assert "  rule: defaults\n" in text
    assert text.endswith(
        "reasons:\n"
        "  no_rule_matched: no rule matched; the defaults apply\n"
        "  not_connected: not connected yet; first_sign_in asks once"
    )


def test_explain_catch_all_and_ews() -> None:
    loaded = policy(
        """
        version: 1
        rules:
          - name: everyone
            authorization: {type: ews, ews_url: "https://mail.contoso.com/EWS/Exchange.asmx"}
        """
    )
    lines = explain(loaded, PolicyUser(None)).splitlines()
    assert lines[:5] == [
        "user: (no email)",
        "integration: none, not prompted before, granted: nothing",
        "tenant: no admin consent",
        'rules[0] "everyone": match',
        "  (no criteria: matches everyone)",
    ]
    assert "  authorization: ews (https://mail.contoso.com/EWS/Exchange.asmx)" in lines
    assert "  scopes: https://mail.contoso.com/EWS.AccessAsUser.All" in lines
    assert "  app: (the default app registration)" in lines


def test_explain_json() -> None:
    who = user("bob@eu.contoso.com", groups=("Sales",))
    data = explain_json(EXPLAINED, who, now=NOW)
    assert yaml.safe_load(yaml.safe_dump(data)) == data  # plain data, ready for --json
    assert [r["name"] for r in data["rules_tried"]] == ["hybrid", "sales"]
    assert data["rules_tried"][1]["criteria"][0] == {
        "criterion": "email_domain",
        "accepted": ["contoso.com", "*.contoso.com"],
        "matched": True,
        "found": "domain eu.contoso.com",
    }
    assert data["decision"] == {
        "action": "consent",
        "rule": "sales",
        "rule_index": 1,
        "prompt": "every_sign_in",
        "authorization": {"type": "graph", "scopes": ["Calendars.ReadWrite", "Contacts.ReadWrite"]},
        "user_consent": "allowed",
        "app": "sales",
        "scopes": ["Calendars.ReadWrite", "Contacts.ReadWrite"],
        "reasons": [
            {"code": "rule_matched", "text": 'rules[1] "sales" matched'},
            {
                "code": "not_connected",
                "text": "not connected yet; every_sign_in asks until connected",
            },
        ],
    }

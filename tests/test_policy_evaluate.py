"""Decisions: prompt mode x integration state x tenant state, scope drift, and an
evaluation that never raises whatever the user presents."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from proxy import policy as policy_module
from proxy.policy import (
    IntegrationState,
    Policy,
    PolicyUser,
    TenantState,
    evaluate,
    explain,
    load_policy,
    policy_from_data,
)

from .policy_cases import NOW, POLICIES, TENANT, policy, random_text, user

# --- decisions: prompt mode x integration state x tenant state ---------------------------------

SCOPES = ("Calendars.Read", "Contacts.Read")
STATES = {
    "new": IntegrationState("none", False),
    "abandoned": IntegrationState("none", True),  # sent to Microsoft, never came back
    "connected": IntegrationState("connected", True, (*SCOPES, "openid", "profile")),
    "connected_urls": IntegrationState(
        "connected",
        True,
        ("https://graph.microsoft.com/calendars.read", "https://graph.microsoft.com/Contacts.Read"),
    ),
    "drift": IntegrationState("connected", True, ("Calendars.Read",)),
    "drift_asked": IntegrationState("connected", True, ("Calendars.Read",), SCOPES),
    "declined": IntegrationState("declined", True),
    "failed": IntegrationState("failed", True),
    "needs_admin": IntegrationState("admin_approval_required", True),
    "reconsent": IntegrationState("reconsent_required", True, SCOPES),
}

# (prompt, state) -> (does the prompt mode ask?, its reason codes)
ASKS: dict[tuple[str, str], tuple[bool, list[str]]] = {
    **{("never", s): (False, ["prompt_never"]) for s in STATES},
    ("first_sign_in", "new"): (True, ["not_connected"]),
    ("first_sign_in", "abandoned"): (False, ["first_sign_in_already_prompted"]),
    ("first_sign_in", "connected"): (False, ["already_connected"]),
    ("first_sign_in", "connected_urls"): (False, ["already_connected"]),
    ("first_sign_in", "drift"): (True, ["scopes_missing"]),
    ("first_sign_in", "drift_asked"): (False, ["scopes_missing", "first_sign_in_already_prompted"]),
    ("first_sign_in", "declined"): (False, ["first_sign_in_already_prompted"]),
    ("first_sign_in", "failed"): (False, ["first_sign_in_already_prompted"]),
    ("first_sign_in", "needs_admin"): (True, ["admin_approval_required_before"]),
    ("first_sign_in", "reconsent"): (True, ["reconsent_required"]),
    ("every_sign_in", "new"): (True, ["not_connected"]),
    ("every_sign_in", "abandoned"): (True, ["not_connected"]),
    ("every_sign_in", "connected"): (False, ["already_connected"]),
    ("every_sign_in", "connected_urls"): (False, ["already_connected"]),
    ("every_sign_in", "drift"): (True, ["scopes_missing"]),
    ("every_sign_in", "drift_asked"): (True, ["scopes_missing"]),
    ("every_sign_in", "declined"): (True, ["not_connected"]),
    ("every_sign_in", "failed"): (True, ["not_connected"]),
    ("every_sign_in", "needs_admin"): (True, ["admin_approval_required_before"]),
    ("every_sign_in", "reconsent"): (True, ["reconsent_required"]),
}

TENANTS = {
    "plain": TenantState(),
    "waiting": TenantState(False, NOW + 3600),
    "wait_over": TenantState(False, NOW - 1),
    "wait_ends_now": TenantState(False, NOW),
    "consented": TenantState(True),
    "consented_while_waiting": TenantState(True, NOW + 3600),
}

# (tenant, user_consent) -> what happens to a user the prompt mode would ask
GATE: dict[tuple[str, str], tuple[str, list[str]]] = {
    ("plain", "allowed"): ("consent", []),
    ("plain", "admin_only"): ("admin_approval_notice", ["admin_only_tenant_not_consented"]),
    ("waiting", "allowed"): ("pass", ["tenant_waiting_for_admin"]),
    ("waiting", "admin_only"): ("pass", ["tenant_waiting_for_admin"]),
    ("wait_over", "allowed"): ("consent", []),
    ("wait_over", "admin_only"): ("admin_approval_notice", ["admin_only_tenant_not_consented"]),
    ("wait_ends_now", "allowed"): ("consent", []),
    ("wait_ends_now", "admin_only"): (
        "admin_approval_notice",
        ["admin_only_tenant_not_consented"],
    ),
    ("consented", "allowed"): ("consent", ["tenant_admin_consented"]),
    ("consented", "admin_only"): ("consent", ["tenant_admin_consented"]),
    ("consented_while_waiting", "allowed"): ("consent", ["tenant_admin_consented"]),
    ("consented_while_waiting", "admin_only"): ("consent", ["tenant_admin_consented"]),
}

DECISION_CASES = list(
    itertools.product(
        ["never", "first_sign_in", "every_sign_in"], STATES, TENANTS, ["allowed", "admin_only"]
    )
)


def settings_policy(prompt: str, user_consent: str) -> Policy:
    return policy_from_data(
        {
            "version": 1,
            "defaults": {"prompt": "never"},
            "rules": [
                {
                    "name": "under-test",
                    "match": {"email_domain": ["contoso.com"]},
                    "prompt": prompt,
                    "user_consent": user_consent,
                    "authorization": {"type": "graph", "scopes": list(SCOPES)},
                }
            ],
        }
    )


@pytest.mark.parametrize(("prompt", "state", "tenant", "user_consent"), DECISION_CASES)
def test_decision_table(prompt: str, state: str, tenant: str, user_consent: str) -> None:
    asks, codes = ASKS[prompt, state]
    action, gate_codes = GATE[tenant, user_consent] if asks else ("pass", [])
    loaded = settings_policy(prompt, user_consent)
    decision = evaluate(loaded, user(), STATES[state], TENANTS[tenant], NOW)
    assert decision.action == action
    assert list(decision.codes) == ["rule_matched", *codes, *gate_codes]
    assert (decision.rule, decision.rule_index) == ("under-test", 0)
    assert (decision.prompt, decision.user_consent) == (prompt, user_consent)
    assert decision.scopes == SCOPES


@pytest.mark.parametrize(
    ("state", "tenant", "action", "codes"),
    [
        (STATES["new"], TenantState(), "consent", ["no_rule_matched", "not_connected"]),
        (
            STATES["new"],
            TenantState(False, NOW + 60),
            "pass",
            ["no_rule_matched", "not_connected", "tenant_waiting_for_admin"],
        ),
        (
            STATES["declined"],
            TenantState(),
            "pass",
            ["no_rule_matched", "first_sign_in_already_prompted"],
        ),
        (
            STATES["needs_admin"],
            TenantState(True, NOW + 60),
            "consent",
            ["no_rule_matched", "admin_approval_required_before", "tenant_admin_consented"],
        ),
        (
            STATES["new"],
            TenantState(False, math.nan),
            "consent",
            ["no_rule_matched", "not_connected"],
        ),
    ],
)
def test_decisions_spelled_out(
    state: IntegrationState, tenant: TenantState, action: str, codes: list[str]
) -> None:
    decision = evaluate(policy("version: 1"), user(), state, tenant, NOW)
    assert decision.action == action
    assert list(decision.codes) == codes


def test_integration_state_rejects_unknown_status() -> None:
    with pytest.raises(ValueError, match="status must be one of none, connected"):
        IntegrationState("linked")  # type: ignore[arg-type]


# --- scope drift ---------------------------------------------------------------------------------

DRIFT = policy(
    """
    version: 1
    defaults:
      authorization: {type: graph, scopes: [Calendars.ReadWrite, Contacts.Read]}
    rules:
      - name: hybrid
        match: {groups: [OnPrem]}
        authorization: {type: ews, ews_url: "https://mail.contoso.com/EWS/Exchange.asmx"}
    """
)


def test_scope_drift_asks_for_the_full_set_and_names_what_is_missing() -> None:
    read_only = IntegrationState("connected", True, ("Calendars.Read", "Contacts.Read"))
    decision = evaluate(DRIFT, user(), read_only, TenantState(), NOW)
    assert decision.action == "consent"
    assert decision.scopes == ("Calendars.ReadWrite", "Contacts.Read")
    assert decision.reasons[1] == (
        "scopes_missing",
        "connected, but the grant lacks Calendars.ReadWrite",
    )
    # ReadWrite is a permission of its own: it does not stand in for Read, nor Read for it
    asked = IntegrationState("connected", True, read_only.granted_scopes, ("Calendars.ReadWrite",))
    assert evaluate(DRIFT, user(), asked, TenantState(), NOW).action == "pass"


def test_switching_to_ews_is_drift_too() -> None:
    graph_user = IntegrationState("connected", True, ("Calendars.ReadWrite", "Contacts.Read"))
    on_prem = user(groups=("OnPrem",))
    decision = evaluate(DRIFT, on_prem, graph_user, TenantState(), NOW)
    assert (decision.action, decision.rule) == ("consent", "hybrid")
    assert decision.scopes == ("https://mail.contoso.com/EWS.AccessAsUser.All",)
    ews_user = IntegrationState(
        "connected", True, ("https://MAIL.contoso.com/EWS.AccessAsUser.All",)
    )
    assert evaluate(DRIFT, on_prem, ews_user, TenantState(), NOW).codes == (
        "rule_matched",
        "already_connected",
    )


# --- evaluation never raises --------------------------------------------------------------------

FUZZ_POLICY = load_policy(POLICIES / "examples" / "read-write-for-sales.yaml")


def random_case(rng: random.Random) -> tuple[PolicyUser, IntegrationState, TenantState, float]:
    email = random_text(rng, "alice", "@contoso.com", "@eu.contoso.com", "@", ".")
    who = PolicyUser(
        email if rng.random() < 0.95 else None,
        rng.choice([None, TENANT, TENANT.upper(), random_text(rng, TENANT)]),
        tuple(rng.choice(["Sales", "sales", "", random_text(rng, "x")]) for _ in range(3)),
        {rng.choice(["groups", "department", ""]): (random_text(rng, "Sales"),)},
    )
    scopes = ("Calendars.Read", "calendars.readwrite", "Contacts.ReadWrite", "", "openid")
    state = IntegrationState(
        rng.choice(policy_module.STATUSES),
        rng.random() < 0.5,
        tuple(rng.sample(scopes, rng.randrange(len(scopes)))),
        tuple(rng.sample(scopes, rng.randrange(len(scopes)))),
    )
    until = rng.choice([None, NOW - 1, NOW + 1, math.inf, -math.inf, math.nan, 1e300])
    return who, state, TenantState(rng.random() < 0.3, until), NOW


def test_evaluate_and_explain_never_raise() -> None:
    rng = random.Random(20260401)
    for _ in range(3000):
        who, state, tenant, now = random_case(rng)
        decision = evaluate(FUZZ_POLICY, who, state, tenant, now)
        assert decision.action in ("pass", "consent", "admin_approval_notice")
        assert decision.reasons and decision.reasons[0].code in ("rule_matched", "no_rule_matched")
        assert explain(FUZZ_POLICY, who, state, tenant, now=now)

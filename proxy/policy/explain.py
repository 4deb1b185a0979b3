"""`explain`: what the policy decides for a user and why, for people and as JSON.

It runs the same evaluation as the proxy and shows every rule tried, each criterion with
what the user had, the settings that apply and the reason codes (`proxy.policy.evaluate`).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from proxy.policy.evaluate import IntegrationState, TenantState, decide
from proxy.policy.matching import PolicyUser, RuleCheck, check_rules
from proxy.policy.model import Policy
from proxy.policy.values import DEFAULTS_RULE


def explain(
    policy: Policy,
    user: PolicyUser,
    integration: IntegrationState | None = None,
    tenant: TenantState | None = None,
    *,
    now: float | None = None,
) -> str:
    """What the policy decides for this user, and why, as lines for people."""
    return "\n".join(_explain_lines(explain_json(policy, user, integration, tenant, now=now)))


def explain_json(
    policy: Policy,
    user: PolicyUser,
    integration: IntegrationState | None = None,
    tenant: TenantState | None = None,
    *,
    now: float | None = None,
) -> dict[str, Any]:
    """The same as `explain`, as data (for ``explain --json``)."""
    integration = integration or IntegrationState()
    tenant = tenant or TenantState()
    tried = check_rules(policy, user)
    decision = decide(policy, tried, integration, tenant, time.time() if now is None else now)
    return {
        "user": {
            "email": user.email,
            "tenant_id": user.tenant_id,
            "groups": list(user.groups),
            "attributes": {k: list(v) for k, v in user.attributes.items()},
        },
        "integration": {
            "status": integration.status,
            "prompted_before": integration.prompted_before,
            "granted_scopes": list(integration.granted_scopes),
            "prompted_scopes": list(integration.prompted_scopes),
        },
        "tenant": {
            "admin_consented": tenant.admin_consented,
            "approval_required_until": tenant.approval_required_until,
        },
        "rules_tried": [_rule_json(check) for check in tried],
        "decision": {
            "action": decision.action,
            "rule": decision.rule,
            "rule_index": decision.rule_index,
            "prompt": decision.prompt,
            "authorization": decision.authorization.model_dump(mode="json"),
            "user_consent": decision.user_consent,
            "app": decision.app,
            "scopes": list(decision.scopes),
            "reasons": [{"code": r.code, "text": r.text} for r in decision.reasons],
        },
    }


def _rule_json(check: RuleCheck) -> dict[str, Any]:
    return {
        "index": check.index,
        "name": check.name,
        "matched": check.matched,
        "criteria": [
            {
                "criterion": c.criterion,
                "accepted": list(c.accepted),
                "matched": c.matched,
                "found": c.found,
            }
            for c in check.criteria
        ],
    }


def _explain_lines(data: dict[str, Any]) -> list[str]:
    user, state, tenant = data["user"], data["integration"], data["tenant"]
    lines = [f"user: {user['email'] if user['email'] is not None else '(no email)'}"]
    lines += [f"  tenant_id: {user['tenant_id']}"] if user["tenant_id"] else []
    lines += [f"  groups: {', '.join(user['groups'])}"] if user["groups"] else []
    lines += [
        f"  attributes.{k}: {', '.join(v)}" for k, v in user["attributes"].items() if k != "groups"
    ]
    lines.append(
        f"integration: {state['status']}, "
        + ("prompted before" if state["prompted_before"] else "not prompted before")
        + f", granted: {', '.join(state['granted_scopes']) or 'nothing'}"
    )
    lines.append(f"tenant: {_tenant_text(tenant)}")
    for rule in data["rules_tried"]:
        lines.append(f'rules[{rule["index"]}] "{rule["name"]}": ' + _hit(rule["matched"]))
        lines += [
            f"  {c['criterion']} [{', '.join(c['accepted'])}]: {_hit(c['matched'])} ({c['found']})"
            for c in rule["criteria"]
        ] or ["  (no criteria: matches everyone)"]
    return [*lines, *_decision_lines(data["decision"])]


def _hit(matched: bool) -> str:
    return "match" if matched else "no match"


def _tenant_text(tenant: dict[str, Any]) -> str:
    consented = "admin consented" if tenant["admin_consented"] else "no admin consent"
    until = tenant["approval_required_until"]
    waiting = "" if until is None else f", admin approval awaited until {_utc(until)}"
    return consented + waiting


def _utc(timestamp: float) -> str:
    try:
        return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, ValueError, OSError):
        return repr(timestamp)


def _decision_lines(decision: dict[str, Any]) -> list[str]:
    auth = decision["authorization"]
    index = decision["rule_index"]
    rule = DEFAULTS_RULE if index is None else f'rules[{index}] "{decision["rule"]}"'
    kind = auth["type"] + (f" ({auth['ews_url']})" if auth["type"] == "ews" else "")
    return [
        f"decision: {decision['action']}",
        f"  rule: {rule}",
        f"  prompt: {decision['prompt']}",
        f"  authorization: {kind}",
        f"  scopes: {' '.join(decision['scopes'])}",
        f"  user_consent: {decision['user_consent']}",
        f"  app: {decision['app'] or '(the default app registration)'}",
        "reasons:",
        *(f"  {r['code']}: {r['text']}" for r in decision["reasons"]),
    ]

"""`consent-proxy status` and `explain`: what the store says, for people and for tools.

`status` without `--user` lists every user the store knows, by state and by tenant, with
the tenants that wait for an admin (since when, the last AADSTS code, what to do); `--json`
gives the same as data, `--csv` one row per user. `explain --config` evaluates the policy
with the user's live state from the store instead of assuming a user never prompted.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import sys
import time
from typing import Any

from proxy.config import Settings, load_settings
from proxy.store import StoreError

OK, PROBLEM, USAGE = 0, 1, 2


def status(args: argparse.Namespace) -> int:
    settings = load_settings(args.config, args.state_dir)
    try:
        if args.user is not None:
            return _one_user(settings, args)
        return _everyone(settings, args)
    except StoreError as exc:
        print(f"status: {exc.description}", file=sys.stderr)
        return PROBLEM


def _one_user(settings: Settings, args: argparse.Namespace) -> int:
    from proxy.consent.integration import find_integrations
    from proxy.identity.links import with_linked

    found = asyncio.run(with_linked(settings, find_integrations(settings, args.user)))
    if args.json:
        print(json.dumps(found, indent=2))
    elif args.csv:
        _csv([_row(record) for record in found])
    elif not found:
        print(f"{args.user}: no such user in the store (they have not signed in since)")
    else:
        print("\n".join(_user_text(record) for record in found))
    return OK if found else PROBLEM


def _everyone(settings: Settings, args: argparse.Namespace) -> int:
    from proxy.consent.overview import collect
    from proxy.store import open_store

    async def read() -> Any:
        store = open_store(settings.store)
        try:
            return await collect(store)
        finally:
            await store.aclose()

    overview = asyncio.run(read())
    if args.json:
        print(json.dumps(overview.as_json(), indent=2))
    elif args.csv:
        _csv([_row(vars_of(user)) for user in overview.users])
    else:
        print(_overview_text(overview))
    return OK


def vars_of(row: Any) -> dict[str, Any]:
    return {name: getattr(row, name) for name in row.__slots__}


CSV_FIELDS = (
    "user_key",
    "email",
    "tenant_id",
    "status",
    "updated",
    "connected_at",
    "last_error",
    "correlation_id",
    "action",
)


def _row(record: dict[str, Any]) -> dict[str, Any]:
    if "last_error" not in record:  # a full record (one user): the same columns
        from proxy.consent.integration import Integration
        from proxy.consent.overview import user_row

        known = {k: v for k, v in record.items() if k in Integration.__dataclass_fields__}
        record = vars_of(user_row(Integration(**known)))
    row = {name: record.get(name) for name in CSV_FIELDS}
    for name in ("updated", "connected_at"):
        row[name] = _when(row[name], iso=True)
    return row


def _csv(rows: list[dict[str, Any]]) -> None:
    writer = csv.DictWriter(sys.stdout, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)


def _when(value: object, iso: bool = False) -> str:
    if not isinstance(value, int | float) or not value:
        return "" if iso else "-"
    if iso:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(value))
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(value))


def _overview_text(overview: Any) -> str:
    total = sum(overview.by_status.values())
    if not total:
        return "no users in the store yet (nobody has signed in through the proxy)"
    states = ", ".join(f"{n} {state}" for state, n in sorted(overview.by_status.items()))
    lines = [f"users: {total} ({states})", "", "by tenant:"]
    for tenant in overview.tenants:
        counts = ", ".join(f"{n} {s}" for s, n in sorted(tenant.by_status.items())) or "-"
        consented = "  [admin consented]" if tenant.admin_consented else ""
        lines.append(f"  {tenant.tenant_id}: {counts}{consented}")
        if tenant.waiting_for_admin:
            lines.append(
                f"    waits for an admin since {_when(tenant.waiting_since)}"
                f" ({len(tenant.waiting_users)} user(s): {', '.join(tenant.waiting_users)})"
            )
            if tenant.last_error:
                lines.append(f"    last error {tenant.last_error}: {tenant.action}")
    if overview.failures:
        lines += ["", "failures (last error per user):"]
        for failure in overview.failures:
            lines.append(
                f"  {failure.error}: {failure.users} user(s), last {_when(failure.last_seen)}"
                f" - {failure.action}"
            )
    lines += ["", "users:"]
    for user in overview.users:
        error = f"  {user.last_error}" if user.last_error else ""
        who = user.email or user.user_key
        lines.append(f"  {user.status:<24} {who}  ({user.tenant_id or '-'}){error}")
    return "\n".join(lines)


def _user_text(record: dict[str, Any]) -> str:
    granted = record.get("granted_scopes")
    scopes = " ".join(str(s) for s in granted) if isinstance(granted, list) else ""
    lines = [
        f"user: {record.get('email') or '-'}  (key {record.get('user_key')})",
        f"  tenant: {record.get('tenant_id') or '-'}",
        f"  integration: {record.get('status')}",
        f"  route: {record.get('route') or '-'}"
        + (f" ({record.get('ews_url')})" if record.get("ews_url") else ""),
        f"  granted scopes: {scopes or '-'}",
        f"  prompted before: {'yes' if record.get('prompted_before') else 'no'}",
        f"  connected at: {_when(record.get('connected_at'))}",
        f"  updated: {_when(record.get('updated'))}",
    ]
    linked = record.get("linked_identities")
    for identity in linked if isinstance(linked, list) else []:
        if isinstance(identity, dict):
            lines.append(
                f"  linked: {identity.get('method')} {identity.get('issuer')} "
                f"subject {identity.get('subject')} (last {_when(identity.get('last_seen'))})"
            )
    if record.get("last_error_code") or record.get("last_error_class"):
        from proxy.microsoft.troubleshooting import what_to_do

        code = record.get("last_error_code")
        kind = record.get("last_error_class")
        lines.append(
            f"  last error: {kind} AADSTS{code}"
            f" (correlation id {record.get('correlation_id') or '-'})"
        )
        lines.append(
            f"  what to do: {what_to_do(code if isinstance(code, int) else None, str(kind))}"
        )
    return "\n".join(lines)


# --- explain -----------------------------------------------------------------------------------


def explain(args: argparse.Namespace) -> int:
    from proxy.policy import explain as explain_text
    from proxy.policy import explain_json, load_policy, user_from_options

    if args.policy is None and args.config is None:
        print("explain: give --policy FILE, --config FILE, or both", file=sys.stderr)
        return USAGE
    integration = tenant = None
    tenant_id = args.tenant
    policy_path = args.policy
    if args.config is not None:
        settings = load_settings(args.config)
        policy_path = policy_path or settings.policy
        if policy_path is None:
            print(f"explain: {args.config} names no policy; give --policy", file=sys.stderr)
            return USAGE
        try:
            integration, tenant, tenant_id = _live(settings, args.user, args.tenant)
        except StoreError as exc:
            print(f"explain: {exc.description}", file=sys.stderr)
            return PROBLEM
    policy = load_policy(policy_path)
    user = user_from_options(args.user, tenant_id, args.attr)
    if args.json:
        print(json.dumps(explain_json(policy, user, integration, tenant), indent=2))
    else:
        print(explain_text(policy, user, integration, tenant))
    return OK


def _live(settings: Settings, who: str, tenant_id: str | None) -> tuple[Any, Any, str | None]:
    """The user's integration and tenant state from the store (None when never seen)."""
    from proxy.consent.integration import live_state

    record, tenant = asyncio.run(live_state(settings, who, tenant_id))
    integration = record.state() if record is not None else None
    found_tenant = tenant_id or (record.tenant_id if record is not None else None)
    return integration, tenant.state() if tenant is not None else None, found_tenant

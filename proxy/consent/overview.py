"""The whole picture from the store, for `consent-proxy status` and the ops overview page.

Users by state and by tenant, tenants waiting for an admin (since when, the last AADSTS
code and what to do), recent failures by code, and connections and failures per hour —
all read from the records the journey keeps (no other database). Reading is one pass over
the "integration" and "tenant" namespaces; no token is opened. The shapes are
`proxy.ops.summary`'s, which the ops page renders without knowing the journey.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from proxy.consent.integration import INTEGRATIONS, TENANTS, Integration, Tenant, load_record
from proxy.microsoft.troubleshooting import what_to_do
from proxy.ops.summary import HOURS, FailureRow, Overview, TenantRow, UserRow
from proxy.store import Store

NO_TENANT = "(no tenant)"
FAILED_STATES = ("declined", "failed", "admin_approval_required", "reconsent_required")


def user_row(record: Integration) -> UserRow:
    failed = record.last_error_code is not None or record.last_error_class is not None
    reference = (
        f"AADSTS{record.last_error_code}"
        if record.last_error_code is not None
        else record.last_error_class
    )
    return UserRow(
        user_key=record.user_key,
        email=record.email,
        tenant_id=record.tenant_id,
        status=record.status,
        updated=record.updated,
        connected_at=record.connected_at,
        last_error=reference,
        correlation_id=record.correlation_id,
        action=what_to_do(record.last_error_code, record.last_error_class) if failed else None,
    )


async def collect(store: Store, now: float | None = None) -> Overview:
    now = time.time() if now is None else now
    users = [user_row(r) for r in await _all(store, INTEGRATIONS, Integration)]
    users.sort(key=lambda u: (u.tenant_id or "", u.status, u.email or u.user_key))
    tenants = await _tenants(store, users, now)
    return Overview(
        generated=now,
        by_status=dict(Counter(u.status for u in users)),
        tenants=tenants,
        failures=_failures(users),
        users=users,
        timeline=_timeline(users, now),
    )


async def _all(store: Store, namespace: str, cls: type[Any]) -> list[Any]:
    found = []
    for key in await store.keys(namespace):
        record = load_record(cls, await store.get(namespace, key))
        if record is not None:
            found.append(record)
    return found


async def _tenants(store: Store, users: list[UserRow], now: float) -> list[TenantRow]:
    rows: dict[str, TenantRow] = {}
    for user in users:
        row = rows.setdefault(user.tenant_id or NO_TENANT, TenantRow(user.tenant_id or NO_TENANT))
        row.by_status[user.status] = row.by_status.get(user.status, 0) + 1
        if user.status == "admin_approval_required":
            row.waiting_users.append(user.email or user.user_key)
            row.waiting_since = min(row.waiting_since or user.updated, user.updated)
            row.last_error, row.action = user.last_error, user.action
    for tenant in await _all(store, TENANTS, Tenant):
        row = rows.setdefault(tenant.tenant_id, TenantRow(tenant.tenant_id))
        row.admin_consented = tenant.admin_consented
        row.waiting_for_admin = tenant.state().waiting(now)
    for row in rows.values():
        row.waiting_for_admin = row.waiting_for_admin or (
            bool(row.waiting_users) and not row.admin_consented
        )
    return sorted(rows.values(), key=lambda r: (not r.waiting_for_admin, r.tenant_id))


def _failures(users: list[UserRow]) -> list[FailureRow]:
    grouped: dict[str, list[UserRow]] = {}
    for user in users:
        if user.last_error is not None:
            grouped.setdefault(user.last_error, []).append(user)
    rows = [
        FailureRow(
            error=error,
            users=len(group),
            last_seen=max(u.updated for u in group),
            action=group[0].action or "",
        )
        for error, group in grouped.items()
    ]
    return sorted(rows, key=lambda r: -r.last_seen)


def _timeline(users: list[UserRow], now: float) -> list[tuple[float, int, int]]:
    first = (int(now) // 3600 - HOURS + 1) * 3600
    connections, failures = [0] * HOURS, [0] * HOURS
    for user in users:
        if user.connected_at is not None and user.connected_at >= first:
            connections[min(int(user.connected_at - first) // 3600, HOURS - 1)] += 1
        if user.status in FAILED_STATES and user.updated >= first:
            failures[min(int(user.updated - first) // 3600, HOURS - 1)] += 1
    return [(first + i * 3600.0, connections[i], failures[i]) for i in range(HOURS)]

"""What the admins' overview shows, as plain data: users by state and tenant, failures,
connections and failures per hour. `proxy.consent.overview` fills it from the store;
`proxy.ops.overview` renders it and `consent-proxy status` prints it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

HOURS = 24


@dataclass(frozen=True, slots=True)
class UserRow:
    user_key: str
    email: str | None
    tenant_id: str | None
    status: str
    updated: float
    connected_at: float | None
    last_error: str | None  # "AADSTS65004", or the error's class without a number
    correlation_id: str | None
    action: str | None


@dataclass(slots=True)
class TenantRow:
    tenant_id: str
    by_status: dict[str, int] = field(default_factory=dict)
    admin_consented: bool = False
    waiting_for_admin: bool = False
    waiting_since: float | None = None  # the first of its users stopped by admin approval
    waiting_users: list[str] = field(default_factory=list)
    last_error: str | None = None
    action: str | None = None


@dataclass(frozen=True, slots=True)
class FailureRow:
    error: str
    users: int
    last_seen: float
    action: str


@dataclass(slots=True)
class Overview:
    generated: float
    by_status: dict[str, int]
    tenants: list[TenantRow]
    failures: list[FailureRow]
    users: list[UserRow]
    # Per hour over the last HOURS hours, oldest first: [hour start, connections, failures].
    timeline: list[tuple[float, int, int]]

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

"""Per-user and per-tenant records of the Office 365 connection, kept in the store.

- `Integration` (namespace "integration", key = user key): where the user's connection
  stands — connected, declined, failed, admin approval required, reconsent required —
  with times, the last error code and the scopes granted. No secret lives here.
- The user's msal token cache (namespace "tokens"): sealed with the vault, bound to the
  user key, replaced whole on every redemption or refresh.
- `Tenant` (namespace "tenant", key = tenant id): whether an admin consented for the
  organisation, and until when its users wait for an admin after an approval failure.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, TypeVar

from proxy.config import Settings
from proxy.policy import IntegrationState, TenantState
from proxy.store import Store, open_store
from proxy.store.vault import Vault

Status = Literal[
    "none", "connected", "declined", "failed", "admin_approval_required", "reconsent_required"
]
INTEGRATIONS = "integration"
TOKENS = "tokens"
TENANTS = "tenant"

T = TypeVar("T")


def load_record(cls: type[T], raw: bytes | None) -> T | None:
    if raw is None:
        return None
    try:
        data = json.loads(raw)
        if not isinstance(data, dict):
            return None
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in data.items() if k in known})
    except (ValueError, TypeError):
        return None


@dataclass(slots=True)
class Integration:
    user_key: str
    email: str | None = None
    tenant_id: str | None = None
    status: Status = "none"
    prompted_before: bool = False
    prompted_scopes: list[str] = field(default_factory=list)
    granted_scopes: list[str] = field(default_factory=list)
    route: str | None = None  # "graph" | "ews"
    ews_url: str | None = None
    app: str | None = None
    account_id: str | None = None  # msal's home account id, to find the tokens again
    updated: float = 0.0
    connected_at: float | None = None
    last_error_class: str | None = None
    last_error_code: int | None = None
    correlation_id: str | None = None

    def state(self) -> IntegrationState:
        return IntegrationState(
            status=self.status,
            prompted_before=self.prompted_before,
            granted_scopes=tuple(self.granted_scopes),
            prompted_scopes=tuple(self.prompted_scopes),
        )

    def public(self) -> dict[str, Any]:
        """What the status page, the CLI and logs may show."""
        return {k: v for k, v in asdict(self).items() if k != "account_id"}


@dataclass(slots=True)
class Tenant:
    tenant_id: str
    admin_consented: bool = False
    admin_consented_at: float | None = None
    approval_required_until: float | None = None
    approval_failures: int = 0

    def state(self) -> TenantState:
        return TenantState(self.admin_consented, self.approval_required_until)


class Records:
    """Typed access to the store for the consent journey."""

    def __init__(self, store: Store, vault: Vault | None) -> None:
        self.store = store
        self.vault = vault

    async def integration(self, user_key: str) -> Integration:
        found = load_record(Integration, await self.store.get(INTEGRATIONS, user_key))
        return found if found is not None and found.user_key == user_key else Integration(user_key)

    async def known(self, user_key: str) -> bool:
        """Whether the user ever signed in here (a record exists, whatever it says)."""
        return await self.store.get(INTEGRATIONS, user_key) is not None

    async def save_integration(self, record: Integration) -> None:
        record.updated = time.time()
        await self.store.put(INTEGRATIONS, record.user_key, json.dumps(asdict(record)).encode())

    async def tenant(self, tenant_id: str | None) -> Tenant | None:
        if not tenant_id:
            return None
        key = tenant_id.lower()
        found = load_record(Tenant, await self.store.get(TENANTS, key))
        return found if found is not None and found.tenant_id == key else Tenant(key)

    async def save_tenant(self, record: Tenant) -> None:
        await self.store.put(TENANTS, record.tenant_id, json.dumps(asdict(record)).encode())

    async def save_tokens(self, user_key: str, token_cache: str) -> None:
        assert self.vault is not None
        sealed = self.vault.seal(token_cache.encode(), f"tokens:{user_key}")
        await self.store.put(TOKENS, user_key, sealed)

    async def tokens(self, user_key: str) -> str | None:
        raw = await self.store.get(TOKENS, user_key)
        if raw is None or self.vault is None:
            return None
        return self.vault.open(raw, f"tokens:{user_key}").decode()

    async def delete_tokens(self, user_key: str) -> bool:
        return await self.store.delete(TOKENS, user_key)


async def find_integrations(settings: Settings, who: str) -> list[dict[str, Any]]:
    """The records of a user by email / UPN (any case) or user key, for `status`; no
    secret is read (tokens stay sealed and unopened)."""
    store = open_store(settings.store)
    try:
        return [record.public() for record in await _find(store, who)]
    finally:
        await store.aclose()


async def _find(store: Store, who: str) -> list[Integration]:
    direct = load_record(Integration, await store.get(INTEGRATIONS, who.strip()))
    if direct is not None:
        return [direct]
    wanted, found = who.strip().lower(), []
    for key in await store.keys(INTEGRATIONS):
        record = load_record(Integration, await store.get(INTEGRATIONS, key))
        if record is not None and (record.email or "").lower() == wanted:
            found.append(record)
    return found


async def tenants_waiting(store: Store, now: float) -> int:
    """How many tenants wait for an admin's approval right now (for the metric)."""
    count = 0
    for key in await store.keys(TENANTS):
        record = load_record(Tenant, await store.get(TENANTS, key))
        if record is not None and record.state().waiting(now):
            count += 1
    return count


async def live_state(
    settings: Settings, who: str, tenant_id: str | None
) -> tuple[Integration | None, Tenant | None]:
    """A user's integration record (by email / UPN or user key) and their tenant's, as the
    proxy would read them at the user's next sign-in; for `explain --config`."""
    store = open_store(settings.store)
    try:
        records = await _find(store, who)
        found = records[0] if records else None
        tenant_id = tenant_id or (found.tenant_id if found else None)
        return found, await Records(store, None).tenant(tenant_id)
    finally:
        await store.aclose()

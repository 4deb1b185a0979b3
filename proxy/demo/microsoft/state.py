"""What the stand-in remembers, and the knobs tests turn: tenants, accounts, apps, consent
grants, issued codes and refresh tokens, lifetimes, the clock, injected failures and the
counters. Every endpoint family reads and writes one `StandInState`."""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

from proxy.demo.microsoft.directory import (
    DEMO_TENANTS,
    DEMO_USERS,
    AppRegistration,
    MicrosoftUser,
    Tenant,
)
from proxy.demo.microsoft.scopes import canonical_all
from proxy.demo.oidc_provider import DemoOpenIdProvider

MULTI_TENANT = ("organizations", "common")
DEFAULT_ACCESS_TOKEN_LIFETIME = 3600
DEFAULT_CODE_LIFETIME = 600
DEFAULT_REFRESH_TOKEN_LIFETIME = 90 * 86400


@dataclass(slots=True)
class Code:
    client_id: str
    redirect_uri: str
    user: MicrosoftUser
    scopes: tuple[str, ...]
    challenge: str
    nonce: str | None
    issued: float
    used: bool = False


@dataclass(slots=True)
class RefreshToken:
    client_id: str
    user: MicrosoftUser
    scopes: tuple[str, ...]
    issued: float
    alive: bool = True


@dataclass(slots=True)
class Failures:
    remaining: int = 0
    status: int = 503
    retry_after: int | None = None


class StandInState(DemoOpenIdProvider):
    """The stand-in's memory and knobs (see `MicrosoftStandIn` for the list); its keys, as
    a `DemoOpenIdProvider`, sign every token and are published as the JWKS."""

    def __init__(
        self,
        base_url: str,
        tenants: Iterable[Tenant] = DEMO_TENANTS,
        users: Iterable[MicrosoftUser] = DEMO_USERS,
        apps: Iterable[AppRegistration] = (),
    ) -> None:
        super().__init__(base_url, users=())
        parts = urlsplit(self.issuer)
        self.base = self.issuer
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.prefix = parts.path.rstrip("/")
        self._initial = (tuple(tenants), tuple(users), tuple(apps))
        self.reset()

    @property
    def graph_url(self) -> str:
        return f"{self.base}/graph/v1.0"

    # --- knobs -------------------------------------------------------------------------------

    def reset(self) -> None:
        """Back to the state it was created with: tenants, users and apps as given; no
        grants, codes, tokens, failures; default lifetimes and clock; counters at zero."""
        tenants, users, apps = self._initial
        self.tenants = {t.id: t for t in tenants}
        self.accounts = {u.email.lower(): u for u in users}
        self.apps = {a.client_id: a for a in apps}
        self.access_token_lifetime = DEFAULT_ACCESS_TOKEN_LIFETIME
        self.code_lifetime = DEFAULT_CODE_LIFETIME
        self.refresh_token_lifetime = DEFAULT_REFRESH_TOKEN_LIFETIME
        self.clock: Callable[[], float] = time.time
        self.user_grants: dict[tuple[str, str], set[str]] = {}
        self.tenant_grants: dict[tuple[str, str], set[str]] = {}
        self.expired_secrets: set[str] = set()
        self.mfa_required: set[str] = set()
        self.blocked: set[str] = set()
        self.refresh_redemptions: collections.Counter[str] = collections.Counter()
        self.token_requests = 0
        self.discovery_fetches = 0
        self.jwks_fetches = 0
        self.outage = False
        self.failures = Failures()
        self.codes: dict[str, Code] = {}
        self.refresh_tokens: dict[str, RefreshToken] = {}

    def add_app(self, app: AppRegistration) -> None:
        self.apps[app.client_id] = app

    def user(self, email: str) -> MicrosoftUser:
        return self.accounts[email.lower()]

    def tenant(self, key: str) -> Tenant:
        """A tenant by id, verified domain or name ("fabrikam")."""
        key = key.lower()
        for tenant in self.tenants.values():
            if key in (tenant.id, tenant.name, *tenant.domains):
                return tenant
        raise KeyError(key)

    def set_user_consent(
        self, tenant: str, allowed: bool, admin_approval_code: int = 65001
    ) -> None:
        found = self.tenant(tenant)
        self.tenants[found.id] = replace(
            found, user_consent=allowed, admin_approval_code=admin_approval_code
        )

    def grant_user_consent(self, client_id: str, email: str, scopes: Iterable[str]) -> None:
        user = self.user(email)
        self.user_grants.setdefault((client_id, user.object_id), set()).update(
            self.canonical_all(scopes, self.apps[client_id])
        )

    def grant_admin_consent(self, client_id: str, tenant: str, scopes: Iterable[str]) -> None:
        found = self.tenant(tenant)
        self.tenant_grants.setdefault((client_id, found.id), set()).update(
            self.canonical_all(scopes, self.apps[client_id])
        )

    def revoke_consent(self, client_id: str, email: str) -> None:
        """Remove the user's own grant and the tenant's (as an admin removing the app)."""
        user = self.user(email)
        self.user_grants.pop((client_id, user.object_id), None)
        self.tenant_grants.pop((client_id, user.tenant_id), None)

    def revoke_user(self, email: str) -> None:
        """Every refresh token of the user dies (revokeSignInSessions, password reset)."""
        for token in self.refresh_tokens.values():
            if token.user.email.lower() == email.lower():
                token.alive = False

    def expire_refresh_tokens(self, email: str) -> None:
        for token in self.refresh_tokens.values():
            if token.user.email.lower() == email.lower():
                token.issued -= self.refresh_token_lifetime + 1

    def require_mfa(self, email: str, required: bool = True) -> None:
        (self.mfa_required.add if required else self.mfa_required.discard)(email.lower())

    def block(self, email: str, blocked: bool = True) -> None:
        (self.blocked.add if blocked else self.blocked.discard)(email.lower())

    def expire_secret(self, client_id: str, expired: bool = True) -> None:
        (self.expired_secrets.add if expired else self.expired_secrets.discard)(client_id)

    def fail_token_requests(
        self, count: int = 1, status: int = 503, retry_after: int | None = None
    ) -> None:
        """The next `count` token requests answer `status` (a transient failure)."""
        self.failures = Failures(count, status, retry_after)

    def refresh_token_alive(self, token: str) -> bool:
        found = self.refresh_tokens.get(token)
        return found is not None and found.alive

    # --- what the endpoints look up ----------------------------------------------------------

    def tenant_in_path(self, segment: str) -> Tenant | str | None:
        """A tenant by id or verified domain; "organizations"/"common" as themselves."""
        segment = segment.lower()
        if segment in MULTI_TENANT:
            return segment
        return next(
            (t for t in self.tenants.values() if segment == t.id or segment in t.domains), None
        )

    def canonical_all(self, scopes: Iterable[str], app: AppRegistration) -> list[str]:
        """Canonical scopes, `.default` expanded to the app's permissions."""
        hosts = (h for t in self.tenants.values() for h in t.ews_hosts)
        return canonical_all(scopes, app.permissions, hosts)

    def granted(self, client_id: str, user: MicrosoftUser) -> set[str]:
        return self.user_grants.get((client_id, user.object_id), set()) | self.tenant_grants.get(
            (client_id, user.tenant_id), set()
        )

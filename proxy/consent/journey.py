"""After a sign-in: ask the policy, and send the user to Microsoft's consent page if it says so.

`after_sign_in` runs when the session middleware has just started a session for a verified
sign-in. It asks the policy what to do and, when the answer is `consent`, turns the app's
redirect into a redirect to Microsoft's authorize endpoint (PKCE, one-time `state`,
`login_hint` from the SSO identity), keeping the app's Set-Cookie headers and remembering
where the app was sending the user (same origin only).

Every authorization starts in `begin`: the one-time `state` is kept server-side, sealed and
bound to the proxy session (or, for an admin link, to the admin's browser), and `take`
hands it back exactly once. A user counts as asked only once Microsoft brings back an
answer (the callback records it): a consent page closed unanswered, whose state expires,
leaves the user "not yet asked", so `first_sign_in` asks again at the next sign-in. The
reserved pages (pages.py) and the callback (callback.py) start authorizations through
`start_for_session`.

Whatever happens (Microsoft down, a store that fails) the user ends up in the app, and the
reason is logged for ops. No token, code or state value is ever written to a log or a page.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlencode

from proxy.asgi import Headers, Message
from proxy.config import Settings
from proxy.consent.integration import Integration, Records, Tenant, tenants_waiting
from proxy.consent.next_url import safe_next
from proxy.identity.session import RequestState, Session
from proxy.identity.sso import SignIn
from proxy.microsoft import MicrosoftClient, MicrosoftError
from proxy.ops import metrics
from proxy.policy import Decision, PolicyUser, evaluate
from proxy.policy.file import PolicyFile
from proxy.store import Store, StoreError
from proxy.store.vault import Vault, VaultError

log = logging.getLogger("consent_proxy.consent")

STATES = "consent-state"
MULTI_TENANT = frozenset({"common", "organizations", "consumers"})
ADMIN_CONSENT_KINDS = frozenset({"admin", "handoff"})
MAX_STATE_LENGTH = 256
WAITING_COUNT_EVERY = 60.0


@dataclass(slots=True)
class Pending:
    """One authorization in flight, stored sealed under its one-time `state` value."""

    kind: str  # "user" | "admin" | "handoff" (an admin link) | "admin_identity" (who approved)
    session_id: str
    user_key: str
    app: str
    return_to: str
    scopes: list[str]
    route: str
    ews_url: str | None
    tenant_id: str | None
    flow: dict[str, Any] | None
    created: float


class ConsentJourney:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        policy: PolicyFile,
        clients: dict[str, MicrosoftClient],
        on_change: Callable[[str], None] = lambda user_key: None,
    ) -> None:
        assert settings.public_url is not None
        self.settings = settings
        self.prefix = settings.consent.prefix
        self.public_origin = settings.public_url
        self.store = store
        self.vault = Vault([k.reveal() for k in settings.tokens.encryption_keys])
        self.records = Records(store, self.vault)
        self.policy_file = policy
        self.policy = policy  # called for the policy in force: reloads take effect at once
        self.clients = clients
        self.on_change = on_change  # a user's tokens changed: drop what is cached of them
        self.default_app = next(iter(settings.microsoft_apps))

    # --- at sign-in ---------------------------------------------------------------------------

    async def after_sign_in(self, state: RequestState, message: Message, headers: Headers) -> None:
        session, sign_in = state.session, state.sign_in
        if session is None or sign_in is None:
            return
        try:
            decision = await self._decide(session, sign_in)
        except (StoreError, VaultError) as exc:
            log.error(
                "no consent decision for %s, store unavailable: %s",
                session.user_key,
                exc.description,
            )
            return
        log.info(
            "policy for %s: %s (rule %s; %s)",
            session.user_key,
            decision.action,
            decision.rule,
            ", ".join(decision.codes),
        )
        metrics.PROMPTS.labels(decision.prompt, decision.action).inc()
        if decision.action == "pass":
            return
        status = int(message.get("status", 200))
        location = next((v for n, v in headers if n == b"location"), None)
        if not 300 <= status < 400 or location is None:
            log.warning("sign-in answer is not a redirect (status %s): no prompt this time", status)
            return
        return_to = safe_next(location.decode("latin-1"), self.public_origin)
        target = await self._target(session, decision, return_to)
        if target is None:
            return
        headers[:] = [(n, v) for n, v in headers if n not in (b"location", b"content-length")]
        headers.append((b"location", target.encode("latin-1")))
        message["status"] = 303

    async def _target(self, session: Session, decision: Decision, return_to: str) -> str | None:
        """Where the sign-in's redirect goes instead: the admin-approval notice, or Microsoft."""
        if decision.action == "admin_approval_notice":
            return f"{self.prefix}admin-approval?{urlencode({'next': return_to})}"
        return await self._start(session, decision, return_to, kind="user")

    def tenant_for(self, session: Session) -> str | None:
        """The user's Entra tenant: the SSO identity's, else the app registration's when it
        names one tenant (most IdPs send no tenant id); None for a multi-tenant app."""
        if session.tenant_id:
            return session.tenant_id.lower()
        tenant = self.settings.microsoft_apps[self.default_app].tenant.lower()
        return None if tenant in MULTI_TENANT else tenant

    async def evaluate(
        self, session: Session, sign_in: SignIn, integration: Integration
    ) -> Decision:
        tenant = await self.records.tenant(self.tenant_for(session))
        return evaluate(
            self.policy(),
            PolicyUser.from_sign_in(sign_in),
            integration.state(),
            (tenant or Tenant("")).state(),
            time.time(),
        )

    async def _decide(self, session: Session, sign_in: SignIn) -> Decision:
        integration = await self.records.integration(session.user_key)
        decision = await self.evaluate(session, sign_in, integration)
        if "scopes_missing" in decision.codes and integration.status == "connected":
            # An admin widened the rule's scopes: the grant no longer covers it.
            integration.status = "reconsent_required"
            await self.records.save_integration(integration)
            self.on_change(session.user_key)
        elif not integration.updated:  # first sign-in: the user is known from now on
            integration.email, integration.tenant_id = session.email, session.tenant_id
            await self.records.save_integration(integration)
        return decision

    # --- starting an authorization --------------------------------------------------------

    async def start_for_session(self, session: Session, return_to: str, kind: str) -> str | None:
        """Microsoft's URL for a signed-in user who asked to connect (or an admin to consent
        for the organization), under the policy in force; None when it cannot start."""
        decision = await self.decision_now(session)
        return await self._start(session, decision, return_to, kind=kind)

    async def decision_now(self, session: Session) -> Decision:
        """What the policy in force says for a signed-in user, as of now."""
        sign_in = SignIn(
            subject=session.subject,
            email=session.email,
            tenant_id=session.tenant_id,
            object_id=session.object_id,
            attributes={k: tuple(v) for k, v in session.attributes.items()},
        )
        integration = await self.records.integration(session.user_key)
        return await self.evaluate(session, sign_in, integration)

    async def _start(
        self, session: Session, decision: Decision, return_to: str, kind: str
    ) -> str | None:
        authorization = decision.authorization
        pending = Pending(
            kind=kind,
            session_id=session.id,
            user_key=session.user_key,
            app=decision.app or self.default_app,
            return_to=return_to,
            scopes=list(decision.scopes),
            route=authorization.type,
            ews_url=getattr(authorization, "ews_url", None),
            tenant_id=self.tenant_for(session),
            flow=None,
            created=time.time(),
        )
        return await self.begin(pending, login_hint=session.email)

    async def begin(self, pending: Pending, login_hint: str | None = None) -> str | None:
        """Keep `pending` sealed under a new one-time state; the URL to send the browser
        to (Microsoft's admin consent for the admin kinds, else its authorize), or None."""
        client = self.clients[pending.app]
        state = secrets.token_urlsafe(32)
        try:
            if pending.kind in ADMIN_CONSENT_KINDS:
                url = client.admin_consent_url(
                    state=state, scopes=pending.scopes, tenant=pending.tenant_id
                )
            else:
                pending.flow = await client.start_authorization(
                    pending.scopes, state=state, login_hint=login_hint
                )
                url = pending.flow["auth_uri"]
            await self._keep(state, pending)
        except MicrosoftError as exc:
            log.warning("cannot start Microsoft authorization (%s): %s", exc.error.describe(), exc)
            return None
        except (StoreError, VaultError) as exc:
            log.error("cannot keep the authorization state: %s", exc.description)
            return None
        return str(url)

    # --- the one-time state ---------------------------------------------------------------

    async def _keep(self, state: str, pending: Pending) -> None:
        plain = json.dumps(asdict(pending)).encode()
        sealed = self.vault.seal(plain, f"state:{state}")
        await self.store.put(
            STATES, _state_key(state), sealed, ttl=self.settings.consent.state_lifetime
        )

    async def take(self, state: str) -> Pending | None:
        """The authorization kept under `state`, once: a second call finds nothing."""
        if not state or len(state) > MAX_STATE_LENGTH:
            return None
        raw = await self.store.pop(STATES, _state_key(state))
        if raw is None:
            return None
        try:
            data = json.loads(self.vault.open(raw, f"state:{state}"))
            return Pending(**data)
        except (VaultError, ValueError, TypeError):
            return None

    # --- upkeep ---------------------------------------------------------------------------

    async def count_waiting_tenants(self) -> None:
        """Keep the tenants-waiting gauge current (read from the shared store, so every
        replica reports the same number: aggregate with max)."""
        while True:
            await self.count_waiting()
            await asyncio.sleep(WAITING_COUNT_EVERY)

    async def count_waiting(self) -> None:
        try:
            metrics.TENANTS_WAITING_ADMIN.set(await tenants_waiting(self.store, time.time()))
        except StoreError as exc:
            log.debug("tenants waiting not counted: %s", exc.description)

    async def aclose(self) -> None:
        for client in self.clients.values():
            await client.aclose()


def _state_key(state: str) -> str:
    # The store never holds the state value itself, only its hash.
    return hashlib.sha256(state.encode()).hexdigest()


__all__ = ["ADMIN_CONSENT_KINDS", "STATES", "ConsentJourney", "Pending"]

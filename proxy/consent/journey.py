"""The consent journey: from a completed SSO sign-in to connected Office 365 tokens.

Two halves, one object:
- `after_sign_in` runs when the session middleware has just started a session for a
  verified sign-in. It asks the policy what to do and, when the answer is `consent`,
  turns the app's redirect into a redirect to Microsoft's authorize endpoint (PKCE,
  one-time `state` kept server-side and bound to the proxy session, `login_hint` from the
  SSO identity), keeping the app's Set-Cookie headers and remembering where the app was
  sending the user (same origin only).
- `routes` is the ASGI app for the reserved prefix: the callback from Microsoft, the
  manual connect / disconnect page, the admin-consent route and its callback, and the
  "an admin must approve" page.

Whatever happens — Microsoft down, a declined consent, a forged state — the user ends up
in the app, and the reason is logged for ops. No token, code or state value is ever
written to a log or a page.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from jinja2 import Environment, FileSystemLoader, select_autoescape

from proxy.asgi import Headers, Message, Receive, Scope, Send
from proxy.config import Settings
from proxy.consent.integration import Integration, Records, Status, Tenant, tenants_waiting
from proxy.identity.session import NAMESPACE as SESSIONS
from proxy.identity.session import RequestState, Session, request_state
from proxy.identity.sso import SignIn
from proxy.microsoft import ErrorClass, MicrosoftClient, MicrosoftError, classify
from proxy.ops import metrics
from proxy.policy import Decision, PolicyUser, evaluate
from proxy.policy.file import PolicyFile
from proxy.store import Store, StoreError
from proxy.store.vault import Vault, VaultError

log = logging.getLogger("consent_proxy.consent")

STATES = "consent-state"
WAITING_COUNT_EVERY = 60.0
MAX_FORM_BYTES = 16 * 1024
TEMPLATES = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(["html"]),
)

# What a failed attempt leaves the user's integration as.
FAILURE_STATUS: dict[str, Status] = {
    "declined": "declined",
    "admin_approval_required": "admin_approval_required",
    "reconsent_required": "reconsent_required",
}

STATUS_TEXT = {
    "none": "Not connected",
    "connected": "Connected",
    "declined": "Not connected (you declined)",
    "failed": "Not connected (the last attempt failed)",
    "admin_approval_required": "Waiting for an administrator's approval",
    "reconsent_required": "Needs to be connected again",
}


def safe_next(value: str | None, public_origin: str) -> str:
    """Where to send the user afterwards: a path on this site, or "/".

    Refuses everything that browsers may read as another origin: `//evil`, `/\\evil`,
    `%09//evil`, `https:evil`, `javascript:`, control characters and white space.
    """
    if not value or len(value) > 2048:
        return "/"
    if "\\" in value or any(ord(c) <= 32 or ord(c) == 127 for c in value):
        return "/"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        if f"{parts.scheme}://{parts.netloc}".lower() != public_origin.lower():
            return "/"
    path = parts.path
    if not path.startswith("/") or path.startswith("//"):
        return "/"
    return (
        path
        + (f"?{parts.query}" if parts.query else "")
        + (f"#{parts.fragment}" if parts.fragment else "")
    )


@dataclass(slots=True)
class Pending:
    """One authorization in flight, stored sealed under its one-time `state` value."""

    kind: str  # "user" | "admin"
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
        keys = [k.reveal() for k in settings.tokens.encryption_keys]
        self.settings = settings
        self.prefix = settings.consent.prefix
        self.public_origin = settings.public_url
        self.store = store
        self.vault = Vault(keys)
        self.records = Records(store, self.vault)
        self.policy_file = policy
        self.policy = policy  # called for the policy in force: reloads take effect at once
        self.clients = clients
        self.on_change = on_change  # a user's tokens changed: drop what is cached of them
        self.default_app = next(iter(settings.microsoft_apps))
        self._csrf_key = hashlib.sha256(b"csrf\0" + keys[0].encode()).digest()

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
        if decision.action == "admin_approval_notice":
            target = f"{self.prefix}admin-approval?{urlencode({'next': return_to})}"
        else:
            started = await self._start(session, decision, return_to, kind="user")
            if started is None:
                return
            target = started
            await self._mark_prompted(session, decision)
        headers[:] = [(n, v) for n, v in headers if n not in (b"location", b"content-length")]
        headers.append((b"location", target.encode("latin-1")))
        message["status"] = 303

    async def _evaluate(
        self, session: Session, sign_in: SignIn, integration: Integration
    ) -> Decision:
        tenant = await self.records.tenant(session.tenant_id)
        return evaluate(
            self.policy(),
            PolicyUser.from_sign_in(sign_in),
            integration.state(),
            (tenant or Tenant("")).state(),
            time.time(),
        )

    async def _decide(self, session: Session, sign_in: SignIn) -> Decision:
        integration = await self.records.integration(session.user_key)
        decision = await self._evaluate(session, sign_in, integration)
        if "scopes_missing" in decision.codes and integration.status == "connected":
            # An admin widened the rule's scopes: the grant no longer covers it.
            integration.status = "reconsent_required"
            await self.records.save_integration(integration)
            self.on_change(session.user_key)
        elif not integration.updated:  # first sign-in: the user is known from now on
            integration.email, integration.tenant_id = session.email, session.tenant_id
            await self.records.save_integration(integration)
        return decision

    async def _mark_prompted(self, session: Session, decision: Decision) -> None:
        record = await self.records.integration(session.user_key)
        record.email, record.tenant_id = session.email, session.tenant_id
        record.prompted_before = True
        record.prompted_scopes = sorted(set(record.prompted_scopes) | set(decision.scopes))
        await self.records.save_integration(record)

    async def _start(
        self, session: Session, decision: Decision, return_to: str, kind: str
    ) -> str | None:
        """Keep a sealed one-time state; the URL to send the browser to, or None."""
        app = decision.app or self.default_app
        client = self.clients[app]
        state = secrets.token_urlsafe(32)
        authorization = decision.authorization
        pending = Pending(
            kind=kind,
            session_id=session.id,
            user_key=session.user_key,
            app=app,
            return_to=return_to,
            scopes=list(decision.scopes),
            route=authorization.type,
            ews_url=getattr(authorization, "ews_url", None),
            tenant_id=session.tenant_id,
            flow=None,
            created=time.time(),
        )
        try:
            if kind == "admin":
                url = client.admin_consent_url(
                    state=state, scopes=list(decision.scopes), tenant=session.tenant_id
                )
            else:
                pending.flow = await client.start_authorization(
                    list(decision.scopes), state=state, login_hint=session.email
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

    async def _keep(self, state: str, pending: Pending) -> None:
        plain = json.dumps(_as_dict(pending)).encode()
        sealed = self.vault.seal(plain, f"state:{state}")
        await self.store.put(
            STATES, _state_key(state), sealed, ttl=self.settings.consent.state_lifetime
        )

    async def _take(self, state: str) -> Pending | None:
        if not state or len(state) > 256:
            return None
        raw = await self.store.pop(STATES, _state_key(state))
        if raw is None:
            return None
        try:
            data = json.loads(self.vault.open(raw, f"state:{state}"))
            return Pending(**data)
        except (VaultError, ValueError, TypeError):
            return None

    async def count_waiting_tenants(self) -> None:
        """Keep the tenants-waiting gauge current (read from the shared store, so every
        replica reports the same number: aggregate with max)."""
        while True:
            await self._count_waiting()
            await asyncio.sleep(WAITING_COUNT_EVERY)

    async def _count_waiting(self) -> None:
        try:
            metrics.TENANTS_WAITING_ADMIN.set(await tenants_waiting(self.store, time.time()))
        except StoreError as exc:
            log.debug("tenants waiting not counted: %s", exc.description)

    async def aclose(self) -> None:
        for client in self.clients.values():
            await client.aclose()

    # --- reserved routes -------------------------------------------------------------------

    async def routes(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        route = scope["path"][len(self.prefix) :]
        state = request_state(scope)
        handler = {
            ("GET", ""): self._manage,
            ("GET", "callback"): self._callback,
            ("GET", "admin-approval"): self._admin_approval,
            ("POST", "connect"): self._connect,
            ("POST", "disconnect"): self._disconnect,
            ("POST", "admin-consent"): self._admin_consent,
        }.get((scope["method"], route))
        if handler is None:
            await _page(send, 404, "Page not found", ["There is no such page here."], next_url="/")
            return
        try:
            await handler(scope, receive, send, state)
        except (StoreError, VaultError) as exc:
            log.error("consent page %s failed: %s", route or "manage", exc.description)
            await _page(
                send,
                503,
                "Office 365 connection is unavailable right now",
                ["Please try again in a few minutes. The app itself is not affected."],
                next_url="/",
            )

    def _csrf(self, session: Session) -> str:
        return hmac.new(self._csrf_key, session.id.encode(), "sha256").hexdigest()

    async def _form(
        self, scope: Scope, receive: Receive, session: Session | None
    ) -> dict[str, str] | None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if len(body) > MAX_FORM_BYTES or not message.get("more_body"):
                break
        if len(body) > MAX_FORM_BYTES or session is None:
            return None
        try:
            fields = {k: v[0] for k, v in parse_qs(body.decode("ascii"), max_num_fields=10).items()}
        except (UnicodeDecodeError, ValueError):
            return None
        if not hmac.compare_digest(fields.get("csrf", ""), self._csrf(session)):
            return None
        return fields

    async def _manage(
        self, scope: Scope, receive: Receive, send: Send, state: RequestState
    ) -> None:
        session = state.session
        next_url = safe_next(_query(scope).get("next"), self.public_origin)
        if session is None:
            await _page(
                send,
                401,
                "Sign in to the app first",
                ["Connect Office 365 after you have signed in to the app."],
                next_url="/",
            )
            return
        integration = await self.records.integration(session.user_key)
        await _render(
            send, 200, "manage.html", self._manage_context(session, integration, next_url)
        )

    def _manage_context(
        self, session: Session, integration: Integration, next_url: str
    ) -> dict[str, Any]:
        connected_at = integration.connected_at
        return {
            "title": "Office 365 connection",
            "user": session.email or session.subject,
            "status": integration.status,
            "status_text": STATUS_TEXT.get(integration.status, integration.status),
            "integration": integration,
            "connected_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(connected_at))
            if connected_at
            else "",
            "route_text": "Exchange Web Services"
            if integration.route == "ews"
            else "Microsoft Graph",
            "csrf": self._csrf(session),
            "prefix": self.prefix,
            "next": next_url,
            "message": None,
        }

    async def _connect(
        self, scope: Scope, receive: Receive, send: Send, state: RequestState
    ) -> None:
        await self._start_from_form(scope, receive, send, state, kind="user")

    async def _admin_consent(
        self, scope: Scope, receive: Receive, send: Send, state: RequestState
    ) -> None:
        await self._start_from_form(scope, receive, send, state, kind="admin")

    async def _start_from_form(
        self, scope: Scope, receive: Receive, send: Send, state: RequestState, kind: str
    ) -> None:
        fields = await self._form(scope, receive, state.session)
        if fields is None or state.session is None:
            await self._refused(send)
            return
        await self._redirect_to_microsoft(send, state.session, fields, kind=kind)

    async def _redirect_to_microsoft(
        self, send: Send, session: Session, fields: dict[str, str], kind: str
    ) -> None:
        return_to = safe_next(fields.get("next"), self.public_origin)
        sign_in = SignIn(
            subject=session.subject,
            email=session.email,
            tenant_id=session.tenant_id,
            object_id=session.object_id,
            attributes={k: tuple(v) for k, v in session.attributes.items()},
        )
        integration = await self.records.integration(session.user_key)
        decision = await self._evaluate(session, sign_in, integration)
        url = await self._start(session, decision, return_to, kind=kind)
        if url is None:
            await _page(
                send,
                503,
                "Microsoft cannot be reached right now",
                ["Please try again in a few minutes."],
                next_url=return_to,
            )
            return
        await _redirect(send, url)

    async def _disconnect(
        self, scope: Scope, receive: Receive, send: Send, state: RequestState
    ) -> None:
        session = state.session
        fields = await self._form(scope, receive, session)
        if fields is None or session is None:
            await self._refused(send)
            return
        await self.records.delete_tokens(session.user_key)
        self.on_change(session.user_key)
        integration = await self.records.integration(session.user_key)
        integration.status = "none"
        integration.granted_scopes = []
        integration.connected_at = None
        await self.records.save_integration(integration)
        log.info("user %s disconnected Office 365", session.user_key)
        context = self._manage_context(session, integration, "/")
        context["message"] = "Disconnected. The app no longer receives your Office 365 access."
        await _render(send, 200, "manage.html", context)

    async def _admin_approval(
        self, scope: Scope, receive: Receive, send: Send, state: RequestState
    ) -> None:
        next_url = safe_next(_query(scope).get("next"), self.public_origin)
        await _page(
            send,
            200,
            "An administrator needs to approve this app",
            [
                "Your organization allows only administrators to approve apps that read "
                "calendars and contacts. You can keep using the app; its calendar and contact "
                "features will work once an administrator has approved it.",
            ],
            next_url=next_url,
            admin_options=True,
            csrf=self._csrf(state.session) if state.session else None,
            prefix=self.prefix,
        )

    async def _refused(self, send: Send) -> None:
        await _page(
            send,
            400,
            "This request could not be checked",
            [
                "The form expired or did not come from this site. Go back, reload the page and "
                "try again."
            ],
            next_url="/",
        )

    # --- the callback ---------------------------------------------------------------------

    async def _callback(
        self, scope: Scope, receive: Receive, send: Send, state: RequestState
    ) -> None:
        query = _query(scope)
        pending = await self._take(query.get("state", ""))
        if pending is None:
            log.warning("consent callback with an unknown, used or expired state")
            await _page(
                send,
                400,
                "This link has expired or was already used",
                [
                    "Nothing was changed. You can connect Office 365 from the connection page at "
                    "any time."
                ],
                next_url="/",
                manual_link=True,
                prefix=self.prefix,
            )
            return
        session = state.session
        if session is None or session.id != pending.session_id:
            log.warning(
                "consent callback for %s arrived outside the session that started it",
                pending.user_key,
            )
            await _page(
                send,
                400,
                "This link belongs to another sign-in",
                [
                    "Nothing was changed. Sign in to the app again and retry from the connection "
                    "page."
                ],
                next_url="/",
                manual_link=True,
                prefix=self.prefix,
            )
            return
        if "error" in query:
            error = classify(query.get("error"), query.get("error_description"), None)
            await self._failed(send, session, pending, error)
        elif pending.kind == "admin":
            await self._admin_consented(send, session, pending, query)
        else:
            await self._redeem(send, session, pending, query)

    async def _redeem(
        self, send: Send, session: Session, pending: Pending, query: dict[str, str]
    ) -> None:
        client = self.clients[pending.app]
        try:
            result = await client.redeem(pending.flow or {}, query, scopes=pending.scopes)
        except MicrosoftError as exc:
            await self._failed(send, session, pending, exc.error)
            return
        if (
            session.tenant_id
            and session.object_id
            and (
                (result.tenant_id or "").lower() != session.tenant_id.lower()
                or (result.object_id or "").lower() != session.object_id.lower()
            )
        ):
            log.warning(
                "user %s connected another Microsoft account than the SSO one", session.user_key
            )
            await _page(
                send,
                400,
                "That was a different Microsoft account",
                [
                    "You signed in to Microsoft with another account than the one you use for "
                    "this app. "
                    "Nothing was connected; try again with your work account."
                ],
                next_url=pending.return_to,
                manual_link=True,
                prefix=self.prefix,
            )
            return
        await self.records.save_tokens(session.user_key, result.token_cache)
        record = await self.records.integration(session.user_key)
        record.email, record.tenant_id = session.email, session.tenant_id
        record.status = "connected"
        record.granted_scopes = sorted(result.scopes)
        record.route, record.ews_url, record.app = pending.route, pending.ews_url, pending.app
        record.account_id = result.account_id
        record.connected_at = time.time()
        record.last_error_class = record.last_error_code = record.correlation_id = None
        await self.records.save_integration(record)
        self.on_change(session.user_key)
        log.info("user %s connected Office 365 (%s)", session.user_key, pending.route)
        metrics.CONSENT_OUTCOMES.labels("connected").inc()
        await _redirect(send, pending.return_to)

    async def _admin_consented(
        self, send: Send, session: Session, pending: Pending, query: dict[str, str]
    ) -> None:
        # Microsoft's `tenant` parameter can be forged; only the tenant bound in state counts.
        if query.get("admin_consent", "").lower() != "true" or not pending.tenant_id:
            await self._failed(send, session, pending, classify("invalid_request", None, None))
            return
        if query.get("tenant", "").lower() != pending.tenant_id.lower():
            log.warning(
                "admin consent returned tenant %r, state bound %r: ignoring the returned one",
                query.get("tenant"),
                pending.tenant_id,
            )
        tenant = await self.records.tenant(pending.tenant_id)
        assert tenant is not None
        tenant.admin_consented, tenant.admin_consented_at = True, time.time()
        tenant.approval_required_until = None
        await self.records.save_tenant(tenant)
        log.info("admin consent recorded for tenant %s by %s", tenant.tenant_id, session.user_key)
        metrics.CONSENT_OUTCOMES.labels("admin_consented").inc()
        await self._count_waiting()
        # Admin consent gives no code: now the admin's own tokens, through a normal authorize.
        await self._redirect_to_microsoft(send, session, {"next": pending.return_to}, kind="user")

    async def _failed(
        self, send: Send, session: Session, pending: Pending, error: ErrorClass
    ) -> None:
        record = await self.records.integration(session.user_key)
        record.email, record.tenant_id = session.email, session.tenant_id
        record.last_error_class, record.last_error_code = error.kind, error.code
        record.correlation_id = error.correlation_id
        status: Status = FAILURE_STATUS.get(error.kind, "failed")
        if record.status != "connected":
            record.status = status
        await self.records.save_integration(record)
        if error.kind == "admin_approval_required" and session.tenant_id:
            tenant = await self.records.tenant(session.tenant_id)
            assert tenant is not None
            tenant.approval_required_until = (
                time.time() + self.settings.consent.admin_approval_retry
            )
            tenant.approval_failures += 1
            await self.records.save_tenant(tenant)
            await self._count_waiting()
        level = logging.ERROR if error.kind == "config" else logging.WARNING
        log.log(level, "consent for %s ended: %s", session.user_key, error.describe())
        metrics.CONSENT_OUTCOMES.labels(error.kind).inc()
        await self._error_page(send, session, pending, error)

    async def _error_page(
        self, send: Send, session: Session, pending: Pending, error: ErrorClass
    ) -> None:
        next_url = pending.return_to
        common: dict[str, Any] = {
            "next_url": next_url,
            "prefix": self.prefix,
            "code": error.reference,
            "correlation_id": error.correlation_id,
        }
        if error.kind == "declined":
            await _page(
                send,
                200,
                "Office 365 not connected",
                [
                    "You chose not to connect your Office 365 calendar and contacts. That's fine: "
                    "the app works without them, and you can connect later from the connection "
                    "page."
                ],
                manual_link=True,
                **common,
            )
        elif error.kind == "admin_approval_required":
            await _page(
                send,
                200,
                "An administrator needs to approve this app",
                [
                    "Your organization allows only administrators to approve apps that read "
                    "calendars "
                    "and contacts. You can keep using the app; its calendar and contact features "
                    "will "
                    "work once an administrator has approved it."
                ],
                admin_options=True,
                csrf=self._csrf(session),
                **common,
            )
        elif error.kind == "config":
            await _page(
                send,
                200,
                "Office 365 cannot be connected right now",
                [
                    "The connection to Microsoft is not set up correctly. Your administrators "
                    "have been "
                    "told; you can keep using the app."
                ],
                **common,
            )
        else:
            await _page(
                send,
                200,
                "Office 365 not connected",
                [
                    "Connecting your Office 365 calendar and contacts did not work this time. You "
                    "can keep "
                    "using the app and try again later from the connection page."
                ],
                manual_link=True,
                **common,
            )


def _as_dict(pending: Pending) -> dict[str, Any]:
    return asdict(pending)


def _state_key(state: str) -> str:
    # The store never holds the state value itself, only its hash.
    return hashlib.sha256(state.encode()).hexdigest()


def _query(scope: Scope) -> dict[str, str]:
    raw = scope.get("query_string", b"")
    try:
        parsed = parse_qs(raw.decode("ascii"), max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        return {}
    return {k: v[0] for k, v in parsed.items() if len(v) == 1}


async def _render(send: Send, status: int, template: str, context: dict[str, Any]) -> None:
    metrics.count_response(status)
    body = TEMPLATES.get_template(template).render(**context).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/html; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
                (b"x-content-type-options", b"nosniff"),
                (b"x-frame-options", b"DENY"),
                (
                    b"content-security-policy",
                    b"default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
                ),
                (b"referrer-policy", b"no-referrer"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _page(
    send: Send, status: int, title: str, paragraphs: list[str], next_url: str, **extra: Any
) -> None:
    context = {
        "title": title,
        "paragraphs": paragraphs,
        "next": next_url,
        "admin_options": False,
        "manual_link": False,
        "csrf": None,
        "prefix": "/",
        "code": None,
        "correlation_id": None,
    }
    context.update(extra)
    await _render(send, status, "message.html", context)


async def _redirect(send: Send, url: str) -> None:
    metrics.count_response(303)
    await send(
        {
            "type": "http.response.start",
            "status": 303,
            "headers": [
                (b"location", url.encode("latin-1")),
                (b"content-length", b"0"),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": b""})


__all__ = ["SESSIONS", "ConsentJourney", "safe_next"]

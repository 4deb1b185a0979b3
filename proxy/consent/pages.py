"""The reserved pages: a small starlette Router under the consent prefix.

    GET  {prefix}                the connection page (also at the prefix without its slash)
    POST {prefix}connect         connect Office 365 (a CSRF-checked form)
    POST {prefix}admin-consent   an administrator consents for the organization (same)
    POST {prefix}disconnect      drop the user's tokens (same)
    GET  {prefix}admin-approval  "an administrator needs to approve this app"
    GET  {prefix}admin-link      the link a user sends to an administrator (handoff.py)
    POST {prefix}admin-link      the administrator approves for the organization (same)
    GET  {prefix}callback        back from Microsoft (callback.py)

Anything else under the prefix, a known path asked with another method (HEAD included)
or with a trailing slash, is the 404 page. A store that fails gives a 503 page; the app
behind the proxy is never affected. `Reserved` in app.py mounts this on the prefix, so
requests for the app never reach the Router.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route, Router, request_response

from proxy.asgi import Message, Receive, Scope, Send
from proxy.consent.callback import Callback
from proxy.consent.forms import Csrf, query
from proxy.consent.handoff import AdminLinks
from proxy.consent.integration import Integration
from proxy.consent.journey import ConsentJourney
from proxy.consent.next_url import safe_next
from proxy.consent.render import (
    ADMIN_NEEDED,
    ADMIN_NEEDED_TEXT,
    content_security_policy,
    in_words,
    not_found,
    page,
    redirect,
    refused,
    render,
    to_microsoft,
    unavailable,
)
from proxy.identity.session import Session, request_state
from proxy.ops import metrics
from proxy.ops.logs import shown_user
from proxy.policy import Decision
from proxy.store import StoreError
from proxy.store.vault import VaultError

log = logging.getLogger("consent_proxy.consent")

STATUS_TEXT = {
    "none": "Not connected",
    "connected": "Connected",
    "declined": "Not connected (you declined)",
    "failed": "Not connected (the last attempt failed)",
    "admin_approval_required": "Waiting for an administrator's approval",
    "reconsent_required": "Needs to be connected again",
}

DONE = {"disconnected": "Disconnected. The app no longer receives your Office 365 access."}

Endpoint = Callable[[Request], Awaitable[Response]]


class OneMethod(Route):
    """A route for exactly one method: asked with any other (HEAD too, which starlette adds
    to GET routes) the path is not a page here, and the Router answers 404, not 405."""

    def __init__(self, path: str, method: str, endpoint: Endpoint) -> None:
        super().__init__(path, endpoint, methods=[method])
        self.methods = {method}

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child_scope = super().matches(scope)
        if match is Match.PARTIAL:
            return Match.NONE, {}
        return match, child_scope


class ReservedPages:
    """The ASGI app for the consent prefix: the Router, counted in the response metrics,
    with a 503 page when the store fails."""

    def __init__(self, journey: ConsentJourney) -> None:
        self.journey = journey
        self.records = journey.records
        self.prefix = prefix = journey.prefix
        self.csrf = Csrf(journey.settings.tokens.encryption_keys[0].reveal())
        self.links = AdminLinks(journey)
        callback = Callback(journey, self.csrf, self.links)
        authorities = (app.authority_host for app in journey.settings.microsoft_apps.values())
        self.csp = content_security_policy(authorities).encode()
        self.router = Router(
            [
                OneMethod(prefix, "GET", self.manage),
                OneMethod(prefix.rstrip("/"), "GET", self.manage),
                OneMethod(f"{prefix}connect", "POST", self.connect),
                OneMethod(f"{prefix}admin-consent", "POST", self.admin_consent),
                OneMethod(f"{prefix}disconnect", "POST", self.disconnect),
                OneMethod(f"{prefix}admin-approval", "GET", self.admin_approval),
                OneMethod(f"{prefix}admin-link", "GET", self.links.show),
                OneMethod(f"{prefix}admin-link", "POST", self.links.start),
                OneMethod(f"{prefix}callback", "GET", callback.handle),
            ],
            redirect_slashes=False,  # "callback/" is not the callback
            default=request_response(not_found),
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        send = _counted(send, self.csp)
        try:
            await self.router(scope, receive, send)
        except (StoreError, VaultError) as exc:
            # Pages answer only once their work is done: nothing was sent yet.
            name = scope["path"][len(self.prefix) :] or "manage"
            log.error("consent page %s failed: %s", name, exc.description)
            await unavailable(Request(scope))(scope, receive, send)

    # --- the connection page --------------------------------------------------------------

    async def manage(self, request: Request) -> Response:
        session = request_state(request.scope).session
        next_url = safe_next(query(request).get("next"), self.journey.public_origin)
        if session is None:
            return page(
                request,
                401,
                "Sign in to the app first",
                ["Connect Office 365 after you have signed in to the app."],
                next_url="/",
            )
        integration = await self.records.integration(session.user_key)
        context = self._manage_context(session, integration, next_url)
        decision = await self.journey.decision_now(session)
        connected = integration.status == "connected"
        scopes = integration.granted_scopes if connected else decision.scopes
        context["permissions"] = in_words(scopes)
        if not connected and _needs_admin(integration, decision):
            context["admin_link"] = self._admin_link(session, decision)
        context["message"] = DONE.get(query(request).get("done", ""))
        return render(request, 200, "manage.html", context)

    def _admin_link(self, session: Session, decision: Decision) -> str:
        app = decision.app or self.journey.default_app
        return self.links.url(self.journey.tenant_for(session), app, list(decision.scopes))

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
            "csrf": self.csrf.token(session),
            "prefix": self.prefix,
            "next": next_url,
            "message": None,
            "permissions": [],
            "admin_link": None,
        }

    # --- the forms ------------------------------------------------------------------------

    async def connect(self, request: Request) -> Response:
        return await self._start(request, kind="user")

    async def admin_consent(self, request: Request) -> Response:
        return await self._start(request, kind="admin")

    async def _start(self, request: Request, kind: str) -> Response:
        session = request_state(request.scope).session
        fields = await self.csrf.form(request, session)
        if fields is None or session is None:
            return refused(request)
        return_to = safe_next(fields.get("next"), self.journey.public_origin)
        url = await self.journey.start_for_session(session, return_to, kind=kind)
        return to_microsoft(request, url, return_to)

    async def disconnect(self, request: Request) -> Response:
        session = request_state(request.scope).session
        fields = await self.csrf.form(request, session)
        if fields is None or session is None:
            return refused(request)
        await self.records.delete_tokens(session.user_key)
        self.journey.on_change(session.user_key)
        integration = await self.records.integration(session.user_key)
        integration.status = "none"
        integration.granted_scopes = []
        integration.connected_at = None
        await self.records.save_integration(integration)
        log.info(
            "user %s disconnected Office 365",
            shown_user(session.user_key, session.email),
            extra={"user_key": session.user_key},
        )
        next_url = safe_next(fields.get("next"), self.journey.public_origin)
        return redirect(f"{self.prefix}?{urlencode({'done': 'disconnected', 'next': next_url})}")

    # --- the admin approval notice --------------------------------------------------------

    async def admin_approval(self, request: Request) -> Response:
        session = request_state(request.scope).session
        admin_link = None
        if session is not None:
            admin_link = self._admin_link(session, await self.journey.decision_now(session))
        return page(
            request,
            200,
            ADMIN_NEEDED,
            [ADMIN_NEEDED_TEXT],
            next_url=safe_next(query(request).get("next"), self.journey.public_origin),
            admin_options=True,
            csrf=self.csrf.token(session) if session else None,
            prefix=self.prefix,
            admin_link=admin_link,
        )


def _needs_admin(integration: Integration, decision: Decision) -> bool:
    """Whether only an administrator can get this user connected now."""
    return integration.status == "admin_approval_required" or bool(
        {"tenant_waiting_for_admin", "admin_only_tenant_not_consented"} & set(decision.codes)
    )


def _counted(send: Send, csp: bytes) -> Send:
    """`send`, counting the answer in the proxy's response metrics, with the pages' policy
    (their forms may lead to Microsoft) in place of the strict default."""

    async def counting(message: Message) -> None:
        if message["type"] == "http.response.start":
            metrics.count_response(message["status"])
            message["headers"] = [
                (n, csp if n == b"content-security-policy" else v)
                for n, v in message.get("headers", [])
            ]
        await send(message)

    return counting


__all__ = ["STATUS_TEXT", "OneMethod", "ReservedPages"]

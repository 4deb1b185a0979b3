"""The admin link: a user whose organization lets only administrators approve apps sends
it to an administrator, who approves the app for everyone, in their own browser.

    GET  {prefix}admin-link?t=…   what the app would be allowed to do, and a button
    POST {prefix}admin-link       off to Microsoft's admin consent (the link in the form)

The link is signed (an HMAC under a key derived from the first token encryption key, so
every replica reads every other's links), expires (`consent.admin_link_lifetime`) and
names the tenant, the app registration and the permissions it approves: nothing in it
can be changed, and no session of the user who made it is needed or used. The one-time
state is bound to the administrator's browser by a cookie on the prefix. After the
consent, the administrator is signed in once more through Microsoft's authorize, so that
the audit log can name who approved; their tokens are dropped at once.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import secrets
import time
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from proxy.consent.admin import admin_failed, record_org_consent
from proxy.consent.forms import query, small_form
from proxy.consent.journey import ConsentJourney, Pending
from proxy.consent.render import in_words, page, redirect, to_microsoft
from proxy.microsoft import MicrosoftError, classify

log = logging.getLogger("consent_proxy.consent")

LINK_KINDS = frozenset({"handoff", "admin_identity"})
COOKIE = "consent_proxy_admin"
MAX_LINK_LENGTH = 2048
INVALID = "This approval link is not valid"


@dataclass(frozen=True, slots=True)
class AdminLink:
    tenant_id: str | None  # None: a multi-tenant app, the user's tenant unknown
    app: str
    scopes: list[str]
    expires: float


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class AdminLinks:
    """Makes and reads admin links, and answers their pages and their callbacks."""

    def __init__(self, journey: ConsentJourney) -> None:
        self.journey = journey
        self.prefix = journey.prefix
        key = journey.settings.tokens.encryption_keys[0].reveal()
        self._key = hashlib.sha256(b"admin-link\0" + key.encode()).digest()
        self.lifetime = journey.settings.consent.admin_link_lifetime
        self.secure = journey.public_origin.startswith("https://")

    # --- the link -------------------------------------------------------------------------

    def make(self, tenant_id: str | None, app: str, scopes: list[str]) -> str:
        body = {"t": tenant_id or "", "a": app, "s": scopes, "e": int(time.time() + self.lifetime)}
        payload = _b64(json.dumps(body, separators=(",", ":")).encode())
        return f"{payload}.{_b64(self._mac(payload))}"

    def url(self, tenant_id: str | None, app: str, scopes: list[str]) -> str:
        token = self.make(tenant_id, app, scopes)
        return f"{self.journey.public_origin}{self.prefix}admin-link?t={token}"

    def read(self, token: str | None) -> AdminLink | None:
        """The link, when it is ours, unchanged, unexpired and for a configured app."""
        if not token or len(token) > MAX_LINK_LENGTH or token.count(".") != 1:
            return None
        payload, mac = token.split(".")
        try:
            if not hmac.compare_digest(_unb64(mac), self._mac(payload)):
                return None
            body = json.loads(_unb64(payload))
            tenant, app, scopes, expires = body["t"], body["a"], body["s"], body["e"]
        except (binascii.Error, ValueError, TypeError, KeyError):
            return None
        well_formed = (
            isinstance(tenant, str)
            and isinstance(app, str)
            and isinstance(scopes, list)
            and all(isinstance(s, str) for s in scopes)
            and isinstance(expires, int | float)
        )
        if not well_formed or app not in self.journey.clients or expires <= time.time():
            return None
        return AdminLink(tenant or None, app, scopes, float(expires))

    def _mac(self, payload: str) -> bytes:
        return hmac.new(self._key, payload.encode(), "sha256").digest()

    # --- the pages ------------------------------------------------------------------------

    async def show(self, request: Request) -> Response:
        token = query(request).get("t")
        link = self.read(token)
        if link is None:
            return self._invalid(request)
        return page(
            request,
            200,
            "Approve this app for your organization",
            [
                "Someone in your organization asks an administrator to approve this app's "
                "access to Office 365. Once you approve, each user who connects lets the app:",
            ],
            next_url="/",
            permissions=in_words(link.scopes, whose="their"),
            approve_link=token,
            prefix=self.prefix,
        )

    async def start(self, request: Request) -> Response:
        fields = await small_form(request)
        link = self.read((fields or {}).get("t"))
        if link is None:
            return self._invalid(request)
        browser = secrets.token_urlsafe(32)
        pending = self._pending("handoff", _browser_key(browser), link.tenant_id, link)
        response = to_microsoft(request, await self.journey.begin(pending), "/")
        response.set_cookie(
            COOKIE,
            browser,
            max_age=int(self.journey.settings.consent.state_lifetime),
            path=self.prefix,
            secure=self.secure,
            httponly=True,
            samesite="lax",
        )
        return response

    def _pending(
        self, kind: str, browser_key: str, tenant_id: str | None, link: AdminLink
    ) -> Pending:
        return Pending(
            kind=kind,
            session_id=browser_key,
            user_key="",
            app=link.app,
            return_to="/",
            scopes=link.scopes,
            route="graph",
            ews_url=None,
            tenant_id=tenant_id,
            flow=None,
            created=time.time(),
        )

    def _invalid(self, request: Request) -> Response:
        text = (
            "It has expired, was changed, or was not made by this site. Ask the colleague who "
            "sent it for a new one: they find it on the page that says an administrator needs "
            "to approve the app."
        )
        return page(request, 400, INVALID, [text], next_url="/")

    # --- back from Microsoft --------------------------------------------------------------

    async def callback(
        self, request: Request, pending: Pending, fields: dict[str, str]
    ) -> Response:
        if _browser_key(request.cookies.get(COOKIE, "")) != pending.session_id:
            log.warning("admin link callback arrived in another browser than the one it left")
            return page(
                request,
                400,
                "This approval belongs to another browser",
                ["Nothing was changed. Open the approval link again and retry."],
                next_url="/",
            )
        if "error" in fields:
            error = classify(fields.get("error"), fields.get("error_description"), None)
            if pending.kind == "admin_identity":  # approved already; who did stays unknown
                return self._approved(request)
            return admin_failed(request, self.prefix, pending, error)
        if pending.kind == "admin_identity":
            await self._log_identity(pending, fields)
            return self._approved(request)
        tenant_id = await record_org_consent(self.journey, pending, fields)
        if tenant_id is None:
            error = classify("invalid_request", None, None)
            return admin_failed(request, self.prefix, pending, error)
        link = AdminLink(tenant_id, pending.app, pending.scopes, 0)
        identify = self._pending("admin_identity", pending.session_id, tenant_id, link)
        url = await self.journey.begin(identify)
        return redirect(url) if url else self._approved(request)

    async def _log_identity(self, pending: Pending, fields: dict[str, str]) -> None:
        client = self.journey.clients[pending.app]
        try:
            result = await client.redeem(pending.flow or {}, fields, scopes=pending.scopes)
        except MicrosoftError as exc:
            log.warning("who approved tenant %s stays unknown: %s", pending.tenant_id, exc)
            return
        log.info(
            "admin consent for tenant %s given by %s (Microsoft object id %s, tenant %s)",
            pending.tenant_id,
            result.username or "?",
            result.object_id,
            result.tenant_id,
        )

    def _approved(self, request: Request) -> Response:
        text = (
            "Thank you. Everyone in your organization can now connect Office 365 to the app: "
            "they are asked, or connected, the next time they sign in. You can close this page."
        )
        return page(request, 200, "Approved for your organization", [text], next_url="/")


def _browser_key(browser: str) -> str:
    return "admin-link:" + hashlib.sha256(browser.encode()).hexdigest()


__all__ = ["COOKIE", "INVALID", "LINK_KINDS", "AdminLink", "AdminLinks"]

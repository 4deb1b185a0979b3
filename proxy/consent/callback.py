"""Back from Microsoft: redeem the code, record an organization's consent, or say what failed.

The one-time `state` is taken (a replay finds nothing) and must have been started in this
same proxy session (an admin link's in the same browser: handoff.py); it carries
everything trusted about the attempt. The redeemed account's tenant and object id must be
the SSO identity's, and an admin consent counts for the tenant bound in state (admin.py).
Any answer marks the user as asked; a failed user consent updates the user's record (and
the tenant's, when only an admin may consent), a failed admin consent changes nobody's
record. Each is logged and counted, and ends on a page that sends the user back.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from proxy.consent.admin import admin_failed, record_org_consent
from proxy.consent.forms import Csrf, query
from proxy.consent.handoff import LINK_KINDS, AdminLinks
from proxy.consent.integration import Integration, Status
from proxy.consent.journey import ConsentJourney, Pending
from proxy.consent.next_url import safe_next
from proxy.consent.render import ADMIN_NEEDED, ADMIN_NEEDED_TEXT, page, redirect, to_microsoft
from proxy.identity.session import Session, request_state
from proxy.microsoft import ErrorClass, MicrosoftError, TokenResult, classify
from proxy.microsoft.lanes import BUSY
from proxy.ops import metrics
from proxy.ops.logs import shown_user

log = logging.getLogger("consent_proxy.consent")

# What a failed attempt leaves the user's integration as.
FAILURE_STATUS: dict[str, Status] = {
    "declined": "declined",
    "admin_approval_required": "admin_approval_required",
    "reconsent_required": "reconsent_required",
}


class Callback:
    """The endpoint Microsoft sends the browser back to, after consent or admin consent."""

    def __init__(self, journey: ConsentJourney, csrf: Csrf, links: AdminLinks) -> None:
        self.journey = journey
        self.records = journey.records
        self.prefix = journey.prefix
        self.csrf = csrf
        self.links = links

    async def handle(self, request: Request) -> Response:
        fields = query(request)
        pending = await self.journey.take(fields.get("state", ""))
        if pending is None:
            log.warning("consent callback with an unknown, used or expired state")
            return self._dead_end(
                request,
                "This link has expired or was already used",
                "Nothing was changed. You can connect Office 365 from the connection page at "
                "any time.",
            )
        if pending.kind in LINK_KINDS:
            return await self.links.callback(request, pending, fields)
        session = request_state(request.scope).session
        if session is None or session.id != pending.session_id:
            log.warning(
                "consent callback for %s arrived outside the session that started it",
                pending.user_key,
            )
            return self._dead_end(
                request,
                "This link belongs to another sign-in",
                "Nothing was changed. Sign in to the app again and retry from the connection page.",
            )
        if "error" in fields:
            error = classify(fields.get("error"), fields.get("error_description"), None)
            if pending.kind == "admin":
                return admin_failed(request, self.prefix, pending, error)
            return await self._failed(request, session, pending, error)
        if pending.kind == "admin":
            return await self._admin_consented(request, session, pending, fields)
        return await self._redeem(request, session, pending, fields)

    def _dead_end(self, request: Request, title: str, text: str) -> Response:
        return page(request, 400, title, [text], next_url="/", manual_link=True, prefix=self.prefix)

    # --- success --------------------------------------------------------------------------

    async def _redeem(
        self, request: Request, session: Session, pending: Pending, fields: dict[str, str]
    ) -> Response:
        client = self.journey.clients[pending.app]
        try:
            result = await client.redeem(pending.flow or {}, fields, scopes=pending.scopes)
        except MicrosoftError as exc:
            return await self._failed(request, session, pending, exc.error)
        if _another_account(session, result):
            log.warning(
                "user %s connected another Microsoft account than the SSO one", session.user_key
            )
            return page(
                request,
                400,
                "That was a different Microsoft account",
                [
                    "You signed in to Microsoft with another account than the one you use for "
                    "this app. Nothing was connected; try again with your work account."
                ],
                next_url=pending.return_to,
                manual_link=True,
                prefix=self.prefix,
            )
        await self._connected(session, pending, result)
        return redirect(pending.return_to)

    async def _connected(self, session: Session, pending: Pending, result: TokenResult) -> None:
        await self.records.save_tokens(session.user_key, result.token_cache)
        record = await self.records.integration(session.user_key)
        record.email, record.tenant_id = session.email, session.tenant_id
        answered(record, pending)
        record.status = "connected"
        record.granted_scopes = sorted(result.scopes)
        record.route, record.ews_url, record.app = pending.route, pending.ews_url, pending.app
        record.account_id = result.account_id
        record.connected_at = time.time()
        record.last_error_class = record.last_error_code = record.correlation_id = None
        await self.records.save_integration(record)
        self.journey.on_change(session.user_key)
        log.info(
            "user %s connected Office 365 (%s)",
            shown_user(session.user_key, session.email),
            pending.route,
            extra={
                "user_key": session.user_key,
                "tenant_id": session.tenant_id,
                "route": pending.route,
            },
        )
        metrics.CONSENT_OUTCOMES.labels("connected").inc()

    async def _admin_consented(
        self, request: Request, session: Session, pending: Pending, fields: dict[str, str]
    ) -> Response:
        if await record_org_consent(self.journey, pending, fields) is None:
            error = classify("invalid_request", None, None)
            return admin_failed(request, self.prefix, pending, error)
        # Admin consent gives no code: now the admin's own tokens, through a normal authorize.
        return_to = safe_next(pending.return_to, self.journey.public_origin)
        url = await self.journey.start_for_session(session, return_to, kind="user")
        return to_microsoft(request, url, return_to)

    # --- failure --------------------------------------------------------------------------

    async def _failed(
        self, request: Request, session: Session, pending: Pending, error: ErrorClass
    ) -> Response:
        record = await self.records.integration(session.user_key)
        record.email, record.tenant_id = session.email, session.tenant_id
        answered(record, pending)
        record.last_error_class, record.last_error_code = error.kind, error.code
        record.correlation_id = error.correlation_id
        status: Status = FAILURE_STATUS.get(error.kind, "failed")
        if record.status != "connected":
            record.status = status
        await self.records.save_integration(record)
        if error.kind == "admin_approval_required" and pending.tenant_id:
            await self._tenant_needs_admin(pending.tenant_id)
        level = logging.ERROR if error.kind == "config" else logging.WARNING
        log.log(
            level,
            "consent for %s ended: %s",
            shown_user(session.user_key, session.email),
            error.describe(),
            extra=_error_fields(session.user_key, session.tenant_id, error),
        )
        metrics.CONSENT_OUTCOMES.labels(error.kind).inc()
        return self._error_page(request, session, pending, error)

    async def _tenant_needs_admin(self, tenant_id: str) -> None:
        """Spare the tenant's other users the same failing screen for a while."""
        tenant = await self.records.tenant(tenant_id)
        assert tenant is not None
        retry = self.journey.settings.consent.admin_approval_retry
        tenant.approval_required_until = time.time() + retry
        tenant.approval_failures += 1
        await self.records.save_tenant(tenant)
        await self.journey.count_waiting()

    def _error_page(
        self, request: Request, session: Session, pending: Pending, error: ErrorClass
    ) -> Response:
        common: dict[str, Any] = {
            "next_url": pending.return_to,
            "prefix": self.prefix,
            "code": error.reference,
            "correlation_id": error.correlation_id,
        }
        if error.kind == "declined":
            text = (
                "You chose not to connect your Office 365 calendar and contacts. That's fine: "
                "the app works without them, and you can connect later from the connection page."
            )
            return page(
                request, 200, "Office 365 not connected", [text], manual_link=True, **common
            )
        if error.kind == "admin_approval_required":
            csrf = self.csrf.token(session)
            return page(
                request,
                200,
                ADMIN_NEEDED,
                [ADMIN_NEEDED_TEXT],
                admin_options=True,
                csrf=csrf,
                admin_link=self.links.url(pending.tenant_id, pending.app, pending.scopes),
                **common,
            )
        if error.error == BUSY:  # our own redemption queue was full: nothing reached Microsoft
            text = (
                "Microsoft is slow right now, so your Office 365 calendar and contacts are not "
                "connected yet. You can keep using the app; try again in a few minutes from "
                "the connection page."
            )
            return page(request, 200, "Microsoft is slow", [text], manual_link=True, **common)
        if error.kind == "config":
            text = (
                "The connection to Microsoft is not set up correctly. Your administrators have "
                "been told; you can keep using the app."
            )
            return page(request, 200, "Office 365 cannot be connected right now", [text], **common)
        text = (
            "Connecting your Office 365 calendar and contacts did not work this time. You can "
            "keep using the app and try again later from the connection page."
        )
        return page(request, 200, "Office 365 not connected", [text], manual_link=True, **common)


def answered(record: Integration, pending: Pending) -> None:
    """Microsoft brought back an answer: only now does the user count as asked."""
    record.prompted_before = True
    record.prompted_scopes = sorted(set(record.prompted_scopes) | set(pending.scopes))


def _another_account(session: Session, result: TokenResult) -> bool:
    """Whether the user consented with another Microsoft account than their SSO identity
    (only checkable when the SSO sign-in named a tenant and object id)."""
    if not (session.tenant_id and session.object_id):
        return False
    return (result.tenant_id or "").lower() != session.tenant_id.lower() or (
        result.object_id or ""
    ).lower() != session.object_id.lower()


__all__ = ["FAILURE_STATUS", "Callback", "answered"]


def _error_fields(user_key: str, tenant_id: str | None, error: ErrorClass) -> dict[str, object]:
    """A failure's details as log fields, so they can be searched without parsing text."""
    return {
        "user_key": user_key,
        "tenant_id": tenant_id,
        "error_class": error.kind,
        "aadsts": error.code,
        "error": error.error,
        "correlation_id": error.correlation_id,
        "trace_id": error.trace_id,
    }

"""An organization's consent: what an administrator's approval records, and the page that
says when it did not go through.

Microsoft's admin consent answer carries `admin_consent=True` and a `tenant` that anyone
holding the URL can change, so the tenant that counts is the one bound in state: the SSO
identity's, or the app registration's when it names one tenant. Only a multi-tenant
registration without an SSO tenant takes the tenant Microsoft names, and only because
the one-time state that came back with it was started here, in this browser.

A failed admin consent never touches the user's own record: the person who clicked may
not be the user, and a user waiting for an administrator must stay asked again once one
approves. The audit log never names the session's user as the approving administrator:
Microsoft's answer names nobody, and the admin link (handoff.py) learns who approved by
signing the administrator in afterwards.
"""

from __future__ import annotations

import logging
import re
import time

from starlette.requests import Request
from starlette.responses import Response

from proxy.consent.journey import ConsentJourney, Pending
from proxy.consent.render import page
from proxy.microsoft import ErrorClass
from proxy.ops import metrics

log = logging.getLogger("consent_proxy.consent")

TENANT_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
NOT_APPROVED = "Your organization's approval did not go through"


async def record_org_consent(
    journey: ConsentJourney, pending: Pending, fields: dict[str, str]
) -> str | None:
    """The tenant an administrator approved the app for, recorded; None when the callback
    is no consent (or names no tenant it may be trusted for)."""
    if fields.get("admin_consent", "").lower() != "true":
        return None
    returned = fields.get("tenant", "").lower()
    tenant_id = pending.tenant_id
    if tenant_id is None:
        if not TENANT_ID.fullmatch(returned):
            return None
        tenant_id = returned
    elif returned != tenant_id.lower():
        log.warning(
            "admin consent returned tenant %r, state bound %r: ignoring the returned one",
            returned,
            tenant_id,
        )
    tenant = await journey.records.tenant(tenant_id)
    assert tenant is not None
    tenant.admin_consented, tenant.admin_consented_at = True, time.time()
    tenant.approval_required_until = None
    await journey.records.save_tenant(tenant)
    log.info(
        "admin consent recorded for tenant %s (app %s; Microsoft's answer names no administrator)",
        tenant.tenant_id,
        pending.app,
    )
    metrics.CONSENT_OUTCOMES.labels("admin_consented").inc()
    await journey.count_waiting()
    return tenant.tenant_id


def admin_failed(request: Request, prefix: str, pending: Pending, error: ErrorClass) -> Response:
    """Logged and counted; the page for an organization's approval that did not happen."""
    log.warning("admin consent for tenant %s ended: %s", pending.tenant_id or "?", error.describe())
    metrics.CONSENT_OUTCOMES.labels(error.kind).inc()
    if error.kind == "admin_approval_required":
        text = (
            "Microsoft says the account you signed in with may not approve apps for the "
            "organization. Ask a Global Administrator, Application Administrator or Cloud "
            "Application Administrator to approve it."
        )
    elif error.kind == "declined":
        text = "The app was not approved for the organization: Microsoft's page was cancelled."
    else:
        text = "Approving the app for the organization did not work this time."
    unchanged = "Nothing has changed for anyone's own connection; you can try again later."
    return page(
        request,
        200,
        NOT_APPROVED,
        [text, unchanged],
        next_url=pending.return_to,
        manual_link=bool(pending.user_key),
        prefix=prefix,
        code=error.reference,
        correlation_id=error.correlation_id,
    )


__all__ = ["NOT_APPROVED", "TENANT_ID", "admin_failed", "record_org_consent"]

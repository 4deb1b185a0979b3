"""`{tenant}/v2.0/adminconsent`: an administrator grants the app for the whole tenant. It
needs a tenant (never `common`); someone who is no admin gets "Need admin approval", and
accepting anyway answers AADSTS90094. Success goes back with `admin_consent=True`."""

from __future__ import annotations

import html
from collections.abc import Mapping

from starlette.responses import Response

from proxy.demo.microsoft.directory import AppRegistration
from proxy.demo.microsoft.interaction import ADMIN_CONSENT_FIELDS, Ask, Interaction
from proxy.demo.microsoft.pages import (
    BUTTONS,
    form_start,
    page,
    permission_list,
    redirect,
    signed_in,
)
from proxy.demo.microsoft.refusals import Refusal


class AdminConsent(Interaction):
    fields = ADMIN_CONSENT_FIELDS

    def refused_tenant(self, segment: str) -> Response | None:
        if segment.lower() not in ("common", "consumers"):
            return None
        return page(
            "Sorry, but we're having trouble signing you in.",
            '<p role="alert">Admin consent needs a tenant: use the tenant id, a verified '
            "domain or 'organizations', not 'common'.</p>",
            400,
        )

    def requested_scopes(self, params: Mapping[str, str], app: AppRegistration) -> list[str]:
        return self.state.canonical_all(params.get("scope", "").split(), app)

    def decide(self, ask: Ask) -> Response:
        app, user = ask.app, ask.user
        decision = ask.params.get("decision")
        if decision in ("accept", "back") and not user.admin:
            tenant = self.state.tenants[user.tenant_id].name
            return redirect(ask.params, Refusal(90094, tenant=tenant, app=app.name).fields())
        if decision == "accept":
            grants = self.state.tenant_grants.setdefault((app.client_id, user.tenant_id), set())
            grants.update(ask.scopes)
            scope = " ".join(ask.scopes)
            answer = {"admin_consent": "True", "tenant": user.tenant_id, "scope": scope}
            return redirect(ask.params, answer)
        if not user.admin:
            return self.admin_approval_page(ask)
        body = (
            f"{signed_in(user)}<p><strong>{html.escape(app.name)}</strong> (unverified) "
            f"would like to, for everyone in your organization:</p>{permission_list(ask.scopes)}"
            f"{form_start(ask.request, ask.params, self.fields, user)}"
            "<p>If you accept, this app will get access to the specified resources for all "
            "users in your organization. No one else will be prompted to review these "
            f"permissions.</p>{BUTTONS}</form>"
        )
        return page("Permissions requested: accept for your organization", body)

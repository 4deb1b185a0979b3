"""`{tenant}/oauth2/v2.0/authorize`: the code flow with PKCE (S256 only), its consent page
("Permissions requested", with "Consent on behalf of your organization" for admins),
"Need admin approval" where users may not consent, and `prompt=none` / `prompt=consent`."""

from __future__ import annotations

import html
import secrets
import uuid
from collections.abc import Mapping

from starlette.responses import Response

from proxy.demo.microsoft.directory import AppRegistration
from proxy.demo.microsoft.interaction import AUTHORIZE_FIELDS, Ask, Interaction
from proxy.demo.microsoft.pages import (
    BUTTONS,
    form_start,
    page,
    permission_list,
    redirect,
    signed_in,
)
from proxy.demo.microsoft.refusals import Refusal
from proxy.demo.microsoft.state import Code

PROMPTS = ("login", "none", "consent", "select_account")


class Authorize(Interaction):
    fields = AUTHORIZE_FIELDS

    def requested_scopes(self, params: Mapping[str, str], app: AppRegistration) -> list[str]:
        if params.get("response_type") != "code":
            raise Refusal(70005)
        prompt = params.get("prompt")
        if prompt is not None and prompt not in PROMPTS:
            raise Refusal(90023, prompt=prompt)
        if params.get("code_challenge_method") != "S256" or not params.get("code_challenge"):
            raise Refusal(9002325)
        if not params.get("scope"):
            raise Refusal(900144)
        return self.state.canonical_all(params["scope"].split(), app)

    def decide(self, ask: Ask) -> Response:
        tenant = self.state.tenants[ask.user.tenant_id]
        decision = ask.params.get("decision")
        may_consent = tenant.user_consent or ask.user.admin
        if decision == "back":
            code = tenant.admin_approval_code
            refusal = Refusal(code, error="access_denied", tenant=tenant.name, app=ask.app.name)
            return redirect(ask.params, refusal.fields())
        if decision == "accept" and may_consent:
            for_org = ask.user.admin and ask.params.get("consent_for_org") == "yes"
            grants = self.state.tenant_grants if for_org else self.state.user_grants
            key = (ask.app.client_id, tenant.id if for_org else ask.user.object_id)
            grants.setdefault(key, set()).update(ask.scopes)
            return self.code_redirect(ask)
        granted = self.state.granted(ask.app.client_id, ask.user)
        missing = [s for s in ask.scopes if s not in granted]
        prompt = ask.params.get("prompt")
        if not missing and prompt != "consent":
            return self.code_redirect(ask)
        if prompt == "none":
            refusal = Refusal(
                65001, error="consent_required", client_id=ask.app.client_id, app=ask.app.name
            )
            return redirect(ask.params, refusal.fields())
        if not may_consent:
            return self.admin_approval_page(ask)
        offer_org = ask.user.admin and (prompt == "consent" or not tenant.user_consent)
        return self.consent_page(ask, offer_org)

    def code_redirect(self, ask: Ask) -> Response:
        code = secrets.token_urlsafe(48)
        self.state.codes[code] = Code(
            ask.app.client_id,
            ask.params["redirect_uri"],
            ask.user,
            tuple(ask.scopes),
            ask.params["code_challenge"],
            ask.params.get("nonce"),
            self.state.clock(),
        )
        return redirect(ask.params, {"code": code, "session_state": str(uuid.uuid4())})

    def consent_page(self, ask: Ask, offer_org: bool) -> Response:
        org = (
            '<p><input type="checkbox" id="consent_for_org" name="consent_for_org" value="yes">'
            ' <label for="consent_for_org">Consent on behalf of your organization</label></p>'
            if offer_org
            else ""
        )
        body = (
            f"{signed_in(ask.user)}<p><strong>{html.escape(ask.app.name)}</strong> (unverified) "
            f"would like to:</p>{permission_list(ask.scopes)}"
            f"{form_start(ask.request, ask.params, self.fields, ask.user)}{org}"
            "<p>Accepting these permissions means that you allow this app to use your data "
            "as specified in their terms of service and privacy statement.</p>"
            f"{BUTTONS}</form>"
        )
        return page("Permissions requested", body)

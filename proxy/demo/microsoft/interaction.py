"""What `oauth2/v2.0/authorize` and `v2.0/adminconsent` share: a browser request (GET
query, or the POST of one of our own pages) checked in Entra's order, an account picked,
and a decision. A refusal before the redirect URI is known to be the app's is shown as an
error page; after that it goes back to the app, as Entra sends it."""

from __future__ import annotations

import html
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from proxy.demo.microsoft.directory import AppRegistration, MicrosoftUser, Tenant
from proxy.demo.microsoft.pages import (
    account_picker,
    error_page,
    form_start,
    page,
    read_form,
    redirect,
    signed_in,
)
from proxy.demo.microsoft.refusals import Refusal, declined
from proxy.demo.microsoft.signed_in import login_required, remember
from proxy.demo.microsoft.signed_in import remembered as signed_in_before
from proxy.demo.microsoft.state import StandInState

# The request fields each page carries from the GET to its POST.
AUTHORIZE_FIELDS = (
    "client_id", "redirect_uri", "response_type", "response_mode", "scope", "state",
    "nonce", "code_challenge", "code_challenge_method", "prompt", "login_hint",
)  # fmt: skip
ADMIN_CONSENT_FIELDS = ("client_id", "redirect_uri", "scope", "state")


@dataclass(frozen=True, slots=True)
class Ask:
    """A checked interactive request: `app` asks `user` for `scopes` (canonical); `params`
    are the request's fields, `request` serves the pages' form actions."""

    request: Request
    params: Mapping[str, str]
    app: AppRegistration
    user: MicrosoftUser
    scopes: list[str]


class Interaction(ABC):
    """One interactive endpoint: subclasses say which fields it carries, which scopes a
    request asks for and what the user's decision does."""

    fields: tuple[str, ...]

    def __init__(self, state: StandInState) -> None:
        self.state = state

    async def handle(self, request: Request) -> Response:
        segment = request.path_params["tenant"]
        params = dict(request.query_params) if request.method == "GET" else await read_form(request)
        refused = self.refused_tenant(segment)
        if refused is not None:
            return refused
        if params is None:
            return error_page(Refusal(90100))
        try:
            app = self.checked_client(segment, params)
        except Refusal as refusal:  # shown here: never redirect to an unchecked URI
            return error_page(refusal)
        try:
            scopes = self.requested_scopes(params, app)
        except Refusal as refusal:
            return redirect(params, refusal.fields())
        user = self.chosen_user(params)
        if user is None and params.get("prompt") == "none":  # Entra's session, or no page
            user = signed_in_before(request, self.state)
            if user is None:
                return login_required(params)
        if user is None:
            return self.account_picker(request, params)
        try:
            self.check_user(segment, app, user)
        except Refusal as refusal:
            return error_page(refusal)
        if params.get("decision") == "cancel":
            return redirect(params, declined())
        return remember(self.decide(Ask(request, params, app, user, scopes)), user)

    # --- what each endpoint says -------------------------------------------------------------

    def refused_tenant(self, segment: str) -> Response | None:
        """A page for a tenant path this endpoint never serves; None: go on."""
        return None

    @abstractmethod
    def requested_scopes(self, params: Mapping[str, str], app: AppRegistration) -> list[str]:
        """The canonical scopes asked for; a refusal goes back to the redirect URI."""

    @abstractmethod
    def decide(self, ask: Ask) -> Response:
        """What the user's `decision` (none yet, accept, back) leads to."""

    # --- checks in Entra's order -------------------------------------------------------------

    def checked_client(self, segment: str, params: Mapping[str, str]) -> AppRegistration:
        """The app the request names, once its redirect URI is one the app registered."""
        if self.state.tenant_in_path(segment) is None:
            raise Refusal(90002, tenant=segment)
        client_id = params.get("client_id", "")
        app = self.state.apps.get(client_id)
        if app is None:
            raise Refusal(700016, client_id=client_id, tenant=segment)
        redirect_uri = params.get("redirect_uri", "")
        if redirect_uri not in app.redirect_uris:
            raise Refusal(50011, redirect_uri=redirect_uri, client_id=client_id)
        return app

    def chosen_user(self, params: Mapping[str, str]) -> MicrosoftUser | None:
        email = (params.get("user") or params.get("login_hint") or "").lower()
        return self.state.accounts.get(email)

    def check_user(self, segment: str, app: AppRegistration, user: MicrosoftUser) -> None:
        tenant = self.state.tenant_in_path(segment)
        if isinstance(tenant, Tenant) and tenant.id != user.tenant_id:
            raise Refusal(50020, user=user.email, tenant=tenant.name)
        if app.home_tenant is not None and app.home_tenant != user.tenant_id:
            raise Refusal(700016, client_id=app.client_id, tenant=user.tenant_id)

    # --- pages both endpoints show -----------------------------------------------------------

    def account_picker(self, request: Request, params: Mapping[str, str]) -> Response:
        """The accounts of the tenant in the path (every account for organizations)."""
        tenant = self.state.tenant_in_path(request.path_params["tenant"])
        users = [
            u
            for u in self.state.accounts.values()
            if not isinstance(tenant, Tenant) or u.tenant_id == tenant.id
        ]
        return account_picker(request, params, self.fields, users)

    def admin_approval_page(self, ask: Ask) -> Response:
        """The "Need admin approval" page: its one button goes back to the app
        (`decision=back`). It carries the authorize request's fields, a superset of admin
        consent's."""
        body = (
            f"{signed_in(ask.user)}<p><strong>{html.escape(ask.app.name)}</strong> needs "
            "permission to access resources in your organization that only an admin can grant. "
            "Please ask an admin to grant permission to this app before you can use it.</p>"
            f"{form_start(ask.request, ask.params, AUTHORIZE_FIELDS, ask.user)}"
            '<button type="submit" name="decision" value="back">'
            "Return to the application without granting consent</button></form>"
        )
        return page("Need admin approval", body)

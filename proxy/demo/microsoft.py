"""A Microsoft identity platform stand-in: what msal and a browser see of
login.microsoftonline.com, in one Starlette app, with in-memory tenants, users, app
registrations and consent grants.

It serves, under `{base}/{tenant}/` (a tenant id, a verified domain, `organizations`,
`common`): v2 discovery and keys, `oauth2/v2.0/authorize` (consent page, "Need admin
approval", decline, prompt=none), `oauth2/v2.0/token` (authorization_code with PKCE and a
secret or a certificate assertion, refresh_token with rotation) and `v2.0/adminconsent`;
and a tiny Graph (`{base}/graph/v1.0/me/events`, `/me/contacts`). Errors have Microsoft's
shape: `error`, `error_description` starting "AADSTSnnnn: ", `error_codes`, `timestamp`,
`trace_id`, `correlation_id`.

msal only talks to https authorities: serve it over TLS (tests use a trustme CA). msal's
instance discovery (`/common/discovery/instance`) is not served: it always goes to
login.microsoftonline.com for a host msal does not know, so clients of the stand-in set
`instance_discovery=False` (the proxy always does).

Where it knowingly differs from Microsoft: a refresh token dies when it is redeemed (Entra
keeps the old one valid; killing it makes a double refresh visible), and anyone can pick
any demo user (there are no passwords). Knobs are plain methods and attributes; tests run
the stand-in in-process and change them between requests. Built on `DemoOpenIdProvider`,
whose keys sign every token and are published as the JWKS.
"""

from __future__ import annotations

import base64
import collections
import datetime as dt
import hashlib
import html
import json
import secrets
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qs, unquote_plus, urlencode, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet, RSAKey
from joserfc.jws import JWSRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from proxy.demo.oidc_provider import DemoOpenIdProvider
from proxy.demo.users import (
    CONTOSO_TENANT_ID,
    FABRIKAM_ADMIN,
    FABRIKAM_TENANT_ID,
    HYBRID_TENANT_ID,
    DemoUser,
)
from proxy.demo.users import DEMO_USERS as PEOPLE

__all__ = [
    "CONTOSO",
    "DEMO_APP_ID",
    "DEMO_APP_SECRET",
    "DEMO_TENANTS",
    "DEMO_USERS",
    "EXCHANGE_ONLINE",
    "FABRIKAM",
    "GRAPH",
    "HYBRID",
    "AppRegistration",
    "MicrosoftStandIn",
    "MicrosoftUser",
    "Tenant",
    "demo_app",
]

GRAPH = "https://graph.microsoft.com"
EXCHANGE_ONLINE = "https://outlook.office365.com"
EWS_PERMISSION = "EWS.AccessAsUser.All"
OIDC_SCOPES = ("openid", "profile", "email", "offline_access")
GRAPH_PERMISSIONS = (
    "User.Read", "Calendars.Read", "Calendars.ReadWrite", "Contacts.Read",
    "Contacts.ReadWrite", "People.Read",
)  # fmt: skip
DESCRIPTIONS = {
    "openid": "Sign you in",
    "profile": "View your basic profile",
    "email": "View your email address",
    "offline_access": "Maintain access to data you have given it access to",
    "User.Read": "Sign you in and read your profile",
    "Calendars.Read": "Read your calendars",
    "Calendars.ReadWrite": "Have full access to your calendars",
    "Contacts.Read": "Read your contacts",
    "Contacts.ReadWrite": "Have full access to your contacts",
    "People.Read": "Read your relevant people list",
    EWS_PERMISSION: "Access your mailboxes as you, through Exchange Web Services",
}
AUTHORIZE_FIELDS = (
    "client_id", "redirect_uri", "response_type", "response_mode", "scope", "state",
    "nonce", "code_challenge", "code_challenge_method", "prompt", "login_hint",
)  # fmt: skip
ADMIN_CONSENT_FIELDS = ("client_id", "redirect_uri", "scope", "state")
MULTI_TENANT = ("organizations", "common")
MAX_FORM_BYTES = 64 * 1024
DEFAULT_ACCESS_TOKEN_LIFETIME = 3600
DEFAULT_CODE_LIFETIME = 600
DEFAULT_REFRESH_TOKEN_LIFETIME = 90 * 86400
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@dataclass(frozen=True, slots=True)
class Tenant:
    id: str
    name: str
    domains: tuple[str, ...]
    # False: users who are not admins get "Need admin approval" instead of a consent page.
    user_consent: bool = True
    # What backing out of "Need admin approval" answers: 65001, or 90094.
    admin_approval_code: int = 65001
    # On-premises EWS hosts registered for Hybrid Modern Auth.
    ews_hosts: tuple[str, ...] = ()


# An account of the stand-in is a demo user whose `id` is the `sub` Entra sends.
MicrosoftUser = DemoUser


@dataclass(frozen=True, slots=True)
class AppRegistration:
    client_id: str
    name: str
    redirect_uris: tuple[str, ...]
    secrets: tuple[str, ...] = ()
    certificates: tuple[str, ...] = ()  # PEM certificates whose keys sign client assertions
    home_tenant: str | None = None  # a tenant id for a single-tenant app; None: multi-tenant
    permissions: tuple[str, ...] = (  # what `{resource}/.default` stands for
        f"{GRAPH}/User.Read",
        f"{GRAPH}/Calendars.Read",
        f"{GRAPH}/Contacts.Read",
    )


CONTOSO = Tenant(CONTOSO_TENANT_ID, "contoso", ("contoso.example", "contoso.onmicrosoft.com"))
FABRIKAM = Tenant(
    FABRIKAM_TENANT_ID, "fabrikam", ("fabrikam.example", "fabrikam.onmicrosoft.com"), False
)
HYBRID = Tenant(
    HYBRID_TENANT_ID,
    "hybrid",
    ("hybrid.example", "hybrid.onmicrosoft.com"),
    ews_hosts=("mail.hybrid.example",),
)
DEMO_TENANTS = (CONTOSO, FABRIKAM, HYBRID)


def account(user: DemoUser) -> MicrosoftUser:
    """The user as an Entra account: the same tenant and object ids, a `sub` of its own
    (Entra's is pairwise), and no groups (Entra leaves them out unless configured)."""
    return DemoUser(
        f"{user.id}-{user.object_id[:8]}",
        user.email,
        user.name,
        tenant_id=user.tenant_id,
        object_id=user.object_id,
        admin=user.admin,
    )


# The demo users, and an administrator of fabrikam.
DEMO_USERS: tuple[MicrosoftUser, ...] = tuple(map(account, (*PEOPLE, FABRIKAM_ADMIN)))
DEMO_APP_ID = "c0115e47-0000-4000-8000-00000000a991"
DEMO_APP_SECRET = "demo-client-secret-not-for-production"  # noqa: S105 - a demo's


def demo_app(*redirect_uris: str, **changes: Any) -> AppRegistration:
    """The demo app registration: multi-tenant, one secret, the given redirect URIs."""
    app = AppRegistration(DEMO_APP_ID, "Consent Proxy Demo", redirect_uris, (DEMO_APP_SECRET,))
    return replace(app, **changes)


@dataclass(slots=True)
class _Code:
    client_id: str
    redirect_uri: str
    user: MicrosoftUser
    scopes: tuple[str, ...]
    challenge: str
    nonce: str | None
    issued: float
    used: bool = False


@dataclass(slots=True)
class _RefreshToken:
    client_id: str
    user: MicrosoftUser
    scopes: tuple[str, ...]
    issued: float
    alive: bool = True


# Microsoft's refusals: AADSTS number -> (OAuth error, message). `{name}` fields are filled
# from the request; the wording is Microsoft's (as far as it is stable), for realism only.
REFUSALS: dict[int, tuple[str, str]] = {
    28000: (
        "invalid_request",
        "Provided value for the input parameter scope is not valid because it contains more "
        "than one resource.",
    ),
    50011: (
        "invalid_request",
        "The redirect URI '{redirect_uri}' specified in the request does not match the "
        "redirect URIs configured for the application '{client_id}'.",
    ),
    50020: (
        "invalid_request",
        "User account '{user}' from identity provider does not exist in tenant '{tenant}' "
        "and cannot access the application.",
    ),
    50076: (
        "invalid_grant",
        "Due to a configuration change made by your administrator, or because you moved to a "
        "new location, you must use multi-factor authentication to access the resource.",
    ),
    50148: (
        "invalid_grant",
        "The code_verifier does not match the code_challenge supplied in the authorization "
        "request for PKCE.",
    ),
    50173: (
        "invalid_grant",
        "The provided grant has expired due to it being revoked, a fresh auth token is "
        "needed. The user might have changed or reset their password.",
    ),
    53003: (
        "invalid_grant",
        "Access has been blocked by Conditional Access policies. The access policy does not "
        "allow token issuance.",
    ),
    54005: (
        "invalid_grant",
        "OAuth2 Authorization code was already redeemed, please retry with a new valid code "
        "or use an existing refresh token.",
    ),
    65001: (
        "invalid_grant",
        "The user or administrator has not consented to use the application with ID "
        "'{client_id}' named '{app}'. Send an interactive authorization request for this "
        "user and resource.",
    ),
    65004: ("access_denied", "User declined to consent to access the app."),
    70003: ("unsupported_grant_type", "The app requested an unsupported grant type."),
    70005: ("unsupported_response_type", "The response_type is not enabled for the app."),
    70008: (
        "invalid_grant",
        "The provided authorization code or refresh token has expired due to inactivity. "
        "Send a new interactive authorization request for this user and resource.",
    ),
    70011: (
        "invalid_scope",
        "The provided value for the input parameter 'scope' is not valid. The scope {scope} "
        "is not valid.",
    ),
    90002: ("invalid_tenant", "Tenant '{tenant}' not found."),
    90023: ("invalid_request", "Invalid prompt value: '{prompt}'."),
    90033: ("temporarily_unavailable", "A transient error has occurred. Please try again."),
    90094: (
        "access_denied",
        "An administrator of {tenant} has set a policy that prevents you from granting {app} "
        "the permissions it is requesting. Contact an administrator of {tenant}, who can "
        "grant permissions to this app on your behalf.",
    ),
    90100: ("invalid_request", "The request is malformed or too large."),
    700016: (
        "unauthorized_client",
        "Application with identifier '{client_id}' was not found in the directory '{tenant}'.",
    ),
    700021: (
        "invalid_client",
        "Client assertion application identifier or audience doesn't match the request.",
    ),
    700024: ("invalid_client", "Client assertion is not within its valid time range."),
    700027: ("invalid_client", "Client assertion failed signature validation."),
    900144: ("invalid_request", "The request body must contain the following parameter: 'scope'."),
    7000215: (
        "invalid_client",
        "Invalid client secret provided. Ensure the secret being sent in the request is the "
        "client secret value, not the client secret ID, for a secret added to app "
        "'{client_id}'.",
    ),
    7000218: (
        "invalid_client",
        "The request body must contain the following parameter: 'client_assertion' or "
        "'client_secret'.",
    ),
    7000222: (
        "invalid_client",
        "The provided client secret keys for app '{client_id}' are expired.",
    ),
    9002313: ("invalid_grant", "Invalid request. Request is malformed or invalid."),
    9002325: (
        "invalid_request",
        "Proof Key for Code Exchange is required: send code_challenge with "
        "code_challenge_method=S256.",
    ),
}


class _Refusal(Exception):
    """A refusal in Microsoft's shape: `error` (the table's, or `error=`) and the message."""

    def __init__(
        self, code: int, status: int = 400, error: str | None = None, **facts: str
    ) -> None:
        default_error, template = REFUSALS[code]
        super().__init__(template)
        self.code, self.status = code, status
        self.error = error or default_error
        self.message = template.format_map(collections.defaultdict(str, facts))

    def fields(self) -> dict[str, str]:
        """The redirect URI's `error` and `error_description`."""
        return {"error": self.error, "error_description": _description(self.code, self.message)}


@dataclass(slots=True)
class _Failures:
    remaining: int = 0
    status: int = 503
    retry_after: int | None = None


class MicrosoftStandIn(DemoOpenIdProvider):
    """Entra ID for tests and the demo. State and knobs:

    - `grant_user_consent`, `grant_admin_consent`, `revoke_consent`: consent grants;
      `set_user_consent(tenant, allowed)`: the tenant's user consent setting;
    - `revoke_user(email)`: every refresh token of the user dies (password reset);
      `expire_refresh_tokens(email)`; `require_mfa(email)`; `block(email)` (Conditional
      Access);
    - `fail_token_requests(n, status=503, retry_after=None)`: the next n token calls fail;
    - `expire_secret(client_id)`: its secrets answer AADSTS7000222;
    - `access_token_lifetime`, `code_lifetime`, `refresh_token_lifetime` (seconds);
      `clock` (a `time.time` stand-in, to age codes and tokens); `outage` (discovery and
      keys answer 503); `add_app(app)`;
    - counters: `refresh_redemptions[email]` (refresh-token redemptions attempted),
      `token_requests`, `discovery_fetches`, `jwks_fetches`;
    - `reset()`: back to the state it was created with.
    """

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
        self._failures = _Failures()
        self._codes: dict[str, _Code] = {}
        self._refresh_tokens: dict[str, _RefreshToken] = {}

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
            self._canonical_all(scopes, self.apps[client_id])
        )

    def grant_admin_consent(self, client_id: str, tenant: str, scopes: Iterable[str]) -> None:
        found = self.tenant(tenant)
        self.tenant_grants.setdefault((client_id, found.id), set()).update(
            self._canonical_all(scopes, self.apps[client_id])
        )

    def revoke_consent(self, client_id: str, email: str) -> None:
        """Remove the user's own grant and the tenant's (as an admin removing the app)."""
        user = self.user(email)
        self.user_grants.pop((client_id, user.object_id), None)
        self.tenant_grants.pop((client_id, user.tenant_id), None)

    def revoke_user(self, email: str) -> None:
        """Every refresh token of the user dies (revokeSignInSessions, password reset)."""
        for token in self._refresh_tokens.values():
            if token.user.email.lower() == email.lower():
                token.alive = False

    def expire_refresh_tokens(self, email: str) -> None:
        for token in self._refresh_tokens.values():
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
        self._failures = _Failures(count, status, retry_after)

    def refresh_token_alive(self, token: str) -> bool:
        found = self._refresh_tokens.get(token)
        return found is not None and found.alive

    # --- the web app -----------------------------------------------------------------------

    def app(self) -> Starlette:
        tenant = f"{self.prefix}/{{tenant}}"
        both = ["GET", "POST"]
        return Starlette(
            routes=[
                Route(f"{tenant}/v2.0/.well-known/openid-configuration", self._discovery),
                Route(f"{tenant}/discovery/v2.0/keys", self._keys_route),
                Route(f"{tenant}/oauth2/v2.0/authorize", self._authorize, methods=both),
                Route(f"{tenant}/oauth2/v2.0/token", self._token, methods=["POST"]),
                Route(f"{tenant}/v2.0/adminconsent", self._admin_consent, methods=both),
                Route(f"{self.prefix}/graph/v1.0/me/{{kind:str}}", self._graph),
            ]
        )

    # --- discovery ---------------------------------------------------------------------------

    def _tenant(self, segment: str) -> Tenant | str | None:
        """A tenant by id or verified domain; "organizations"/"common" as themselves."""
        segment = segment.lower()
        if segment in MULTI_TENANT:
            return segment
        return next(
            (t for t in self.tenants.values() if segment == t.id or segment in t.domains), None
        )

    def tenant_discovery(self, segment: str) -> dict[str, Any] | None:
        found = self._tenant(segment)
        if found is None:
            return None
        path = found.id if isinstance(found, Tenant) else found
        issuer_tenant = found.id if isinstance(found, Tenant) else "{tenantid}"
        base = f"{self.base}/{path}"
        return {
            "issuer": f"{self.base}/{issuer_tenant}/v2.0",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "jwks_uri": f"{base}/discovery/v2.0/keys",
            "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "scopes_supported": list(OIDC_SCOPES),
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": [
                "client_secret_post", "private_key_jwt", "client_secret_basic",
            ],
            "code_challenge_methods_supported": ["S256"],
            "claims_supported": [
                "sub", "iss", "aud", "exp", "iat", "nbf", "nonce", "name",
                "preferred_username", "email", "tid", "oid", "ver",
            ],
            "tenant_region_scope": "EU",
            "cloud_instance_name": "microsoftonline.com",
        }  # fmt: skip

    async def _discovery(self, request: Request) -> Response:
        self.discovery_fetches += 1
        if self.outage:
            return JSONResponse({"error": "temporarily_unavailable"}, status_code=503)
        segment = request.path_params["tenant"]
        document = self.tenant_discovery(segment)
        if document is None:
            return self._error_json(_Refusal(90002, tenant=segment), request)
        return JSONResponse(document)

    async def _keys_route(self, request: Request) -> Response:
        self.jwks_fetches += 1
        if self.outage:
            return JSONResponse({"error": "temporarily_unavailable"}, status_code=503)
        return JSONResponse(self.jwks())

    # --- scopes ------------------------------------------------------------------------------

    def _canonical(self, scope: str) -> str | None:
        """A scope in full (`https://graph.microsoft.com/Calendars.Read`), OIDC scopes as they
        are; None for one Entra would reject (AADSTS70011)."""
        if scope.lower() in OIDC_SCOPES:
            return scope.lower()
        resource, _, permission = scope.rpartition("/") if "://" in scope else (GRAPH, "", scope)
        if resource == GRAPH:
            known = {p.lower(): p for p in (*GRAPH_PERMISSIONS, ".default")}
            name = known.get(permission.lower())
            return f"{GRAPH}/{name}" if name else None
        hosts = {h for t in self.tenants.values() for h in t.ews_hosts}
        ews = {EXCHANGE_ONLINE, *(f"https://{h}" for h in hosts)}
        if resource in ews and permission.lower() in (EWS_PERMISSION.lower(), ".default"):
            return f"{resource}/{EWS_PERMISSION}"
        return None

    def _canonical_all(self, scopes: Iterable[str], app: AppRegistration) -> list[str]:
        """Canonical scopes, `.default` expanded to the app's permissions."""
        out: list[str] = []
        for scope in scopes:
            canonical = self._canonical(scope)
            if canonical is None:
                raise _Refusal(70011, scope=scope)
            if canonical.endswith("/.default"):
                resource = canonical.removesuffix("/.default")
                out.extend(p for p in app.permissions if _resource(p) == resource)
            else:
                out.append(canonical)
        return list(dict.fromkeys(out))

    def _granted(self, client_id: str, user: MicrosoftUser) -> set[str]:
        return self.user_grants.get((client_id, user.object_id), set()) | self.tenant_grants.get(
            (client_id, user.tenant_id), set()
        )

    # --- authorize ---------------------------------------------------------------------------

    async def _authorize(self, request: Request) -> Response:
        segment = request.path_params["tenant"]
        params = dict(request.query_params) if request.method == "GET" else await _form(request)
        try:
            app = self._checked_client(segment, params)
        except _Refusal as refusal:  # shown here: never redirect to an unchecked URI
            return _error_page(refusal)
        assert params is not None
        try:
            scopes = self._authorize_request(params, app)
        except _Refusal as refusal:
            return _redirect(params, refusal.fields())
        user = self._chosen_user(params)
        if user is None:
            return self._account_picker(request, params, AUTHORIZE_FIELDS)
        try:
            self._check_user(segment, app, user)
        except _Refusal as refusal:
            return _error_page(refusal)
        return self._decide(request, params, app, user, scopes)

    def _checked_client(self, segment: str, params: Mapping[str, str] | None) -> AppRegistration:
        """The app the request names, once its redirect URI is one the app registered."""
        if params is None:
            raise _Refusal(90100)
        if self._tenant(segment) is None:
            raise _Refusal(90002, tenant=segment)
        client_id = params.get("client_id", "")
        app = self.apps.get(client_id)
        if app is None:
            raise _Refusal(700016, client_id=client_id, tenant=segment)
        redirect_uri = params.get("redirect_uri", "")
        if redirect_uri not in app.redirect_uris:
            raise _Refusal(50011, redirect_uri=redirect_uri, client_id=client_id)
        return app

    def _authorize_request(self, params: Mapping[str, str], app: AppRegistration) -> list[str]:
        """The canonical scopes asked for; a refusal to send back to the redirect URI."""
        if params.get("response_type") != "code":
            raise _Refusal(70005)
        prompt = params.get("prompt")
        if prompt is not None and prompt not in ("login", "none", "consent", "select_account"):
            raise _Refusal(90023, prompt=prompt)
        if params.get("code_challenge_method") != "S256" or not params.get("code_challenge"):
            raise _Refusal(9002325)
        if not params.get("scope"):
            raise _Refusal(900144)
        return self._canonical_all(params["scope"].split(), app)

    def _chosen_user(self, params: Mapping[str, str]) -> MicrosoftUser | None:
        email = (params.get("user") or params.get("login_hint") or "").lower()
        return self.accounts.get(email)

    def _check_user(self, segment: str, app: AppRegistration, user: MicrosoftUser) -> None:
        tenant = self._tenant(segment)
        if isinstance(tenant, Tenant) and tenant.id != user.tenant_id:
            raise _Refusal(50020, user=user.email, tenant=tenant.name)
        if app.home_tenant is not None and app.home_tenant != user.tenant_id:
            raise _Refusal(700016, client_id=app.client_id, tenant=user.tenant_id)

    def _decide(
        self,
        request: Request,
        params: Mapping[str, str],
        app: AppRegistration,
        user: MicrosoftUser,
        scopes: list[str],
    ) -> Response:
        tenant = self.tenants[user.tenant_id]
        decision = params.get("decision")
        may_consent = tenant.user_consent or user.admin
        if decision == "cancel":
            return _redirect(params, _declined())
        if decision == "back":
            code = tenant.admin_approval_code
            refusal = _Refusal(code, error="access_denied", tenant=tenant.name, app=app.name)
            return _redirect(params, refusal.fields())
        if decision == "accept" and may_consent:
            for_org = user.admin and params.get("consent_for_org") == "yes"
            grants = self.tenant_grants if for_org else self.user_grants
            key = (app.client_id, tenant.id if for_org else user.object_id)
            grants.setdefault(key, set()).update(scopes)
            return self._code_redirect(params, app, user, scopes)
        missing = [s for s in scopes if s not in self._granted(app.client_id, user)]
        prompt = params.get("prompt")
        if not missing and prompt != "consent":
            return self._code_redirect(params, app, user, scopes)
        if prompt == "none":
            refusal = _Refusal(
                65001, error="consent_required", client_id=app.client_id, app=app.name
            )
            return _redirect(params, refusal.fields())
        if not may_consent:
            return self._admin_approval_page(request, params, app, user)
        offer_org = user.admin and (prompt == "consent" or not tenant.user_consent)
        return self._consent_page(request, params, app, user, scopes, offer_org)

    def _code_redirect(
        self,
        params: Mapping[str, str],
        app: AppRegistration,
        user: MicrosoftUser,
        scopes: list[str],
    ) -> Response:
        code = secrets.token_urlsafe(48)
        self._codes[code] = _Code(
            app.client_id,
            params["redirect_uri"],
            user,
            tuple(scopes),
            params["code_challenge"],
            params.get("nonce"),
            self.clock(),
        )
        return _redirect(params, {"code": code, "session_state": str(uuid.uuid4())})

    # --- pages -------------------------------------------------------------------------------

    def _account_picker(
        self, request: Request, params: Mapping[str, str], fields: Iterable[str]
    ) -> Response:
        tenant = self._tenant(request.path_params["tenant"])
        users = [
            u
            for u in self.accounts.values()
            if not isinstance(tenant, Tenant) or u.tenant_id == tenant.id
        ]
        buttons = "".join(
            f'<li><button type="submit" name="user" value="{html.escape(u.email)}">'
            f"{html.escape(u.name)} <small>({html.escape(u.email)})</small></button></li>"
            for u in users
        )
        body = (
            f'<form method="post" action="{html.escape(request.url.path)}">'
            f"{_hidden(params, fields)}<fieldset><legend>Demo accounts (no passwords)</legend>"
            f'<ul class="accounts">{buttons}</ul></fieldset></form>'
        )
        return _page("Pick an account", body)

    def _consent_page(
        self,
        request: Request,
        params: Mapping[str, str],
        app: AppRegistration,
        user: MicrosoftUser,
        scopes: list[str],
        offer_org: bool,
    ) -> Response:
        org = (
            '<p><input type="checkbox" id="consent_for_org" name="consent_for_org" value="yes">'
            ' <label for="consent_for_org">Consent on behalf of your organization</label></p>'
            if offer_org
            else ""
        )
        body = (
            f"{_signed_in(user)}<p><strong>{html.escape(app.name)}</strong> (unverified) "
            f"would like to:</p>{_permission_list(scopes)}"
            f"{_form_start(request, params, AUTHORIZE_FIELDS, user)}{org}"
            "<p>Accepting these permissions means that you allow this app to use your data "
            "as specified in their terms of service and privacy statement.</p>"
            f"{_BUTTONS}</form>"
        )
        return _page("Permissions requested", body)

    def _admin_approval_page(
        self, request: Request, params: Mapping[str, str], app: AppRegistration, user: MicrosoftUser
    ) -> Response:
        body = (
            f"{_signed_in(user)}<p><strong>{html.escape(app.name)}</strong> needs permission "
            "to access resources in your organization that only an admin can grant. Please ask "
            "an admin to grant permission to this app before you can use it.</p>"
            f"{_form_start(request, params, AUTHORIZE_FIELDS, user)}"
            '<button type="submit" name="decision" value="back">'
            "Return to the application without granting consent</button></form>"
        )
        return _page("Need admin approval", body)

    # --- admin consent -----------------------------------------------------------------------

    async def _admin_consent(self, request: Request) -> Response:
        segment = request.path_params["tenant"]
        params = dict(request.query_params) if request.method == "GET" else await _form(request)
        if segment.lower() in ("common", "consumers"):
            return _page(
                "Sorry, but we're having trouble signing you in.",
                '<p role="alert">Admin consent needs a tenant: use the tenant id, a verified '
                "domain or 'organizations', not 'common'.</p>",
                400,
            )
        try:
            app = self._checked_client(segment, params)
        except _Refusal as refusal:
            return _error_page(refusal)
        assert params is not None
        try:
            scopes = self._canonical_all(params.get("scope", "").split(), app)
        except _Refusal as refusal:
            return _redirect(params, refusal.fields())
        user = self._chosen_user(params)
        if user is None:
            return self._account_picker(request, params, ADMIN_CONSENT_FIELDS)
        try:
            self._check_user(segment, app, user)
        except _Refusal as refusal:
            return _error_page(refusal)
        return self._admin_decide(request, params, app, user, scopes)

    def _admin_decide(
        self,
        request: Request,
        params: Mapping[str, str],
        app: AppRegistration,
        user: MicrosoftUser,
        scopes: list[str],
    ) -> Response:
        decision = params.get("decision")
        if decision == "cancel":
            return _redirect(params, _declined())
        if decision in ("accept", "back") and not user.admin:
            tenant = self.tenants[user.tenant_id].name
            return _redirect(params, _Refusal(90094, tenant=tenant, app=app.name).fields())
        if decision == "accept":
            self.tenant_grants.setdefault((app.client_id, user.tenant_id), set()).update(scopes)
            answer = {"admin_consent": "True", "tenant": user.tenant_id, "scope": " ".join(scopes)}
            return _redirect(params, answer)
        if not user.admin:
            return self._admin_approval_page(request, params, app, user)
        body = (
            f"{_signed_in(user)}<p><strong>{html.escape(app.name)}</strong> (unverified) "
            f"would like to, for everyone in your organization:</p>{_permission_list(scopes)}"
            f"{_form_start(request, params, ADMIN_CONSENT_FIELDS, user)}"
            "<p>If you accept, this app will get access to the specified resources for all "
            "users in your organization. No one else will be prompted to review these "
            f"permissions.</p>{_BUTTONS}</form>"
        )
        return _page("Permissions requested: accept for your organization", body)

    # --- token -------------------------------------------------------------------------------

    async def _token(self, request: Request) -> Response:
        self.token_requests += 1
        if self._failures.remaining > 0:
            return self._failure(request)
        form = await _form(request)
        try:
            if form is None:
                raise _Refusal(90100)
            segment = request.path_params["tenant"]
            if self._tenant(segment) is None:
                raise _Refusal(90002, tenant=segment)
            app = self._client(request, form)
            grant = form.get("grant_type")
            if grant == "authorization_code":
                return JSONResponse(self._redeem_code(app, form), headers=_NO_STORE)
            if grant == "refresh_token":
                return JSONResponse(self._redeem_refresh(app, form), headers=_NO_STORE)
            raise _Refusal(70003)
        except _Refusal as refusal:
            return self._error_json(refusal, request)

    def _failure(self, request: Request) -> Response:
        self._failures.remaining -= 1
        response = self._error_json(_Refusal(90033, self._failures.status), request)
        if self._failures.retry_after is not None:
            response.headers["Retry-After"] = str(self._failures.retry_after)
        return response

    def _client(self, request: Request, form: Mapping[str, str]) -> AppRegistration:
        """Authenticate the client: a secret (in the body or Basic) or a certificate-signed
        client assertion."""
        basic_id, basic_secret = _basic_credentials(request.headers.get("authorization"))
        client_id = form.get("client_id") or basic_id or ""
        app = self.apps.get(client_id)
        if app is None:
            raise _Refusal(700016, client_id=client_id, tenant=request.path_params["tenant"])
        secret = form.get("client_secret") or basic_secret
        if secret is not None:
            if client_id in self.expired_secrets:
                raise _Refusal(7000222, 401, client_id=client_id)
            if not any(secrets.compare_digest(secret, s) for s in app.secrets):
                raise _Refusal(7000215, 401, client_id=client_id)
            return app
        if form.get("client_assertion_type") == ASSERTION_TYPE and form.get("client_assertion"):
            self._check_assertion(app, form["client_assertion"], self.origin + request.url.path)
            return app
        raise _Refusal(7000218, 401)

    def _check_assertion(self, app: AppRegistration, assertion: str, audience: str) -> None:
        """A client assertion (RFC 7523) signed by a registered certificate's key, named by
        its thumbprint (`x5t`, SHA-1, or `x5t#S256`)."""
        keys = {}
        for pem in app.certificates:
            certificate = x509.load_pem_x509_certificate(pem.encode())
            der = certificate.public_bytes(serialization.Encoding.DER)
            public = certificate.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            rsa_key = RSAKey.import_key(public)
            keys[_b64(hashlib.sha1(der).digest())] = rsa_key  # noqa: S324 - x5t is SHA-1
            keys[_b64(hashlib.sha256(der).digest())] = rsa_key
        try:
            encoded = assertion.split(".")[0]
            header = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
            # msal pads its thumbprints ("...=") and writes a float `exp`: both are accepted.
            key = keys.get((header.get("x5t#S256") or header.get("x5t") or "").rstrip("="))
            if key is None:
                raise ValueError("no such certificate")
            claims = jwt.decode(assertion, key, registry=_assertion_registry()).claims
        except (JoseError, ValueError, TypeError, AttributeError):
            raise _Refusal(700027, 401) from None
        if not claims.get("iss") == claims.get("sub") == app.client_id:
            raise _Refusal(700021, 401)
        if claims.get("aud") != audience:
            raise _Refusal(700021, 401)
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or isinstance(exp, bool) or exp < self.clock():
            raise _Refusal(700024, 401)

    def _redeem_code(self, app: AppRegistration, form: Mapping[str, str]) -> dict[str, Any]:
        code = self._codes.get(form.get("code", ""))
        if code is None or code.client_id != app.client_id:
            raise _Refusal(9002313)
        if code.used:
            raise _Refusal(54005)
        if self.clock() > code.issued + self.code_lifetime:
            raise _Refusal(70008)
        code.used = True
        if form.get("redirect_uri") != code.redirect_uri:
            raise _Refusal(
                50011, redirect_uri=form.get("redirect_uri", ""), client_id=app.client_id
            )
        verifier = form.get("code_verifier", "")
        challenge = _b64(hashlib.sha256(verifier.encode()).digest())
        if not verifier or not secrets.compare_digest(challenge, code.challenge):
            raise _Refusal(50148)
        scopes = self._requested(app, form, code.scopes)
        return self._issue(app, code.user, scopes, code.nonce, form)

    def _redeem_refresh(self, app: AppRegistration, form: Mapping[str, str]) -> dict[str, Any]:
        token = self._refresh_tokens.get(form.get("refresh_token", ""))
        if token is None or token.client_id != app.client_id:
            raise _Refusal(9002313)
        email = token.user.email.lower()
        self.refresh_redemptions[email] += 1
        if not token.alive:
            raise _Refusal(50173)
        if self.clock() > token.issued + self.refresh_token_lifetime:
            raise _Refusal(70008)
        if email in self.blocked:
            raise _Refusal(53003)
        if email in self.mfa_required:
            raise _Refusal(50076)
        scopes = self._requested(app, form, token.scopes)
        token.alive = False  # rotation: the old refresh token dies here
        return self._issue(app, token.user, scopes, None, form)

    def _requested(
        self, app: AppRegistration, form: Mapping[str, str], default: tuple[str, ...]
    ) -> list[str]:
        scopes = self._canonical_all(form.get("scope", "").split(), app) or list(default)
        if len({_resource(s) for s in scopes} - {None}) > 1:
            raise _Refusal(28000)
        return scopes

    def _issue(
        self,
        app: AppRegistration,
        user: MicrosoftUser,
        scopes: list[str],
        nonce: str | None,
        form: Mapping[str, str],
    ) -> dict[str, Any]:
        if any(s not in self._granted(app.client_id, user) for s in scopes):
            raise _Refusal(65001, client_id=app.client_id, app=app.name)
        resource = next((r for r in map(_resource, scopes) if r), GRAPH)
        permissions = [s.rpartition("/")[2] for s in scopes if _resource(s)]
        # Graph answers short names, other resources full ones, as Entra does.
        named = [p if resource == GRAPH else f"{resource}/{p}" for p in permissions]
        oidc = [s for s in scopes if s in ("openid", "profile", "email")]
        lifetime = self.access_token_lifetime
        answer: dict[str, Any] = {
            "token_type": "Bearer",
            "scope": " ".join(named + oidc),
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "access_token": self._access_token(app, user, resource, permissions, lifetime),
        }
        if "offline_access" in scopes:
            refresh = secrets.token_urlsafe(64)
            self._refresh_tokens[refresh] = _RefreshToken(
                app.client_id, user, tuple(scopes), self.clock()
            )
            answer["refresh_token"] = refresh
        if "openid" in scopes:
            answer["id_token"] = self.id_token(
                user,
                app.client_id,
                nonce=nonce,
                now=self.clock(),
                extra_claims={"iss": self._issuer(user), "ver": "2.0", "groups": None},
            )
        if form.get("client_info") == "1":
            info = json.dumps({"uid": user.object_id, "utid": user.tenant_id}).encode()
            answer["client_info"] = _b64(info)
        return answer

    def _issuer(self, user: MicrosoftUser) -> str:
        return f"{self.base}/{user.tenant_id}/v2.0"

    def _access_token(
        self,
        app: AppRegistration,
        user: MicrosoftUser,
        resource: str,
        permissions: list[str],
        lifetime: int,
    ) -> str:
        now = int(self.clock())
        claims = {
            "aud": resource,
            "iss": self._issuer(user),
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            "azp": app.client_id,
            "appid": app.client_id,
            "scp": " ".join(permissions),
            "tid": user.tenant_id,
            "oid": user.object_id,
            "sub": user.sub,
            "upn": user.email,
            "name": user.name,
            "ver": "2.0",
            "uti": secrets.token_urlsafe(16),
        }
        return self.sign_payload(json.dumps(claims).encode(), {"typ": "JWT"})

    def _error_json(self, refusal: _Refusal, request: Request) -> JSONResponse:
        correlation = _correlation(request)
        trace = str(uuid.uuid4())
        stamp = _timestamp(self.clock())
        body = {
            "error": refusal.error,
            "error_description": _description(
                refusal.code, refusal.message, trace, correlation, stamp
            ),
            "error_codes": [refusal.code],
            "timestamp": stamp,
            "trace_id": trace,
            "correlation_id": correlation,
            "error_uri": f"{self.base}/error?code={refusal.code}",
        }
        return JSONResponse(body, status_code=refusal.status, headers=_NO_STORE)

    # --- a tiny Graph ------------------------------------------------------------------------

    async def _graph(self, request: Request) -> Response:
        kind = request.path_params["kind"]
        needs = {"events": "Calendars", "contacts": "Contacts"}.get(kind)
        if needs is None:
            return _graph_error(404, "ResourceNotFound", "Resource not found for the segment.")
        claims = self._bearer_claims(request.headers.get("authorization", ""))
        if claims is None:
            return _graph_error(401, "InvalidAuthenticationToken", "Access token is invalid.")
        if not {f"{needs}.Read", f"{needs}.ReadWrite"} & set(str(claims.get("scp")).split()):
            message = "Access is denied. Check credentials and try again."
            return _graph_error(403, "ErrorAccessDenied", message)
        user = next(u for u in self.accounts.values() if u.object_id == claims["oid"])
        items = _demo_events(user) if kind == "events" else _demo_contacts(user)
        context = f"{self.graph_url}/$metadata#users('{user.object_id}')/{kind}"
        return JSONResponse({"@odata.context": context, "value": items})

    def _bearer_claims(self, authorization: str) -> dict[str, Any] | None:
        """The claims of a valid Graph access token of ours, else None."""
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        keys = KeySet([RSAKey.import_key(entry) for entry in self.jwks()["keys"]])
        try:
            claims = jwt.decode(token.strip(), keys, algorithms=["RS256"]).claims
        except (JoseError, ValueError, TypeError, KeyError):
            return None
        exp = claims.get("exp")
        if claims.get("aud") != GRAPH or not isinstance(exp, int) or exp <= self.clock():
            return None
        if not any(u.object_id == claims.get("oid") for u in self.accounts.values()):
            return None
        return claims


# --- helpers -------------------------------------------------------------------------------

_NO_STORE = {"cache-control": "no-store", "pragma": "no-cache"}
_BUTTONS = (
    '<button type="submit" name="decision" value="cancel">Cancel</button> '
    '<button type="submit" name="decision" value="accept">Accept</button>'
)


def _assertion_registry() -> JWSRegistry:
    """msal's client assertions carry `x5t` and, with a public certificate, an `x5c` chain:
    more header than joserfc's default 512 bytes allow."""
    registry = JWSRegistry(algorithms=["RS256", "PS256"], strict_check_header=False)
    registry.max_header_length = 16 * 1024
    return registry


def _resource(scope: str) -> str | None:
    return scope.rpartition("/")[0] if "://" in scope else None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _timestamp(moment: float) -> str:
    return dt.datetime.fromtimestamp(moment, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _description(
    code: int,
    message: str,
    trace: str | None = None,
    correlation: str | None = None,
    stamp: str | None = None,
) -> str:
    """Entra's error_description: the AADSTS number first, then the ids and the time."""
    return (
        f"AADSTS{code}: {message}\r\nTrace ID: {trace or uuid.uuid4()}\r\n"
        f"Correlation ID: {correlation or uuid.uuid4()}\r\n"
        f"Timestamp: {stamp or _timestamp(time.time())}"
    )


def _correlation(request: Request) -> str:
    """Entra echoes the client's `client-request-id` (msal sends one) as correlation id."""
    try:
        return str(uuid.UUID(request.headers.get("client-request-id", "")))
    except ValueError:
        return str(uuid.uuid4())


def _basic_credentials(header: str | None) -> tuple[str | None, str | None]:
    scheme, _, value = (header or "").partition(" ")
    if scheme.lower() != "basic":
        return None, None
    try:
        client_id, _, secret = base64.b64decode(value, validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None, None
    return unquote_plus(client_id), unquote_plus(secret)


def _declined() -> dict[str, str]:
    return {**_Refusal(65004).fields(), "error_subcode": "cancel"}


def _redirect(params: Mapping[str, str], answer: Mapping[str, str]) -> Response:
    """Back to the (already checked) redirect URI, with `state` echoed."""
    fields = {**answer, **({"state": params["state"]} if "state" in params else {})}
    target = params["redirect_uri"]
    if params.get("response_mode") == "form_post":
        return _page(
            "Working...",
            f'<form method="post" action="{html.escape(target)}">{_hidden(fields, fields)}'
            '<button type="submit">Continue</button></form>'
            "<script>document.forms[0].submit()</script>",
        )
    separator = "&" if "?" in target else "?"
    return RedirectResponse(f"{target}{separator}{urlencode(fields)}", status_code=302)


def _hidden(params: Mapping[str, str], names: Iterable[str]) -> str:
    return "".join(
        f'<input type="hidden" name="{html.escape(n)}" value="{html.escape(params[n])}">'
        for n in names
        if params.get(n) is not None
    )


def _form_start(
    request: Request, params: Mapping[str, str], fields: Iterable[str], user: MicrosoftUser
) -> str:
    return (
        f'<form method="post" action="{html.escape(request.url.path)}">'
        f"{_hidden(params, fields)}{_hidden({'user': user.email}, ['user'])}"
    )


def _signed_in(user: MicrosoftUser) -> str:
    return f"<p>Signed in as <strong>{html.escape(user.email)}</strong></p>"


def _permission_list(scopes: Iterable[str]) -> str:
    items = []
    for scope in scopes:
        name = scope.rpartition("/")[2] if "://" in scope else scope
        label = DESCRIPTIONS.get(name, name)
        items.append(f"<li>{html.escape(label)} <small>({html.escape(name)})</small></li>")
    return f'<ul aria-label="Permissions requested">{"".join(items)}</ul>'


async def _form(request: Request) -> dict[str, str] | None:
    """A small urlencoded form (no python-multipart); None when too large or malformed."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None
    try:
        fields = parse_qs(body.decode("utf-8"), max_num_fields=50)
    except (UnicodeDecodeError, ValueError):
        return None
    return {name: values[0] for name, values in fields.items()}


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)} · Microsoft identity platform stand-in</title>"
        "<style>body{font:1rem/1.5 system-ui,sans-serif;max-width:34rem;margin:2rem auto;"
        "padding:0 1rem}ul.accounts{list-style:none;padding:0}button{font:inherit;"
        "padding:.5rem 1rem}</style></head>"
        f"<body><main><h1>{html.escape(title)}</h1>{body}</main></body></html>",
        status_code=status,
        headers={"cache-control": "no-store"},
    )


def _error_page(refusal: _Refusal) -> HTMLResponse:
    """Entra's error page: shown in the browser, never redirected."""
    return _page(
        "Sorry, but we're having trouble signing you in.",
        f'<p role="alert"><code>AADSTS{refusal.code}</code>: {html.escape(refusal.message)}</p>'
        f"<p>Correlation ID: {uuid.uuid4()}</p>",
        400,
    )


def _graph_error(status: int, code: str, message: str) -> JSONResponse:
    headers = {"www-authenticate": 'Bearer error="invalid_token"'} if status == 401 else {}
    body = {"error": {"code": code, "message": message}}
    return JSONResponse(body, status_code=status, headers=headers)


def _demo_events(user: MicrosoftUser) -> list[dict[str, Any]]:
    start = dt.datetime.now(dt.UTC).replace(hour=9, minute=0, second=0, microsecond=0)
    plans = (("Weekly team sync", 0, 30), ("Quarterly planning", 1, 90), ("Customer lunch", 2, 60))
    return [
        {
            "id": hashlib.sha256(f"{user.object_id}{subject}".encode()).hexdigest()[:32],
            "subject": subject,
            "start": {"dateTime": (start + dt.timedelta(days=day)).isoformat(), "timeZone": "UTC"},
            "end": {
                "dateTime": (start + dt.timedelta(days=day, minutes=minutes)).isoformat(),
                "timeZone": "UTC",
            },
            "organizer": {"emailAddress": {"name": user.name, "address": user.email}},
            "location": {"displayName": "Room 1" if day % 2 == 0 else "Online"},
        }
        for subject, day, minutes in plans
    ]


def _demo_contacts(user: MicrosoftUser) -> list[dict[str, Any]]:
    domain = user.email.partition("@")[2]
    people = (("Dana Whitfield", "dana"), ("Eli Moreau", "eli"), ("Farah Haddad", "farah"))
    return [
        {
            "id": hashlib.sha256(f"{user.object_id}{alias}".encode()).hexdigest()[:32],
            "displayName": name,
            "emailAddresses": [{"name": name, "address": f"{alias}@{domain}"}],
            "businessPhones": [f"+1 555 01{i:02d}"],
        }
        for i, (name, alias) in enumerate(people)
    ]

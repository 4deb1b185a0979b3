"""A scripted OpenID provider for the silent leg's attack tests, a code-flow app, and the
proxy config the code-flow tests share.

The provider signs real RS256 id_tokens with the demo provider's keys, checks PKCE and
the client's secret like a real one, and lets a test change what it answers: the next
error, claims to add or replace (a wrong `iss`, `aud`, `nonce`, `tid`...), a different
user, a `state` of its choosing. Every authorization request it receives is recorded.

The app plays one that signs in on the code flow: `/auth/callback?code=USER` signs USER
in with a new `app_session` cookie and redirects to `/home?signed=USER`; `/home` shows
the proxy's user header.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from proxy.demo.microsoft import DEMO_APP_ID, DEMO_APP_SECRET
from proxy.demo.oidc_provider import DemoOpenIdProvider
from proxy.demo.users import DemoUser
from proxy.store.vault import new_key

from .stored import session_settings

CLIENT_ID = "consent-proxy"
CLIENT_SECRET = "the-proxy-client-secret-012345678"
TENANT = "0c0ffee0-0000-4000-8000-00000000abcd"
OTHER_TENANT = "0badbad0-0000-4000-8000-00000000dead"
ALICE_OID = "a11ce000-0000-4000-8000-0000000000a1"
BOB_OID = "b0b00000-0000-4000-8000-0000000000b0"
USERS = {
    u.id: u
    for u in (
        DemoUser("alice", "Alice@Example.com", "Alice", (), TENANT, ALICE_OID),
        DemoUser("bob", "bob@example.com", "Bob", (), TENANT, BOB_OID),
    )
}


@dataclass
class Script:
    """What the provider answers next; `reset` between tests."""

    user: str = "alice"
    error: str | None = None
    claims: dict[str, Any] = field(default_factory=dict)
    state: str | None = None
    access_token: str | None = None
    token_status: int = 200
    requests: list[dict[str, str]] = field(default_factory=list)


class ScriptedProvider:
    def __init__(self, base: str, tenant_issuer: bool = False) -> None:
        self.base = base
        # With a tenant issuer the discovery document names "{tenantid}", as Entra's
        # "organizations" document does, and each token the tenant it is for.
        self.issuer = f"{base}/{{tenantid}}/v2.0" if tenant_issuer else base
        self.keys = DemoOpenIdProvider(base, USERS.values())
        self.script = Script()
        self.codes: dict[str, tuple[dict[str, str], str]] = {}

    def reset(self) -> None:
        self.script = Script()

    def token_issuer(self, tenant: str) -> str:
        return self.issuer.replace("{tenantid}", tenant)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/.well-known/openid-configuration", self._discovery),
                Route("/jwks", self._jwks),
                Route("/authorize", self._authorize),
                Route("/token", self._token, methods=["POST"]),
            ]
        )

    async def _discovery(self, request: Request) -> Response:
        return JSONResponse(
            {
                "issuer": self.issuer,
                "authorization_endpoint": f"{self.base}/authorize",
                "token_endpoint": f"{self.base}/token",
                "jwks_uri": f"{self.base}/jwks",
            }
        )

    async def _jwks(self, request: Request) -> Response:
        return JSONResponse(self.keys.jwks())

    async def _authorize(self, request: Request) -> Response:
        params = dict(request.query_params)
        self.script.requests.append(params)
        state = self.script.state if self.script.state is not None else params.get("state", "")
        if self.script.error is not None:
            answer = {"error": self.script.error, "state": state}
        else:
            code = secrets.token_urlsafe(16)
            self.codes[code] = (params, self.script.user)
            answer = {"code": code, "state": state}
        return RedirectResponse(f"{params['redirect_uri']}?{urlencode(answer)}", 302)

    async def _token(self, request: Request) -> Response:
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        found = self.codes.pop(str(form.get("code")), None)
        if found is None or form.get("client_secret") != CLIENT_SECRET:
            return JSONResponse({"error": "invalid_grant"}, 400)
        params, user_id = found
        verifier = str(form.get("code_verifier", "")).encode()
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier).digest()).rstrip(b"=")
        if challenge.decode() != params.get("code_challenge"):
            return JSONResponse({"error": "invalid_grant", "error_description": "PKCE"}, 400)
        if self.script.token_status != 200:
            return JSONResponse({"error": "server_error"}, self.script.token_status)
        user = USERS[user_id]
        access = secrets.token_urlsafe(24)
        claims = {
            "iss": self.token_issuer(user.tenant_id),
            "at_hash": half_hash(self.script.access_token or access),
            **self.script.claims,
        }
        id_token = self.keys.id_token(
            user, params["client_id"], nonce=params.get("nonce"), extra_claims=claims
        )
        body = {"access_token": access, "token_type": "Bearer", "id_token": id_token}
        return JSONResponse(body)


def half_hash(access_token: str) -> str:
    digest = hashlib.sha256(access_token.encode()).digest()
    return base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode()


class CodeFlowApp:
    """The app: signs in whoever its callback's `code` names; no questions asked."""

    def __init__(self) -> None:
        self.sessions: dict[str, str] = {}

    async def callback(self, request: Request) -> Response:
        user = request.query_params.get("code", "")
        if user not in USERS:
            return PlainTextResponse("sign-in refused", 403)
        value = secrets.token_urlsafe(16)
        self.sessions[value] = user
        response = RedirectResponse(f"/home?signed={user}", 302)
        response.set_cookie("app_session", value, httponly=True, samesite="lax")
        return response

    async def home(self, request: Request) -> Response:
        return JSONResponse(
            {
                "app_user": self.sessions.get(request.cookies.get("app_session", "")),
                "proxy_user": request.headers.get("x-consent-proxy-user"),
                "object_id": request.headers.get("x-consent-proxy-object-id"),
                "integration": request.headers.get("x-consent-proxy-integration"),
            }
        )

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/auth/callback", self.callback), Route("/home", self.home)])


CONSENT_POLICY = """
version: 1
defaults:
  prompt: first_sign_in
  authorization: {type: graph, scopes: [Calendars.Read]}
  user_consent: allowed
"""


def code_flow_config(
    work: Path,
    upstream: str,
    public_url: str,
    endpoint: dict[str, Any],
    consent: tuple[str, Path] | None = None,
) -> dict[str, Any]:
    """A proxy's config for a code-flow app at `/auth/callback` (`endpoint` adds to the
    oidc endpoint); with `consent` (the stand-in's URL and CA), CONSENT_POLICY for all."""
    config: dict[str, Any] = {
        "upstream": {"url": upstream},
        "public_url": public_url,
        "session": session_settings(),
        "store": {"path": str(work / "store.sqlite3")},
        "sso": {"endpoints": [{"type": "oidc", "path": "/auth/callback", **endpoint}]},
    }
    if consent is not None:
        authority, ca_file = consent
        (work / "policy.yaml").write_text(CONSENT_POLICY)
        config["policy"] = str(work / "policy.yaml")
        config["microsoft_apps"] = {
            "default": {
                "client_id": DEMO_APP_ID,
                "client_secret": {"value": DEMO_APP_SECRET},
                "authority_host": authority,
                "ca_file": str(ca_file),
            }
        }
        config["tokens"] = {"encryption_keys": [{"value": new_key()}]}
    return config


def silent(client_id: str, secret: str) -> dict[str, Any]:
    """The `silent:` section of a code-flow endpoint."""
    return {"client_id": client_id, "client_secret": {"value": secret}}

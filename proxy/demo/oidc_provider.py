"""A demo OpenID provider: discovery, JWKS and an `/authorize` that signs users in with a
click, answering with `response_type=id_token` and `response_mode=form_post`.

It exists for `consent-proxy demo` and the tests, and is the base of the Microsoft
identity platform stand-in. It signs real RS256 tokens with real RSA keys and can rotate
them; it never signs with `none` or HMAC. It is not an identity provider anyone should
sign in to: there are no passwords, anyone may pick any demo user.

Every route lives under the issuer's path, as discovery requires
(`{issuer}/.well-known/openid-configuration`).
"""

from __future__ import annotations

import html
import secrets
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

from joserfc import jws, jwt
from joserfc.jwk import RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from proxy.demo.html import page, user_choices
from proxy.demo.users import DEMO_USERS, DemoUser

__all__ = ["DEMO_USERS", "DemoOpenIdProvider", "DemoUser"]

SIGNING_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
MAX_FORM_BYTES = 64 * 1024
# Form fields the authorize page carries from the GET to the POST; checked again there.
REQUEST_FIELDS = ("client_id", "redirect_uri", "response_type", "response_mode", "nonce", "state")


class DemoOpenIdProvider:
    """Signing keys, users and the Starlette app of a demo OpenID provider.

    `jwks_fetches` counts `/jwks` requests; `outage = True` makes discovery and `/jwks`
    answer 503, as an IdP that is down would.
    """

    def __init__(
        self,
        issuer_url: str,
        users: Iterable[DemoUser] = DEMO_USERS,
        allowed_redirects: Iterable[str] = (),
    ) -> None:
        self.issuer = issuer_url.rstrip("/")
        self.users: dict[str, DemoUser] = {user.sub: user for user in users}
        self.allowed_redirects = frozenset(allowed_redirects)
        self.jwks_fetches = 0
        self.discovery_fetches = 0
        self.outage = False
        self._keys: dict[str, RSAKey] = {}
        self.signing_kid = self.rotate_key()

    # --- keys ------------------------------------------------------------------------------

    def rotate_key(self, *, keep_old: bool = True) -> str:
        """Add a new signing key (a new kid) and sign with it from now on.

        The old keys stay published (tokens they signed still verify) unless `keep_old`
        is false; `remove_key` retires one later. Returns the new kid.
        """
        kid = f"demo-{secrets.token_hex(6)}"
        key = RSAKey.generate_key(2048, {"use": "sig", "kid": kid})
        if not keep_old:
            self._keys.clear()
        self._keys[kid] = key
        self.signing_kid = kid
        return kid

    def remove_key(self, kid: str) -> None:
        if kid == self.signing_kid:
            raise ValueError("the current signing key cannot be removed: rotate first")
        del self._keys[kid]

    @property
    def kids(self) -> tuple[str, ...]:
        return tuple(self._keys)

    def jwks(self) -> dict[str, Any]:
        """The public key set, as `/jwks` serves it."""
        return {"keys": [key.as_dict(private=False) for key in self._keys.values()]}

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/authorize",
            "jwks_uri": f"{self.issuer}/jwks",
            "response_types_supported": ["id_token"],
            "response_modes_supported": ["form_post"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": list(SIGNING_ALGORITHMS),
            "scopes_supported": ["openid", "profile", "email"],
            "claims_supported": [
                "sub", "iss", "aud", "exp", "iat", "nbf", "nonce", "jti",
                "email", "name", "preferred_username", "tid", "oid", "groups",
            ],
        }  # fmt: skip

    # --- tokens ----------------------------------------------------------------------------

    def id_token(
        self,
        user: DemoUser,
        audience: str,
        nonce: str | None = None,
        lifetime: float = 3600,
        now: float | None = None,
        alg: str = "RS256",
        kid: str | None = None,
        extra_claims: Mapping[str, Any] | None = None,
    ) -> str:
        """A signed id_token for `user`. `extra_claims` add or replace claims; a value of
        None removes that claim (to make a token without `jti`, say)."""
        if alg not in SIGNING_ALGORITHMS:
            raise ValueError(f"the demo provider signs with {', '.join(SIGNING_ALGORITHMS)}")
        kid = kid or self.signing_kid
        issued = int(time.time() if now is None else now)
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": user.sub,
            "aud": audience,
            "iat": issued,
            "nbf": issued,
            "exp": int(issued + lifetime),
            "jti": str(uuid.uuid4()),
            "email": user.email,
            "preferred_username": user.email,
            "name": user.name,
            "tid": user.tenant_id,
            "oid": user.object_id,
            "groups": list(user.groups),
        }
        if nonce is not None:
            claims["nonce"] = nonce
        for name, value in (extra_claims or {}).items():
            if value is None:
                claims.pop(name, None)
            else:
                claims[name] = value
        header = {"alg": alg, "kid": kid, "typ": "JWT"}
        return jwt.encode(header, claims, self._keys[kid], algorithms=[alg])

    def sign_payload(self, payload: bytes, header: Mapping[str, Any] | None = None) -> str:
        """A compact JWS of any bytes with the current key: for tests of tokens that are
        properly signed yet not proper id_tokens (a payload that is no JSON object...)."""
        protected = {"alg": "RS256", "kid": self.signing_kid, **(header or {})}
        key = self._keys[protected["kid"]]
        return jws.serialize_compact(protected, payload, key, algorithms=[protected["alg"]])

    # --- the web app -----------------------------------------------------------------------

    def app(self) -> Starlette:
        prefix = urlsplit(self.issuer).path.rstrip("/")
        return Starlette(
            routes=[
                Route(f"{prefix}/.well-known/openid-configuration", self._discovery_route),
                Route(f"{prefix}/jwks", self._jwks_route),
                Route(f"{prefix}/authorize", self._authorize_route, methods=["GET", "POST"]),
            ]
        )

    async def _discovery_route(self, request: Request) -> Response:
        self.discovery_fetches += 1
        if self.outage:
            return JSONResponse({"error": "temporarily_unavailable"}, status_code=503)
        return JSONResponse(self.discovery())

    async def _jwks_route(self, request: Request) -> Response:
        self.jwks_fetches += 1
        if self.outage:
            return JSONResponse({"error": "temporarily_unavailable"}, status_code=503)
        return JSONResponse(self.jwks(), headers={"cache-control": "max-age=300"})

    async def _authorize_route(self, request: Request) -> Response:
        if request.method == "GET":
            params = dict(request.query_params)
        else:
            body = await request.body()
            if len(body) > MAX_FORM_BYTES:
                return _page("Request too large", "<p>The form is too large.</p>", 413)
            try:
                fields = parse_qs(body.decode("utf-8", "replace"), max_num_fields=50)
            except ValueError:
                return _page("Request refused", "<p>The form has too many fields.</p>", 400)
            params = {name: values[0] for name, values in fields.items()}
        problem = self._request_problem(params)
        if problem is not None:
            # Never redirect to an unchecked redirect_uri: say what is wrong, right here.
            return _page("Sign-in request refused", f"<p>{html.escape(problem)}</p>", 400)
        if request.method == "GET":
            return self._chooser(params, request.url.path)
        user = self.users.get(params.get("user", ""))
        if user is None:
            return _page("Unknown user", "<p>Choose one of the demo users.</p>", 400)
        token = self.id_token(user, params["client_id"], nonce=params["nonce"])
        return _form_post(params["redirect_uri"], {"id_token": token, "state": params.get("state")})

    def _request_problem(self, params: Mapping[str, str]) -> str | None:
        if params.get("redirect_uri") not in self.allowed_redirects:
            return "redirect_uri is not registered with this provider."
        if not params.get("client_id"):
            return "client_id is required."
        if params.get("response_type") != "id_token":
            return "This provider supports response_type=id_token only."
        if params.get("response_mode") != "form_post":
            return "This provider supports response_mode=form_post only."
        if not params.get("nonce"):
            return "nonce is required with response_type=id_token."
        return None

    def _chooser(self, params: Mapping[str, str], action: str) -> Response:
        hidden = "".join(
            f'<input type="hidden" name="{name}" value="{html.escape(params[name])}">'
            for name in REQUEST_FIELDS
            if name in params
        )
        choices = user_choices(self.users.values())
        body = (
            f"<p>Signing in to <strong>{html.escape(params['client_id'])}</strong>. "
            "This demo provider has no passwords: choose who you are.</p>"
            f'<form method="post" action="{html.escape(action)}">{hidden}'
            f"<fieldset><legend>Demo users</legend><ul>{choices}</ul></fieldset></form>"
        )
        return _page("Choose a demo user", body)


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return page(title, body, status, site="Demo identity provider")


def _form_post(action: str, fields: Mapping[str, str | None]) -> HTMLResponse:
    """OAuth 2.0 Form Post Response Mode: a form the browser submits on load (with a button
    for when scripts are off)."""
    inputs = "".join(
        f'<input type="hidden" name="{name}" value="{html.escape(value)}">'
        for name, value in fields.items()
        if value is not None
    )
    return _page(
        "Signing you in",
        f'<form method="post" action="{html.escape(action)}">{inputs}'
        "<p>Taking you back to the application.</p>"
        '<button type="submit">Continue</button></form>'
        "<script>document.forms[0].submit()</script>",
    )

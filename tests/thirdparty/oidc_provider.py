"""An OpenID provider that is not ours: authlib's server-side authorization-code grant
with its OpenID Connect (nonce, id_token, prompt=none) and PKCE extensions, on Flask.

The protocol is authlib's; this module only supplies storage (in memory), two users, a
sign-in page (a button per user, the IdP's session in Flask's signed cookie; or "this
once", which keeps no session past the request it signs in for: then a `prompt=none`
request that follows finds none) and a sign-out page.

Run as its own process (`python -m tests.thirdparty.oidc_provider ISSUER CERT KEY CLIENTS`)
over HTTPS with werkzeug's server; CLIENTS is a JSON list of
`{"client_id", "client_secret", "redirect_uris"}`.
"""

from __future__ import annotations

import json
import secrets
import sys
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import ClientMixin, grants
from authlib.oauth2.rfc6749.errors import OAuth2Error
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core import UserInfo
from authlib.oidc.core.grants import OpenIDCode
from flask import Flask, Response, redirect, request, session
from joserfc.jwk import RSAKey
from markupsafe import escape
from werkzeug.serving import make_server

USERS = {
    "alice": {"email": "alice@contoso.example", "name": "Alice Johnson"},
    "bob": {"email": "bob@fabrikam.example", "name": "Bob Smith"},
}
KEY = RSAKey.generate_key(2048, parameters={"kid": "op-key-1", "use": "sig", "alg": "RS256"})


@dataclass
class Client(ClientMixin):  # type: ignore[misc]
    client_id: str
    client_secret: str
    redirect_uris: list[str]

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str:
        return self.redirect_uris[0]

    def get_allowed_scope(self, scope: str) -> str:
        return " ".join(s for s in scope.split() if s in ("openid", "email", "profile"))

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        return secrets.compare_digest(client_secret, self.client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method in ("client_secret_basic", "client_secret_post")

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "authorization_code"


@dataclass
class Code:
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    user: str
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    auth_time: int = field(default_factory=lambda: int(time.time()))

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return self.auth_time

    def get_acr(self) -> None:
        return None

    def get_amr(self) -> None:
        return None


class Provider:
    def __init__(self, issuer: str, clients: list[dict[str, Any]]) -> None:
        self.issuer = issuer
        self.clients = {c["client_id"]: Client(**c) for c in clients}
        self.codes: dict[str, Code] = {}
        self.app = Flask(__name__)
        self.app.secret_key = secrets.token_hex(32)
        self.app.config["SESSION_COOKIE_SECURE"] = True
        self.server = AuthorizationServer(
            self.app, query_client=self.clients.get, save_token=lambda token, req: None
        )
        self.server.register_grant(
            self._code_grant(), [self._openid(require_nonce=True), CodeChallenge(required=True)]
        )
        self._routes()

    def _code_grant(self) -> type[grants.AuthorizationCodeGrant]:
        codes = self.codes

        class CodeGrant(grants.AuthorizationCodeGrant):  # type: ignore[misc]
            TOKEN_ENDPOINT_AUTH_METHODS = ("client_secret_basic", "client_secret_post")

            def save_authorization_code(self, code: str, req: Any) -> None:
                data = req.payload.data
                codes[code] = Code(
                    code,
                    req.client.client_id,
                    req.payload.redirect_uri,
                    req.payload.scope,
                    req.user,
                    data.get("nonce"),
                    data.get("code_challenge"),
                    data.get("code_challenge_method"),
                )

            def query_authorization_code(self, code: str, client: Client) -> Code | None:
                found = codes.get(code)
                return found if found is not None and found.client_id == client.client_id else None

            def delete_authorization_code(self, code: Code) -> None:
                codes.pop(code.code, None)

            def authenticate_user(self, code: Code) -> str:
                return code.user

        return CodeGrant

    def _openid(self, require_nonce: bool) -> OpenIDCode:
        issuer, codes = self.issuer, self.codes

        class Extension(OpenIDCode):  # type: ignore[misc]
            def exists_nonce(self, nonce: str, req: Any) -> bool:
                return any(c.nonce == nonce for c in codes.values())

            def resolve_client_private_key(self, client: Client) -> RSAKey:
                return KEY

            def get_client_claims(self, client: Client) -> dict[str, Any]:
                return {"iss": issuer, "aud": [client.client_id]}

            def get_encode_header(self, client: Client) -> dict[str, str]:
                return {"alg": "RS256", "kid": "op-key-1"}

            def generate_user_info(self, user: str, scope: str) -> UserInfo:
                return UserInfo(sub=user, **USERS[user])

        return Extension(require_nonce=require_nonce)

    def _routes(self) -> None:
        app, server = self.app, self.server

        @app.get("/.well-known/openid-configuration")
        def discovery() -> Any:
            return {
                "issuer": self.issuer,
                "authorization_endpoint": f"{self.issuer}/authorize",
                "token_endpoint": f"{self.issuer}/token",
                "jwks_uri": f"{self.issuer}/jwks",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "code_challenge_methods_supported": ["S256"],
            }

        @app.get("/jwks")
        def jwks() -> Any:
            return {"keys": [KEY.as_dict(private=False)]}

        @app.route("/authorize", methods=["GET"])
        def authorize() -> Any:
            user = session.get("user")
            try:
                grant = server.get_consent_grant(end_user=user)
            except OAuth2Error as error:
                return server.handle_error_response(request, error)
            if user is None:
                return sign_in_page(request.full_path)
            if session.get("once"):  # signed in for this one request: no session kept
                session.clear()
            return server.create_authorization_response(grant=grant, grant_user=user)

        @app.post("/login")
        def login() -> Any:
            user, back = request.form.get("user", ""), request.form.get("next", "/")
            if user not in USERS or not back.startswith("/authorize?"):
                return Response("no such user", status=400)
            session["user"] = user
            session["once"] = request.form.get("keep") == "no"
            return redirect(back, code=303)

        @app.get("/logout")
        def logout() -> Any:
            session.clear()
            return page("Signed out", "<p>You are signed out of the identity provider.</p>")

        @app.post("/token")
        def token() -> Any:
            return server.create_token_response()


def sign_in_page(back: str) -> Response:
    buttons = "".join(
        f'<form method="post" action="/login"><input type="hidden" name="next" '
        f'value="{escape(back)}"><input type="hidden" name="keep" value="{keep}">'
        f'<button name="user" value="{name}" id="{name}-{keep}">Sign in as {name}{label}'
        "</button></form>"
        for name in USERS
        for keep, label in (("yes", ""), ("no", " (this once, stay signed out)"))
    )
    return page("Sign in to the identity provider", buttons)


def page(title: str, body: str) -> Response:
    return Response(
        f"<!doctype html><title>{title}</title><h1>{title}</h1>{body}",
        content_type="text/html; charset=utf-8",
    )


def main(argv: list[str]) -> None:
    issuer, certfile, keyfile, clients = argv
    port = urlsplit(issuer).port or 443
    provider = Provider(issuer, json.loads(clients))
    server = make_server(
        "127.0.0.1", port, provider.app, threaded=True, ssl_context=(certfile, keyfile)
    )
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])

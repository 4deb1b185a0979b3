"""An upstream app whose SSO is a maintained third-party OpenID client on the
authorization-code flow: authlib's Starlette integration (httpx underneath), PKCE, state
and nonce in Starlette's session cookie, the code redeemed over the back channel. The
browser brings this app only `?code&state`: the proxy never sees an id_token here.

Pages: `/login` (off to the IdP), `/auth/callback` (the code flow's redirect URI: signs
the user in with the `app_session` cookie and redirects to `/home`), `/home` (who is
signed in, and what the proxy told the app in its headers), `/logout`.

Run as its own process: `python -m tests.thirdparty.oidc_app PORT ISSUER CA_FILE
CLIENT_ID CLIENT_SECRET PUBLIC_URL`.
"""

from __future__ import annotations

import html
import json
import secrets
import ssl
import sys
import warnings
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

with warnings.catch_warnings():  # authlib prefers httpx2 to httpx and says so
    warnings.simplefilter("ignore", DeprecationWarning)
    from authlib.integrations.starlette_client import OAuth

COOKIE = "app_session"
PROXY_HEADERS = (
    "x-consent-proxy-user",
    "x-consent-proxy-integration",
    "x-consent-proxy-access-token",
)


def make_app(issuer: str, ca_file: str, client_id: str, secret: str, public_url: str) -> Starlette:
    oauth = OAuth()
    oauth.register(
        "idp",
        client_id=client_id,
        client_secret=secret,
        server_metadata_url=f"{issuer}/.well-known/openid-configuration",
        client_kwargs={
            "scope": "openid email profile",
            "code_challenge_method": "S256",
            "verify": ssl.create_default_context(cafile=ca_file),
        },
    )
    sessions: dict[str, dict[str, Any]] = {}

    async def login(request: Request) -> Response:
        redirect: Response = await oauth.idp.authorize_redirect(
            request, f"{public_url}/auth/callback"
        )
        return redirect

    async def callback(request: Request) -> Response:
        token = await oauth.idp.authorize_access_token(request)
        user = dict(token["userinfo"])
        value = secrets.token_urlsafe(24)
        sessions[value] = user
        response = RedirectResponse("/home?from=sign-in", status_code=302)
        response.set_cookie(COOKIE, value, httponly=True, samesite="lax")
        return response

    async def home(request: Request) -> Response:
        user = sessions.get(request.cookies.get(COOKIE, ""))
        if user is None:
            return HTMLResponse('<h1>Not signed in</h1><a href="/login">Sign in</a>')
        told = {h: request.headers.get(h) for h in PROXY_HEADERS}
        return HTMLResponse(
            f"<h1>Hello {html.escape(user['email'])}</h1>"
            f'<pre id="proxy">{html.escape(json.dumps(told))}</pre>'
        )

    async def logout(request: Request) -> Response:
        sessions.pop(request.cookies.get(COOKIE, ""), None)
        response = RedirectResponse("/home", status_code=302)
        response.delete_cookie(COOKIE)
        return response

    return Starlette(
        routes=[
            Route("/login", login),
            Route("/auth/callback", callback),
            Route("/home", home),
            Route("/logout", logout),
        ],
        middleware=[
            Middleware(SessionMiddleware, secret_key=secrets.token_hex(32), session_cookie="oidc")
        ],
    )


def main(argv: list[str]) -> None:
    port, issuer, ca_file, client_id, secret, public_url = argv
    app = make_app(issuer, ca_file, client_id, secret, public_url)
    uvicorn.run(app, host="127.0.0.1", port=int(port), log_level="warning")


if __name__ == "__main__":
    main(sys.argv[1:])

"""An upstream app with SSO endpoints, for the sign-in tests.

It plays the app behind the proxy: it accepts (or, with `?reject=1`, refuses) whatever
arrives at its SSO endpoints and issues its own `app_session` cookie (or, with `?keep=1`,
keeps the one the browser has, as apps that do not rotate it at login), so the tests can
show that the proxy's decisions do not depend on the app being careful. It records the
exact bytes of every body it receives, keyed by path.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

COOKIE = "app_session"


class SsoApp:
    def __init__(self) -> None:
        self.sessions: dict[str, dict[str, Any]] = {}
        self.bodies: dict[str, list[str]] = {}
        self.seen_headers: list[dict[str, str]] = []

    def _signed_in(self, request: Request, user: dict[str, Any], location: str = "/") -> Response:
        if request.query_params.get("reject"):
            return Response("sign-in refused by the app", status_code=403)
        kept = request.cookies.get(COOKIE, "")
        if request.query_params.get("keep") and kept in self.sessions:
            # Like many apps, sign the new user into the session it has: no new cookie.
            self.sessions[kept] = user
            return RedirectResponse(location, status_code=303)
        session_id = secrets.token_urlsafe(16)
        self.sessions[session_id] = user
        response = RedirectResponse(location, status_code=303)
        response.set_cookie(COOKIE, session_id, httponly=True, samesite="lax")
        return response

    async def _record(self, request: Request) -> bytes:
        body = await request.body()
        self.bodies.setdefault(request.url.path, []).append(hashlib.sha256(body).hexdigest())
        return body

    async def acs(self, request: Request) -> Response:
        await self._record(request)
        location = request.query_params.get("to", "/home")  # where the app sends the user next
        return self._signed_in(request, {"email": "from-saml@contoso.example"}, location)

    async def oidc_callback(self, request: Request) -> Response:
        await self._record(request)
        return self._signed_in(request, {"email": "from-oidc@contoso.example"}, "/home")

    async def password_login(self, request: Request) -> Response:
        await self._record(request)
        user = request.query_params.get("user", "")
        response = self._signed_in(
            request,
            {"email": user, "name": user.split("@")[0].title(), "groups": ["Sales", "Everyone"]},
        )
        if response.status_code == 303 and not request.query_params.get("no_header"):
            response.headers["X-Authenticated-User"] = request.query_params.get("assert", user)
        return response

    async def me(self, request: Request) -> Response:
        user = self.sessions.get(request.cookies.get(COOKIE, ""))
        if user is None:
            return JSONResponse({"error": "not signed in"}, status_code=401)
        return JSONResponse({"user": user})

    async def logout(self, request: Request) -> Response:
        self.sessions.pop(request.cookies.get(COOKIE, ""), None)
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(COOKIE)
        return response

    async def rotate(self, request: Request) -> Response:
        """The app replaces its session cookie (as some do on privilege changes)."""
        response = JSONResponse({"rotated": True})
        response.set_cookie(COOKIE, secrets.token_urlsafe(16))
        return response

    async def echo(self, request: Request) -> Response:
        self.seen_headers.append(dict(request.headers))
        return JSONResponse({"headers": dict(request.headers), "cookies": dict(request.cookies)})

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/saml/acs", self.acs, methods=["POST"]),
                Route("/oidc/callback", self.oidc_callback, methods=["POST"]),
                Route("/login/password", self.password_login, methods=["GET", "POST"]),
                Route("/api/me", self.me),
                Route("/logout", self.logout),
                Route("/rotate", self.rotate),
                Route("/{rest:path}", self.echo, methods=["GET", "POST"]),
            ]
        )

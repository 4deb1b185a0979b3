"""An app whose sign-in is pysaml2's `Saml2Client`: a service provider that sends an
AuthnRequest (HTTP-Redirect), checks the signed Response at its ACS with xmlsec1, keeps
its own session cookie and redirects home, where it shows who signed in, the Office 365
state the proxy tells it, and the user's meetings read from (the stand-in of) Microsoft
Graph with the access token the proxy adds to each request.

It runs behind the proxy: its public URLs are the proxy's."""

from __future__ import annotations

import html
import secrets
import ssl
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from .pysaml import (
    BINDING_HTTP_POST,
    BINDING_HTTP_REDIRECT,
    Saml2Client,
    SPConfig,
    common,
    form_fields,
    write_metadata,
)

ENTITY = "https://sp.thirdparty.example/saml/metadata"
COOKIE = "sp_session"
TOKEN = "x-consent-proxy-access-token"
INTEGRATION = "x-consent-proxy-integration"


class PySamlSp:
    def __init__(self, public_url: str, folder: Path, graph_url: str, ca_file: Path) -> None:
        self.public_url = public_url
        self.folder = folder
        self.graph_url = graph_url
        self.tls = ssl.create_default_context(cafile=str(ca_file))
        self.sessions: dict[str, dict[str, Any]] = {}
        self.outstanding: dict[str, str] = {}  # AuthnRequest id -> where the user was going
        self.client: Saml2Client | None = None

    def config(self, idp_metadata: Path | None) -> SPConfig:
        acs = f"{self.public_url}/saml/acs"
        settings = common(ENTITY, idp_metadata) | {
            "service": {
                "sp": {
                    "endpoints": {"assertion_consumer_service": [(acs, BINDING_HTTP_POST)]},
                    "allow_unsolicited": False,
                    "authn_requests_signed": False,
                    "want_assertions_signed": True,
                    "want_response_signed": True,
                }
            },
        }
        config = SPConfig()
        config.load(settings)
        return config

    def metadata(self) -> Path:
        return write_metadata(self.config(None), self.folder / "sp-metadata.xml")

    def trust(self, idp_metadata: Path) -> None:
        self.client = Saml2Client(config=self.config(idp_metadata))

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/", self.home),
                Route("/login", self.login),
                Route("/saml/acs", self.acs, methods=["POST"]),
            ]
        )

    async def login(self, request: Request) -> Response:
        assert self.client is not None
        request_id, info = self.client.prepare_for_authenticate(
            relay_state="/", binding=BINDING_HTTP_REDIRECT
        )
        self.outstanding[request_id] = "/"
        location = dict(info["headers"])["Location"]
        return RedirectResponse(location, status_code=303)

    async def acs(self, request: Request) -> Response:
        assert self.client is not None
        form = await form_fields(request)
        answer = self.client.parse_authn_request_response(
            form.get("SAMLResponse", ""), BINDING_HTTP_POST, outstanding=self.outstanding
        )
        if answer is None:
            return HTMLResponse("sign-in refused", status_code=403)
        self.outstanding.pop(answer.in_response_to, None)
        identity = answer.get_identity()
        session_id = secrets.token_urlsafe(16)
        self.sessions[session_id] = {"email": identity["mail"][0], "name_id": answer.name_id.text}
        response = RedirectResponse(form.get("RelayState") or "/", status_code=303)
        response.set_cookie(COOKIE, session_id, httponly=True, samesite="lax")
        return response

    async def home(self, request: Request) -> Response:
        user = self.sessions.get(request.cookies.get(COOKIE, ""))
        if user is None:
            return _page('<p><a id="sign-in" href="/login">Sign in with SSO</a></p>')
        state = html.escape(request.headers.get(INTEGRATION, "none"))
        parts = [
            f'<p>Signed in as <span id="user">{html.escape(user["email"])}</span>.</p>',
            f'<p>Office 365: <strong id="integration">{state}</strong></p>',
        ]
        token = request.headers.get(TOKEN)
        if token:
            subjects = await self._meetings(token)
            items = "".join(f"<li>{html.escape(s)}</li>" for s in subjects)
            parts.append(f'<ul id="events">{items}</ul>')
        return _page("".join(parts))

    async def _meetings(self, token: str) -> list[str]:
        async with httpx.AsyncClient(verify=self.tls, timeout=5, trust_env=False) as client:
            response = await client.get(
                f"{self.graph_url}/me/events", headers={"authorization": f"Bearer {token}"}
            )
        if response.status_code != 200:
            return [f"Graph answered {response.status_code}"]
        return [str(item.get("subject")) for item in response.json().get("value", [])]


def _page(body: str) -> HTMLResponse:
    return HTMLResponse(f"<!doctype html><html><body><h1>pysaml2 app</h1>{body}</body></html>")


__all__ = ["COOKIE", "ENTITY", "PySamlSp"]

"""The demo app behind the proxy: a SAML service provider that, once the proxy forwards an
Office 365 access token, shows the user's next meetings and contacts from (the stand-in
of) Microsoft Graph. It is what an app team would write: it trusts the proxy's headers
only because the proxy strips every inbound copy of them.
"""

from __future__ import annotations

import html
import secrets
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from proxy.config import SamlEndpoint
from proxy.demo.html import page
from proxy.identity.sso import SignInRejected
from proxy.identity.sso.saml import SamlVerifier

COOKIE = "demo_session"
MAX_FORM_BYTES = 256 * 1024
TOKEN = "x-consent-proxy-access-token"  # noqa: S105 - a header name
INTEGRATION = "x-consent-proxy-integration"
ROUTE = "x-consent-proxy-token-route"
EWS_URL = "x-consent-proxy-ews-url"
STATUS_TEXT = {
    "connected": "connected",
    "none": "not connected",
    "declined": "not connected (you declined)",
    "failed": "not connected (the last attempt failed)",
    "admin_approval_required": "waiting for an administrator's approval",
    "reconsent_required": "needs to be connected again",
}


@dataclass(frozen=True, slots=True)
class DemoAppSettings:
    public_url: str  # where browsers reach the app (through the proxy)
    idp_sso_url: str  # the IdP's SP-initiated sign-in page
    audience: str  # this app's SAML entity id
    idp_certificate: Path
    graph_url: str  # e.g. https://127.0.0.1:PORT/organizations/graph/v1.0 (the stand-in)
    ca_file: Path | None = None


class DemoApp:
    def __init__(self, settings: DemoAppSettings) -> None:
        self.settings = settings
        endpoint = SamlEndpoint(
            type="saml",
            path="/saml/acs",
            idp_certificates=(settings.idp_certificate,),
            audience=settings.audience,
            email_attribute="http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress",
            name_attribute="http://schemas.microsoft.com/identity/claims/displayname",
        )
        self.verifier = SamlVerifier(endpoint, clock_skew=120)
        self.sessions: dict[str, dict[str, str]] = {}
        verify: ssl.SSLContext | bool = True
        if settings.ca_file is not None:
            verify = ssl.create_default_context(cafile=str(settings.ca_file))
        self._verify = verify

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/", self.home),
                Route("/login", self.login),
                Route("/saml/acs", self.acs, methods=["POST"]),
                Route("/logout", self.logout),
                Route("/api/me", self.me),
            ]
        )

    def _user(self, request: Request) -> dict[str, str] | None:
        return self.sessions.get(request.cookies.get(COOKIE, ""))

    async def login(self, request: Request) -> Response:
        query = urlencode(
            {
                "acs": f"{self.settings.public_url}/saml/acs",
                "audience": self.settings.audience,
                "RelayState": "/",
            }
        )
        return RedirectResponse(f"{self.settings.idp_sso_url}?{query}", status_code=303)

    async def acs(self, request: Request) -> Response:
        body = await request.body()
        form = parse_qs(body[:MAX_FORM_BYTES].decode("latin-1"), max_num_fields=10)
        try:
            sign_in = self.verifier.verify((form.get("SAMLResponse") or [""])[0])
        except SignInRejected as exc:
            return _page("Sign-in refused", f"<p>{html.escape(exc.description)}</p>", 403)
        session_id = secrets.token_urlsafe(24)
        self.sessions[session_id] = {
            "email": sign_in.email or sign_in.subject,
            "name": sign_in.name or sign_in.subject,
        }
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(COOKIE, session_id, httponly=True, samesite="lax")
        return response

    async def logout(self, request: Request) -> Response:
        self.sessions.pop(request.cookies.get(COOKIE, ""), None)
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(COOKIE)
        return response

    async def me(self, request: Request) -> Response:
        user = self._user(request)
        if user is None:
            return JSONResponse({"error": "not signed in"}, status_code=401)
        return JSONResponse(user)

    async def home(self, request: Request) -> Response:
        user = self._user(request)
        if user is None:
            body = (
                "<p>This demo app signs you in with SAML. consent-proxy sits in front of it and "
                "offers to connect your Office 365 calendar and contacts.</p>"
                '<p><a class="button" href="/login">Sign in with SSO</a></p>'
            )
            return _page("Demo app", body)
        status = request.headers.get(INTEGRATION, "none")
        parts = [
            f"<p>Signed in as <strong>{html.escape(user['name'])}</strong> "
            f'({html.escape(user["email"])}). <a href="/logout">Sign out</a></p>',
            '<p>Office 365: <strong id="integration">'
            f"{html.escape(STATUS_TEXT.get(status, status))}</strong> · "
            '<a href="/.consent-proxy/">manage the connection</a></p>',
        ]
        token = request.headers.get(TOKEN)
        if token and request.headers.get(ROUTE) == "ews":
            ews = html.escape(request.headers.get(EWS_URL, ""))
            parts.append(
                f"<p>Connected through Exchange Web Services at <code>{ews}</code> "
                "(hybrid Exchange): this demo has no on-premises server to call.</p>"
            )
        elif token:
            parts.append(await self._office(token))
        return _page("Demo app", "".join(parts))

    async def _office(self, token: str) -> str:
        events = await self._graph("events", token)
        contacts = await self._graph("contacts", token)
        out = ["<h2>Your next meetings</h2>"]
        if isinstance(events, str):
            out.append(f"<p>{html.escape(events)}</p>")
        else:
            out.append('<ul id="events">')
            for event in events[:5]:
                when = str(event.get("start", {}).get("dateTime", ""))[:16].replace("T", " ")
                out.append(
                    f"<li>{html.escape(when)} — {html.escape(str(event.get('subject')))}</li>"
                )
            out.append("</ul>")
        out.append("<h2>Contacts</h2>")
        if isinstance(contacts, str):
            out.append(f"<p>{html.escape(contacts)}</p>")
        else:
            out.append('<ul id="contacts">')
            for contact in contacts[:8]:
                addresses = contact.get("emailAddresses") or [{}]
                address = str(addresses[0].get("address", ""))
                name = html.escape(str(contact.get("displayName")))
                out.append(f"<li>{name} &lt;{html.escape(address)}&gt;</li>")
            out.append("</ul>")
        return "".join(out)

    async def _graph(self, kind: str, token: str) -> list[dict[str, Any]] | str:
        url = f"{self.settings.graph_url}/me/{kind}"
        try:
            async with httpx.AsyncClient(verify=self._verify, timeout=5, trust_env=False) as client:
                response = await client.get(url, headers={"authorization": f"Bearer {token}"})
        except httpx.HTTPError as exc:
            return f"Microsoft Graph could not be reached ({type(exc).__name__})."
        if response.status_code != 200:
            return f"Microsoft Graph answered {response.status_code}."
        items = response.json().get("value", [])
        return [i for i in items if isinstance(i, dict)]


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    style = (
        ".button{display:inline-block;padding:.5rem 1rem;background:#0f5bd8;color:#fff;"
        "border-radius:6px;text-decoration:none}"
    )
    return page(title, body, status, style=style, no_store=False)

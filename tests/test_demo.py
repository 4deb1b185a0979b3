"""`consent-proxy demo`: a newcomer's three journeys, clicked through over HTTP against the
real demo process (demo app, demo IdP, Microsoft stand-in over HTTPS, proxy)."""

from __future__ import annotations

import ssl
from pathlib import Path
from urllib.parse import urljoin

import httpx

from .fixtures.pages import form


def follow(http: httpx.Client, response: httpx.Response) -> httpx.Response:
    while response.status_code in (302, 303):
        response = http.get(urljoin(str(response.url), response.headers["location"]))
    return response


def sign_in(http: httpx.Client, base: str, email: str) -> httpx.Response:
    """From the app's start page to wherever the sign-in leads (the app, or Microsoft)."""
    idp_page = follow(http, http.get(f"{base}/login"))
    assert "Choose" in idp_page.text or email in idp_page.text
    action, data = form(idp_page, user=email.split("@")[0])
    autopost = http.post(action, data=data)
    action, data = form(autopost)
    return http.post(action, data=data)


def microsoft(http: httpx.Client, response: httpx.Response, decision: str) -> httpx.Response:
    page = http.get(response.headers["location"])
    while page.status_code == 200:
        action, data = form(page, decision=decision)
        page = http.post(action, data=data)
    return follow(http, page)


def browser(folder: Path) -> httpx.Client:
    return httpx.Client(verify=ssl.create_default_context(cafile=folder / "ca.pem"), timeout=20)


def test_alice_consents_and_sees_meetings_and_contacts(demo: tuple[str, Path]) -> None:
    base, folder = demo
    with browser(folder) as http:
        assert "Sign in with SSO" in http.get(base + "/").text
        signed_in = sign_in(http, base, "alice@contoso.example")
        assert (
            signed_in.status_code == 303
            and "oauth2/v2.0/authorize" in signed_in.headers["location"]
        )
        home = microsoft(http, signed_in, "accept")
        assert "Alice Johnson" in home.text
        assert '<strong id="integration">connected</strong>' in home.text
        assert '<ul id="events">' in home.text and "<li>" in home.text
        assert '<ul id="contacts">' in home.text


def test_bob_needs_an_admin(demo: tuple[str, Path]) -> None:
    base, folder = demo
    with browser(folder) as http:
        signed_in = sign_in(http, base, "bob@fabrikam.example")
        page = microsoft(http, signed_in, "back")
        assert "An administrator needs to approve this app" in page.text
        home = follow(http, http.get(base + "/"))
        assert "waiting for an administrator" in home.text


def test_carol_connects_through_ews(demo: tuple[str, Path]) -> None:
    base, folder = demo
    with browser(folder) as http:
        signed_in = sign_in(http, base, "carol@hybrid.example")
        assert "EWS.AccessAsUser.All" in signed_in.headers["location"]
        home = microsoft(http, signed_in, "accept")
        assert "Exchange Web Services" in home.text
        assert "https://mail.hybrid.example/EWS/Exchange.asmx" in home.text

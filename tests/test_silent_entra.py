"""Entra ID as the app's SSO IdP, against the Microsoft stand-in: a multi-tenant issuer
(`{tenantid}` in it, the `organizations` discovery document), tokens matched against
their own `tid`, `tid`/`oid` taken as the tenant and object id, and the stand-in's
sign-in session answering the proxy's `prompt=none` request without a page."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urljoin

import httpx
import pytest

from proxy.demo.microsoft import DEMO_APP_ID, DEMO_APP_SECRET, MicrosoftStandIn, demo_app
from proxy.demo.users import CONTOSO_TENANT_ID, DEMO_USERS

from .scripted_idp import CodeFlowApp, code_flow_config, silent
from .servers import ProxyProcess, ThreadServer, free_port, running
from .tls import client_context, https_server, https_url

CALLBACK = "/.consent-proxy-sso/callback"
CONSENT_CALLBACK = "/.consent-proxy/callback"
ALICE = next(u for u in DEMO_USERS if u.id == "alice")  # contoso
BOB = next(u for u in DEMO_USERS if u.id == "bob")  # fabrikam: not one of our tenants
OIDC = ["openid", "profile", "email"]


@dataclass
class Entra:
    proxy: ProxyProcess
    standin: MicrosoftStandIn
    url: str
    ca_file: Path

    def browser(self) -> httpx.Client:
        return httpx.Client(verify=client_context(self.ca_file), timeout=15)

    def signed_in_at_microsoft(self, browser: httpx.Client, email: str) -> None:
        """The browser signs in at the stand-in once (the app's own Entra sign-in)."""
        query = {
            "client_id": DEMO_APP_ID, "response_type": "code", "scope": " ".join(OIDC),
            "redirect_uri": self.proxy.url + CALLBACK, "login_hint": email,
            "code_challenge": "x" * 43, "code_challenge_method": "S256",
        }  # fmt: skip
        page = browser.get(f"{self.url}/organizations/oauth2/v2.0/authorize?{urlencode(query)}")
        assert "standin_session" in page.headers.get("set-cookie", "")


@pytest.fixture(scope="module")
def entra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Entra]:
    work = tmp_path_factory.mktemp("entra")
    proxy = ProxyProcess({}, work)
    port = free_port()
    # One Entra registration for the app's SSO, the proxy's silent check and consent.
    standin = MicrosoftStandIn(
        f"https://127.0.0.1:{port}",
        apps=[demo_app(proxy.url + CALLBACK, proxy.url + CONSENT_CALLBACK)],
    )
    server, ca_file = https_server(standin.app(), work, port=port)
    url = https_url(server)
    endpoint = {
        "issuer": f"{url}/{{tenantid}}/v2.0",
        "discovery_url": f"{url}/organizations/v2.0/.well-known/openid-configuration",
        "ca_file": str(ca_file),
        "tenants": [CONTOSO_TENANT_ID],
        "silent": silent(DEMO_APP_ID, DEMO_APP_SECRET),
    }
    with running(ThreadServer(CodeFlowApp().app())) as upstream, running(server):
        config = code_flow_config(work, upstream.url, proxy.url, endpoint, (url, ca_file))
        proxy.config_path.write_text(json.dumps(config))
        with running(proxy):
            yield Entra(proxy, standin, url, ca_file)


@pytest.fixture
def fresh(entra: Entra) -> Entra:
    entra.standin.reset()
    for user in (ALICE, BOB):
        entra.standin.grant_user_consent(DEMO_APP_ID, user.email, OIDC)
    return entra


def through_proxy(entra: Entra, browser: httpx.Client, consent: bool = False) -> dict[str, Any]:
    """The app's code-flow callback, the silent hop, and what the app then sees; with
    `consent`, the consent page the silent answer leads to is accepted on the way."""
    first = browser.get(f"{entra.proxy.url}/auth/callback?code=alice")
    assert first.status_code == 303
    silent = first.headers["location"]
    assert silent.startswith(f"{entra.url}/organizations/oauth2/v2.0/authorize?")
    answer = browser.get(silent)
    assert answer.status_code == 302  # never a page
    back = browser.get(answer.headers["location"])
    assert back.status_code == 303
    if consent:  # straight on to Microsoft's consent page, on the same registration
        location = back.headers["location"]
        assert location.startswith(f"{entra.url}/organizations/oauth2/v2.0/authorize?")
        assert f"client_id={DEMO_APP_ID}" in location and "Calendars.Read" in location
        page = browser.get(location)
        assert "Permissions requested" in page.text
        fields = dict(re.findall(r'name="([^"]+)" value="([^"]*)"', page.text))
        fields = {k: html.unescape(v) for k, v in fields.items()} | {"decision": "accept"}
        action = html.unescape(re.search(r'<form method="post" action="([^"]+)"', page.text)[1])
        done = browser.post(urljoin(location, action), data=fields)
        back = browser.get(done.headers["location"])  # the proxy's consent callback
    assert back.headers["location"] == "/home?signed=alice"
    return dict(browser.get(f"{entra.proxy.url}/home").json())


def test_entra_session_answers_silently_with_tid_and_oid(fresh: Entra) -> None:
    with fresh.browser() as browser:
        fresh.signed_in_at_microsoft(browser, ALICE.email)
        seen = through_proxy(fresh, browser, consent=True)
    assert seen["proxy_user"] == ALICE.email
    assert seen["object_id"] == ALICE.object_id
    assert seen["integration"] == "connected"


def test_no_entra_session_is_login_required_and_fails_open(fresh: Entra) -> None:
    with fresh.browser() as browser:
        seen = through_proxy(fresh, browser)
    assert seen == {"app_user": "alice", "proxy_user": None, "object_id": None, "integration": None}
    assert "the IdP answered 'login_required'" in fresh.proxy.logs()


def test_a_tenant_not_listed_is_refused(fresh: Entra) -> None:
    with fresh.browser() as browser:
        fresh.signed_in_at_microsoft(browser, BOB.email)
        seen = through_proxy(fresh, browser)
    assert seen["proxy_user"] is None
    assert "is not one of the endpoint's tenants" in fresh.proxy.logs()


def test_no_consent_for_the_proxy_is_consent_required(fresh: Entra) -> None:
    fresh.standin.revoke_consent(DEMO_APP_ID, ALICE.email)
    with fresh.browser() as browser:
        fresh.signed_in_at_microsoft(browser, ALICE.email)
        seen = through_proxy(fresh, browser)
    assert seen["proxy_user"] is None
    assert "the IdP answered 'consent_required'" in fresh.proxy.logs()

"""The consent journey end to end, over real servers: a browser signs in to the app with
SAML (demo IdP), the proxy (a `consent-proxy run` process) applies the policy and sends it
to the Microsoft stand-in (HTTPS, msal through its real HTTP path), the stand-in's pages
are answered like a person would, and the callback lands back in the app.

This module runs the journey from the sign-in (proxy/consent/journey.py) and holds the
environment, the browser and the fixtures that test_consent_callback.py and
test_consent_pages.py share."""

from __future__ import annotations

import contextlib
import html
import json
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import pytest

from proxy.demo.idp import DEMO_USERS as SSO_USERS
from proxy.demo.idp import (
    EMAIL_ATTRIBUTE,
    GROUPS_ATTRIBUTE,
    NAME_ATTRIBUTE,
    OBJECT_ID_ATTRIBUTE,
    TENANT_ATTRIBUTE,
    DemoIdentityProvider,
    DemoUser,
)
from proxy.demo.microsoft import (
    DEMO_APP_ID,
    DEMO_APP_SECRET,
    DEMO_USERS,
    MicrosoftStandIn,
    demo_app,
)
from proxy.store.vault import new_key

from .servers import ProxyProcess, ThreadServer, free_port, running
from .sso_app import SsoApp
from .stored import session_settings
from .tls import client_context, https_server, https_url

IDP_ENTITY = "https://idp.demo.example/metadata"
AUDIENCE = "https://app.example.com/saml/metadata"
PREFIX = "/.consent-proxy/"

ALICE, BOB, CAROL = SSO_USERS[0], SSO_USERS[1], SSO_USERS[2]
FABRIKAM_ADMIN = next(u for u in DEMO_USERS if u.email == "admin@fabrikam.example")

POLICY = """
version: 1
defaults:
  prompt: never
  authorization: {type: graph, scopes: [Calendars.Read, Contacts.Read]}
  user_consent: allowed
rules:
  - name: hybrid
    match: {email_domain: [hybrid.example]}
    prompt: every_sign_in
    authorization: {type: ews, ews_url: https://mail.hybrid.example/EWS/Exchange.asmx}
  - name: first
    match: {groups: [mode-first_sign_in]}
    prompt: first_sign_in
  - name: every
    match: {groups: [mode-every_sign_in]}
    prompt: every_sign_in
  - name: drift
    match: {groups: [drift]}
    prompt: first_sign_in
    authorization: {type: graph, scopes: [Calendars.ReadWrite, Contacts.Read]}
  - name: admin-only
    match: {groups: [admin-only]}
    prompt: every_sign_in
    user_consent: admin_only
"""


def sso_user(base: Any, group: str, suffix: str = "") -> DemoUser:
    """The same person (email, tenant, object id) in a group that selects a prompt mode."""
    return DemoUser(
        id=f"{base.id if hasattr(base, 'id') else base.email}-{group}{suffix}",
        email=base.email,
        name=base.name,
        groups=(group,),
        tenant_id=base.tenant_id,
        object_id=base.object_id,
    )


MODES = ("first_sign_in", "every_sign_in", "never")
IDP_USERS = [
    *(sso_user(u, f"mode-{m}") for u in (ALICE, BOB) for m in MODES),
    sso_user(FABRIKAM_ADMIN, "mode-every_sign_in"),
    sso_user(ALICE, "admin-only"),
    sso_user(ALICE, "drift"),
    sso_user(CAROL, "hybrid"),
    # Bob as most IdPs send him: no tenant or object id in the assertion.
    DemoUser(id="bob-no-tenant", email=BOB.email, name=BOB.name, groups=("mode-every_sign_in",)),
]


def user_id(base: Any, group: str) -> str:
    return sso_user(base, group).id


@dataclass
class Env:
    app: SsoApp
    proxy: ProxyProcess
    idp: DemoIdentityProvider
    standin: MicrosoftStandIn
    ca_file: Path
    acs: str
    public_url: str = ""  # where browsers go, when not the proxy itself (an ingress)

    @property
    def origin(self) -> str:
        return self.public_url or self.proxy.url

    @property
    def callback(self) -> str:
        return f"{self.origin}{PREFIX}callback"

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.proxy.config_path.parent / "store.sqlite3")

    def record(self, namespace: str, key: str) -> dict[str, Any] | None:
        conn = self.db()
        try:
            row = conn.execute(
                "SELECT value FROM kv WHERE namespace = ? AND key = ?", (namespace, key)
            ).fetchone()
        finally:
            conn.close()
        return json.loads(row[0]) if row else None

    def integration(self, user: Any) -> dict[str, Any] | None:
        return self.record("integration", f"{user.tenant_id}.{user.object_id}")

    def wipe(self) -> None:
        conn = self.db()
        try:
            conn.execute("DELETE FROM kv")
            conn.commit()
        finally:
            conn.close()


def saml_endpoint(idp: DemoIdentityProvider, work: Path) -> dict[str, Any]:
    """The app's SAML ACS, as the proxy watches it, with every attribute the IdP sends."""
    return {
        "type": "saml",
        "path": "/saml/acs",
        "idp_certificates": [str(idp.write_certificate(work / "idp.pem"))],
        "audience": AUDIENCE,
        "email_attribute": EMAIL_ATTRIBUTE,
        "name_attribute": NAME_ATTRIBUTE,
        "tenant_attribute": TENANT_ATTRIBUTE,
        "object_id_attribute": OBJECT_ID_ATTRIBUTE,
        "groups_attribute": GROUPS_ATTRIBUTE,
    }


def consent_config(
    work: Path, upstream: str, public_url: str, idp: DemoIdentityProvider, authority: str, ca: Path
) -> dict[str, Any]:
    """The proxy's config for the journey: SAML sign-in, POLICY, the stand-in's app."""
    return {
        "upstream": {"url": upstream},
        "public_url": public_url,
        "session": session_settings(),
        "store": {"path": str(work / "store.sqlite3")},
        "sso": {"endpoints": [saml_endpoint(idp, work)]},
        "policy": str(work / "policy.yaml"),
        "microsoft_apps": {
            "default": {
                "client_id": DEMO_APP_ID,
                "client_secret": {"value": DEMO_APP_SECRET},
                "authority_host": authority,
                "ca_file": str(ca),
            }
        },
        # A wide bound: these tests look at single-flight results on a busy machine;
        # test_faults.py holds the bound itself to account.
        "tokens": {"encryption_keys": [{"value": new_key()}], "expired_wait": 15},
    }


@contextlib.contextmanager
def consent_env(
    work: Path, app_tenant: str | None = None, public_url: str = "", **extra: Any
) -> Iterator[Env]:
    """The app, the Microsoft stand-in, the demo IdP and a proxy in front, all running;
    `app_tenant` makes the app registration single-tenant; `public_url` is where browsers
    go when an ingress is in front of the proxy; `extra` adds or replaces top-level config
    sections."""
    app = SsoApp()
    proxy = ProxyProcess({}, work)
    origin = public_url or proxy.url
    standin_port = free_port()
    standin = MicrosoftStandIn(
        f"https://127.0.0.1:{standin_port}", apps=[demo_app(f"{origin}{PREFIX}callback")]
    )
    standin_server, ca_file = https_server(standin.app(), work, port=standin_port)
    acs = f"{origin}/saml/acs"
    idp = DemoIdentityProvider(IDP_ENTITY, IDP_USERS, allowed_acs_urls=[acs])
    (work / "policy.yaml").write_text(POLICY)
    with running(ThreadServer(app.app())) as upstream, running(standin_server):
        authority = https_url(standin_server)
        config = {**consent_config(work, upstream.url, origin, idp, authority, ca_file), **extra}
        if app_tenant:
            config["microsoft_apps"]["default"]["tenant"] = app_tenant
        proxy.config_path.write_text(json.dumps(config))
        with running(proxy):
            yield Env(app, proxy, idp, standin, ca_file, acs, public_url)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    with consent_env(tmp_path_factory.mktemp("consent")) as running_env:
        yield running_env


@pytest.fixture
def fresh(env: Env) -> Env:
    env.wipe()
    env.standin.reset()
    return env


class Person:
    """A browser: one cookie jar, follows nothing by itself."""

    def __init__(self, env: Env) -> None:
        self.env = env
        self.http = httpx.Client(verify=client_context(env.ca_file), timeout=15)

    def close(self) -> None:
        self.http.close()

    def sign_in(self, user: str, to: str = "/home") -> httpx.Response:
        saml = self.env.idp.response(user, audience=AUDIENCE, acs_url=self.env.acs)
        return self.http.post(
            self.env.acs, params={"to": to}, data={"SAMLResponse": saml, "RelayState": "/"}
        )

    def at_microsoft(self, response: httpx.Response) -> bool:
        location = response.headers.get("location", "")
        return response.status_code in (302, 303) and location.startswith(self.env.standin.base)

    def answer(self, response: httpx.Response, decision: str = "accept", **fields: str) -> str:
        """Answer Microsoft's pages; the callback URL it sends the browser back to."""
        page = self.http.get(response.headers["location"])
        for _ in range(3):
            if page.status_code != 200:
                break
            page = submit(self.http, page, decision=decision, **fields)
        assert page.status_code == 302, page.text
        location = page.headers["location"]
        assert location.startswith(self.env.callback), location
        return location

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.http.get(urljoin(self.env.origin, url), **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.http.post(urljoin(self.env.origin, url), **kwargs)


def submit(http: httpx.Client, page: httpx.Response, **fields: str) -> httpx.Response:
    match = re.search(r'<form method="post" action="([^"]+)"', page.text)
    assert match, page.text
    hidden = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page.text))
    data = {k: html.unescape(v) for k, v in hidden.items()}
    if "Pick an account" in page.text:
        data["user"] = fields.get("user", "")
    else:
        data.update({k: v for k, v in fields.items() if k != "user"})
    return http.post(urljoin(str(page.url), html.unescape(match[1])), data=data)


@pytest.fixture
def person(fresh: Env) -> Iterator[Person]:
    browser = Person(fresh)
    yield browser
    browser.close()


def another(env: Env) -> Person:
    return Person(env)


def title(response: httpx.Response) -> str:
    found = re.search(r"<h1>(.*?)</h1>", response.text)
    return html.unescape(found[1]) if found else ""


def submit_form(person: Person, page: httpx.Response, action: str, **fields: str) -> httpx.Response:
    form = re.search(
        rf'<form method="post" action="{re.escape(PREFIX + action)}">(.*?)</form>', page.text, re.S
    )
    assert form, page.text
    data = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', form[1]))
    data.update(fields)
    return person.post(PREFIX + action, data=data)


# --- the prompt modes -------------------------------------------------------------------------


@pytest.mark.parametrize("outcome", ["accept", "decline", "transient"])
@pytest.mark.parametrize("mode", MODES)
def test_prompt_modes(person: Person, mode: str, outcome: str) -> None:
    env = person.env
    first = person.sign_in(user_id(ALICE, f"mode-{mode}"))
    assert first.status_code == 303
    if mode == "never":
        assert first.headers["location"] == "/home"
        record = env.integration(ALICE)  # known from the first sign-in on, never asked
        assert record is not None and record["status"] == "none"
        assert record["prompted_before"] is False
        return
    assert person.at_microsoft(first)
    query = parse_qs(urlsplit(first.headers["location"]).query)
    assert query["login_hint"] == [ALICE.email]
    assert query["code_challenge_method"] == ["S256"] and query["code_challenge"][0]
    assert query["state"][0] and query["client_id"] == [DEMO_APP_ID]
    assert "Calendars.Read" in query["scope"][0] and "Contacts.Read" in query["scope"][0]
    assert any(c.startswith("app_session=") for c in first.headers.get_list("set-cookie"))

    if outcome == "transient":
        env.standin.fail_token_requests(1, status=503)
    callback = person.answer(first, "accept" if outcome != "decline" else "cancel")
    landed = person.get(callback)
    record = env.integration(ALICE)
    assert record is not None and record["prompted_before"] is True
    if outcome == "accept":
        assert landed.status_code == 303 and landed.headers["location"] == "/home"
        assert record["status"] == "connected"
        assert {"Calendars.Read", "Contacts.Read"} <= set(record["granted_scopes"])
    elif outcome == "decline":
        assert landed.status_code == 200
        assert title(landed) == "Office 365 not connected"
        assert "you can connect later" in landed.text
        assert f'href="{PREFIX}"' in landed.text and 'href="/home"' in landed.text
        assert record["status"] == "declined" and record["last_error_code"] == 65004
    else:
        assert title(landed) == "Office 365 not connected"
        assert record["status"] == "failed"

    later = another(env)
    try:
        again = later.sign_in(user_id(ALICE, f"mode-{mode}"))
        prompted = later.at_microsoft(again)
    finally:
        later.close()
    expected = mode == "every_sign_in" and outcome != "accept"
    assert prompted is expected, (mode, outcome)


def test_every_sign_in_stops_once_connected(person: Person) -> None:
    user = user_id(ALICE, "mode-every_sign_in")
    first = person.sign_in(user)
    person.get(person.answer(first, "cancel"))
    second = another(person.env)
    retry = second.sign_in(user)
    assert second.at_microsoft(retry)
    assert second.get(second.answer(retry)).status_code == 303
    third = another(person.env)
    assert not third.at_microsoft(third.sign_in(user))
    for browser in (second, third):
        browser.close()


def test_ordinary_requests_never_prompt(person: Person) -> None:
    person.sign_in(user_id(ALICE, "mode-every_sign_in"))
    page = person.get("/somewhere")
    assert page.status_code == 200


# --- admin approval -----------------------------------------------------------------------


def test_admin_only_rule_tells_users_instead_of_sending_them(person: Person) -> None:
    signed_in = person.sign_in(user_id(ALICE, "admin-only"))
    assert signed_in.status_code == 303
    location = signed_in.headers["location"]
    assert location.startswith(f"{PREFIX}admin-approval?")
    page = person.get(location)
    assert title(page) == "An administrator needs to approve this app"
    assert 'href="/home"' in page.text


# --- EWS -----------------------------------------------------------------------------------


def test_ews_rule_asks_for_the_ews_scope_of_that_host(person: Person) -> None:
    signed_in = person.sign_in(user_id(CAROL, "hybrid"))
    assert person.at_microsoft(signed_in)
    scope = parse_qs(urlsplit(signed_in.headers["location"]).query)["scope"][0]
    assert "https://mail.hybrid.example/EWS.AccessAsUser.All" in scope.split()
    assert "Calendars.Read" not in scope
    assert person.get(person.answer(signed_in)).status_code == 303
    record = person.env.integration(CAROL)
    assert record is not None and record["status"] == "connected"
    assert record["route"] == "ews"
    assert record["ews_url"] == "https://mail.hybrid.example/EWS/Exchange.asmx"


# --- where the user lands ------------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example/x",
        "/\\evil.example",
        "%09//evil.example",
        "https:evil.example",
        "https://evil.example/",
        "javascript:alert(1)",
        "/ok/../..//evil.example",
    ],
)
def test_open_redirects_through_the_app_location_land_home(person: Person, target: str) -> None:
    first = person.sign_in(user_id(ALICE, "mode-every_sign_in"), to=target)
    landed = person.get(person.answer(first))
    location = landed.headers["location"]
    parts = urlsplit(location)
    assert location.startswith("/") and not location.startswith("//")
    assert "\\" not in location and not parts.scheme and not parts.netloc


def test_same_origin_destination_is_kept(person: Person) -> None:
    first = person.sign_in(user_id(ALICE, "mode-every_sign_in"), to="/calendar?week=48#today")
    landed = person.get(person.answer(first))
    assert landed.headers["location"] == "/calendar?week=48#today"

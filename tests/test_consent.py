"""The consent journey end to end, over real servers: a browser signs in to the app with
SAML (demo IdP), the proxy (a `consent-proxy run` process) applies the policy and sends it
to the Microsoft stand-in (HTTPS, msal through its real HTTP path), the stand-in's pages
are answered like a person would, and the callback lands back in the app."""

from __future__ import annotations

import contextlib
import html
import json
import re
import sqlite3
import time
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

    @property
    def callback(self) -> str:
        return f"{self.proxy.url}{PREFIX}callback"

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


@contextlib.contextmanager
def consent_env(work: Path, **extra: Any) -> Iterator[Env]:
    """The app, the Microsoft stand-in, the demo IdP and a proxy in front, all running;
    `extra` adds or replaces top-level config sections."""
    app = SsoApp()
    proxy = ProxyProcess({}, work)
    standin_port = free_port()
    standin = MicrosoftStandIn(
        f"https://127.0.0.1:{standin_port}", apps=[demo_app(f"{proxy.url}{PREFIX}callback")]
    )
    standin_server, ca_file = https_server(standin.app(), work, port=standin_port)
    acs = f"{proxy.url}/saml/acs"
    idp = DemoIdentityProvider(IDP_ENTITY, IDP_USERS, allowed_acs_urls=[acs])
    (work / "policy.yaml").write_text(POLICY)
    with running(ThreadServer(app.app())) as upstream, running(standin_server):
        config = {
            "upstream": {"url": upstream.url},
            "public_url": proxy.url,
            "session": session_settings(),
            "store": {"path": str(work / "store.sqlite3")},
            "sso": {
                "endpoints": [
                    {
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
                ],
            },
            "policy": str(work / "policy.yaml"),
            "microsoft_apps": {
                "default": {
                    "client_id": DEMO_APP_ID,
                    "client_secret": {"value": DEMO_APP_SECRET},
                    "authority_host": https_url(standin_server),
                    "ca_file": str(ca_file),
                }
            },
            "tokens": {"encryption_keys": [{"value": new_key()}]},
            **extra,
        }
        proxy.config_path.write_text(json.dumps(config))
        with running(proxy):
            yield Env(app, proxy, idp, standin, ca_file, acs)


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
        return self.http.get(urljoin(self.env.proxy.url, url), **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.http.post(urljoin(self.env.proxy.url, url), **kwargs)


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


def test_need_admin_approval_then_admin_consent_then_users_connect(person: Person) -> None:
    env = person.env
    first = person.sign_in(user_id(BOB, "mode-every_sign_in"))
    assert person.at_microsoft(first)
    landed = person.get(person.answer(first, "back"))
    assert title(landed) == "An administrator needs to approve this app"
    assert "allow user consent for apps" in landed.text
    assert "about 30 minutes" in landed.text
    assert "on behalf of the company" in landed.text
    record = env.integration(BOB)
    assert record is not None and record["status"] == "admin_approval_required"
    tenant = env.record("tenant", BOB.tenant_id)
    assert tenant is not None and tenant["approval_required_until"] > time.time()

    # Another user of the tenant is not sent into the same failing screen.
    admin = another(env)
    passed = admin.sign_in(user_id(FABRIKAM_ADMIN, "mode-every_sign_in"))
    assert passed.status_code == 303 and passed.headers["location"] == "/home"
    assert "tenant_waiting_for_admin" in env.proxy.logs()

    # The admin consents for the organization from the connection page.
    manage = admin.get(PREFIX)
    assert manage.status_code == 200 and "Waiting" not in title(manage)
    consent = submit_form(admin, manage, "admin-consent")
    assert consent.status_code == 303
    assert "/v2.0/adminconsent?" in consent.headers["location"]
    assert "/common/" not in consent.headers["location"]
    back = admin.http.get(consent.headers["location"])
    while back.status_code == 200:  # pick the account, then accept for the organization
        back = submit(admin.http, back, decision="accept", user=FABRIKAM_ADMIN.email)
    assert back.status_code == 302 and back.headers["location"].startswith(env.callback)
    assert "admin_consent=True" in back.headers["location"]
    then = admin.get(back.headers["location"])
    assert admin.at_microsoft(then)  # now the admin's own tokens, by a normal authorize
    admin.get(admin.answer(then))
    assert env.record("tenant", BOB.tenant_id)["admin_consented"] is True  # type: ignore[index]
    assert env.integration(FABRIKAM_ADMIN)["status"] == "connected"  # type: ignore[index]

    # Bob's next sign-in goes through without any consent screen.
    bob = another(env)
    again = bob.sign_in(user_id(BOB, "mode-every_sign_in"))
    assert bob.at_microsoft(again)
    code_redirect = bob.http.get(again.headers["location"])
    assert code_redirect.status_code == 302  # no page: the organization already consented
    assert bob.get(code_redirect.headers["location"]).headers["location"] == "/home"
    assert env.integration(BOB)["status"] == "connected"  # type: ignore[index]
    admin.close()
    bob.close()


def submit_form(person: Person, page: httpx.Response, action: str, **fields: str) -> httpx.Response:
    form = re.search(
        rf'<form method="post" action="{re.escape(PREFIX + action)}">(.*?)</form>', page.text, re.S
    )
    assert form, page.text
    data = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', form[1]))
    data.update(fields)
    return person.post(PREFIX + action, data=data)


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


# --- state: forged, replayed, expired, foreign ----------------------------------------------


def started(person: Person) -> str:
    """Sign in, accept at Microsoft: the callback URL, not yet visited."""
    first = person.sign_in(user_id(ALICE, "mode-every_sign_in"))
    return person.answer(first)


def with_state(callback: str, state: str) -> str:
    parts = urlsplit(callback)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query["state"] = state
    return f"{parts.path}?{httpx.QueryParams(query)}"


@pytest.mark.parametrize(
    "state", ["", "forged", "A" * 300, "%00%ff", "ünïcode", "state with spaces"]
)
def test_forged_state_is_a_clear_page_and_changes_nothing(person: Person, state: str) -> None:
    callback = started(person)
    landed = person.get(with_state(callback, state))
    assert landed.status_code == 400
    assert title(landed) == "This link has expired or was already used"
    assert person.env.integration(ALICE)["status"] == "none"  # type: ignore[index]
    # The real state still works afterwards: nothing was lost.
    assert person.get(callback).status_code == 303


def test_replayed_callback_is_refused(person: Person) -> None:
    callback = started(person)
    assert person.get(callback).status_code == 303
    replay = person.get(callback)
    assert replay.status_code == 400
    assert title(replay) == "This link has expired or was already used"
    assert person.env.integration(ALICE)["status"] == "connected"  # type: ignore[index]


def test_expired_state_is_refused(person: Person) -> None:
    callback = started(person)
    conn = person.env.db()
    conn.execute("UPDATE kv SET expires = ? WHERE namespace = 'consent-state'", (time.time() - 1,))
    conn.commit()
    conn.close()
    assert person.get(callback).status_code == 400


def test_callback_in_another_browser_is_refused(person: Person) -> None:
    callback = started(person)
    thief = another(person.env)
    thief.sign_in(user_id(BOB, "mode-never"))
    stolen = thief.get(callback)
    assert stolen.status_code == 400
    assert title(stolen) == "This link belongs to another sign-in"
    assert person.env.integration(ALICE)["status"] == "none"  # type: ignore[index]
    thief.close()


def test_no_code_state_or_token_in_the_logs(person: Person) -> None:
    callback = started(person)
    query = parse_qs(urlsplit(callback).query)
    person.get(callback)
    logs = person.env.proxy.logs()
    assert query["code"][0] not in logs
    assert query["state"][0] not in logs
    conn = person.env.db()
    sealed = [row[0] for row in conn.execute("SELECT value FROM kv WHERE namespace = 'tokens'")]
    conn.close()
    assert sealed and all(b"refresh_token" not in bytes(v) for v in sealed)  # encrypted at rest


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


# --- the manual page -------------------------------------------------------------------------


def test_manual_connect_and_disconnect(person: Person) -> None:
    env = person.env
    assert title(person.get(PREFIX)) == "Sign in to the app first"
    person.sign_in(user_id(ALICE, "mode-never"))
    page = person.get(PREFIX)
    assert "Not connected" in page.text and "Connect Office 365" in page.text
    refused = person.post(f"{PREFIX}connect", data={"csrf": "forged"})
    assert refused.status_code == 400
    go = submit_form(person, page, "connect")
    assert person.at_microsoft(go)
    assert person.get(person.answer(go)).status_code == 303
    page = person.get(PREFIX)
    assert "Connected" in page.text and "Disconnect" in page.text
    assert token_records(env) == 1
    done = submit_form(person, page, "disconnect")
    assert done.status_code == 200 and "Disconnected." in done.text
    record = env.integration(ALICE)
    assert record is not None and record["status"] == "none"
    assert token_records(env) == 0


def token_records(env: Env) -> int:
    conn = env.db()
    try:
        count: int = conn.execute("SELECT count(*) FROM kv WHERE namespace = 'tokens'").fetchone()[
            0
        ]
        return count
    finally:
        conn.close()


@pytest.mark.parametrize("path", ["nope", "callback/extra", "%2e%2e/etc/passwd", "CALLBACK"])
def test_unknown_reserved_paths_are_404(person: Person, path: str) -> None:
    assert person.get(PREFIX + path).status_code == 404


def test_manual_page_next_cannot_leave_the_site(person: Person) -> None:
    person.sign_in(user_id(ALICE, "mode-never"))
    page = person.get(PREFIX, params={"next": "//evil.example"})
    assert "evil.example" not in page.text


def test_declined_then_connect_by_hand(person: Person) -> None:
    first = person.sign_in(user_id(ALICE, "mode-first_sign_in"))
    person.get(person.answer(first, "cancel"))
    page = person.get(PREFIX)
    assert "you declined" in page.text
    go = submit_form(person, page, "connect")
    assert person.get(person.answer(go)).status_code == 303
    assert person.env.integration(ALICE)["status"] == "connected"  # type: ignore[index]


# --- Microsoft's other answers -------------------------------------------------------------


def test_config_error_is_loud_for_ops_and_quiet_for_the_user(person: Person) -> None:
    env = person.env
    env.standin.expire_secret(DEMO_APP_ID)
    first = person.sign_in(user_id(ALICE, "mode-every_sign_in"))
    landed = person.get(person.answer(first))
    assert landed.status_code == 200
    assert title(landed) == "Office 365 cannot be connected right now"
    assert 'href="/home"' in landed.text
    assert "7000222" not in landed.text or "Reference" in landed.text
    errors = [
        json.loads(line)
        for line in env.proxy.logs().splitlines()
        if line.startswith("{") and '"level": "error"' in line
    ]
    assert any("config" in e["message"] and "7000222" in e["message"] for e in errors), errors
    assert env.integration(ALICE)["status"] == "failed"  # type: ignore[index]

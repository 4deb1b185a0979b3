"""An organization's consent, end to end over the same real servers as test_consent.py:
admin consent when the SSO assertion names no tenant (single- and multi-tenant app
registrations), the admin link a user sends to an administrator (and what a forged,
changed or expired one gets), a failed admin consent that changes nobody's state, and a
consent page left unanswered, which does not count as an answer."""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import re
import time
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest
import yaml

from proxy.demo.users import FABRIKAM_TENANT_ID

from . import test_consent as shared
from .servers import free_port
from .test_consent import (
    ALICE,
    FABRIKAM_ADMIN,
    PREFIX,
    Env,
    Person,
    consent_env,
    submit,
    submit_form,
    title,
    user_id,
)

# The multi-tenant environment of test_consent.py, shared by this module's tests.
env, fresh, person = shared.env, shared.fresh, shared.person

BOB_NO_TENANT = "bob-no-tenant"
ADMIN_NEEDED = "An administrator needs to approve this app"
NOT_APPROVED = "Your organization's approval did not go through"
INVALID = "This approval link is not valid"


OPENED: list[Person] = []


def another(env: Env) -> Person:
    """Another browser (closed after the test)."""
    OPENED.append(Person(env))
    return OPENED[-1]


@pytest.fixture(autouse=True)
def close_browsers() -> Iterator[None]:
    yield
    while OPENED:
        OPENED.pop().close()


@pytest.fixture(scope="module")
def single_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """The same servers, with an app registration for fabrikam's tenant only."""
    work = tmp_path_factory.mktemp("single-tenant")
    ops = {"port": free_port()}  # the metrics: tenants waiting for an admin
    with consent_env(work, app_tenant=FABRIKAM_TENANT_ID, ops=ops) as running_env:
        yield running_env


def tenants_waiting(env: Env) -> float:
    config = yaml.safe_load(env.proxy.config_path.read_text())
    metrics = httpx.get(f"http://127.0.0.1:{config['ops']['port']}/metrics").text
    found = re.search(r"^consent_proxy_tenants_waiting_admin (\S+)$", metrics, re.M)
    assert found, metrics
    return float(found[1])


@pytest.fixture
def single(single_env: Env) -> Iterator[Person]:
    single_env.wipe()
    single_env.standin.reset()
    browser = Person(single_env)
    yield browser
    browser.close()


def needs_admin(bob: Person) -> httpx.Response:
    """Bob signs in, Microsoft says an admin must approve, he goes back: the proxy's page."""
    first = bob.sign_in(BOB_NO_TENANT)
    assert bob.at_microsoft(first)
    landed = bob.get(bob.answer(first, "back"))
    assert title(landed) == ADMIN_NEEDED
    return landed


def admin_link(page: httpx.Response) -> str:
    found = re.search(r'<a id="admin-link" href="([^"]+)"', page.text)
    assert found, page.text
    return html.unescape(found[1])


def through_microsoft(admin: Person, location: str, decision: str = "accept") -> str:
    """The administrator on Microsoft's pages (picks their account, then `decision`);
    the callback URL they are sent back to."""
    page = admin.http.get(location)
    while page.status_code == 200:
        page = submit(admin.http, page, decision=decision, user=FABRIKAM_ADMIN.email)
    assert page.status_code == 302, page.text
    assert page.headers["location"].startswith(admin.env.callback)
    return str(page.headers["location"])


def approve_with_link(link: str, env: Env) -> httpx.Response:
    """An administrator, in their own browser (no session), approves through the link."""
    admin = another(env)
    shown = admin.http.get(link)
    assert shown.status_code == 200 and title(shown) == "Approve this app for your organization"
    assert "read their calendar" in shown.text and "read their contacts" in shown.text
    go = submit_form(admin, shown, "admin-link")
    assert go.status_code == 303 and "/v2.0/adminconsent?" in go.headers["location"]
    assert any(c.startswith("consent_proxy_admin=") for c in go.headers.get_list("set-cookie"))
    identify = admin.get(through_microsoft(admin, go.headers["location"]))
    assert admin.at_microsoft(identify)  # who approved: one more sign-in at Microsoft
    return admin.get(through_microsoft(admin, identify.headers["location"]))


# --- no tenant in the SSO assertion -----------------------------------------------------------


def test_single_tenant_app_admin_link_then_bob_connects(single: Person) -> None:
    env = single.env
    landed = needs_admin(single)
    tenant = env.record("tenant", FABRIKAM_TENANT_ID)
    assert tenant is not None and tenant["approval_required_until"] > time.time()
    assert tenants_waiting(env) == 1

    done = approve_with_link(admin_link(landed), env)
    assert done.status_code == 200 and title(done) == "Approved for your organization"
    tenant = env.record("tenant", FABRIKAM_TENANT_ID)
    assert tenant is not None and tenant["admin_consented"] is True
    assert tenant["approval_required_until"] is None
    assert tenants_waiting(env) == 0
    logs = env.proxy.logs()
    assert f"admin consent recorded for tenant {FABRIKAM_TENANT_ID}" in logs
    assert f"given by {FABRIKAM_ADMIN.email}" in logs
    assert not [line for line in logs.splitlines() if "admin consent" in line and "bob" in line]

    # Bob's next sign-in: Microsoft asks nothing (the organization consented); connected.
    bob = another(env)
    again = bob.sign_in(BOB_NO_TENANT)
    assert bob.at_microsoft(again)
    code = bob.http.get(again.headers["location"])
    assert code.status_code == 302 and code.headers["location"].startswith(env.callback)
    home = bob.get(code.headers["location"])
    assert home.status_code == 303 and home.headers["location"] == "/home"
    assert "connected Office 365" in env.proxy.logs()


def test_single_tenant_admin_button_uses_the_registrations_tenant(single: Person) -> None:
    landed = needs_admin(single)
    go = submit_form(single, landed, "admin-consent")
    assert go.status_code == 303
    assert f"/{FABRIKAM_TENANT_ID}/v2.0/adminconsent?" in go.headers["location"]


def test_failed_admin_consent_changes_nobodys_state(single: Person) -> None:
    env = single.env
    landed = needs_admin(single)
    before = [r for r in rows(env, "integration") if r["email"] == "bob@fabrikam.example"]
    assert [r["status"] for r in before] == ["admin_approval_required"]

    # Bob presses the admin's button himself: Microsoft refuses him (AADSTS90094).
    go = submit_form(single, landed, "admin-consent")
    page = single.http.get(go.headers["location"])
    while page.status_code == 200:
        page = submit(single.http, page, decision="accept", user="bob@fabrikam.example")
    failed = single.get(page.headers["location"])
    assert failed.status_code == 200 and title(failed) == NOT_APPROVED
    assert "may not approve apps" in failed.text and "Reference: AADSTS90094" in failed.text
    assert "not set up correctly" not in failed.text

    # An administrator cancels Microsoft's page: the same, nothing changed.
    landed = single.get(f"{PREFIX}admin-approval?next=/")
    go = submit_form(single, landed, "admin-consent")
    cancelled = single.get(through_microsoft(single, go.headers["location"], "cancel"))
    assert title(cancelled) == NOT_APPROVED and "cancelled" in cancelled.text

    after = [r for r in rows(env, "integration") if r["email"] == "bob@fabrikam.example"]
    assert after == before  # the user's own record is untouched
    tenant = env.record("tenant", FABRIKAM_TENANT_ID)
    assert tenant is not None and tenant["admin_consented"] is False


def rows(env: Env, namespace: str) -> list[dict[str, object]]:
    return [json.loads(value) for value in values(env, namespace)]


def values(env: Env, namespace: str) -> list[bytes]:
    conn = env.db()
    try:
        found = conn.execute("SELECT value FROM kv WHERE namespace = ?", (namespace,)).fetchall()
    finally:
        conn.close()
    return [value for (value,) in found]


def test_multi_tenant_app_takes_the_tenant_microsoft_names(person: Person) -> None:
    env = person.env
    landed = needs_admin(person)
    assert env.record("tenant", FABRIKAM_TENANT_ID) is None  # no tenant known: no back-off
    done = approve_with_link(admin_link(landed), env)
    assert title(done) == "Approved for your organization"
    tenant = env.record("tenant", FABRIKAM_TENANT_ID)
    assert tenant is not None and tenant["admin_consented"] is True


def test_multi_tenant_admin_consent_with_a_changed_tenant_is_refused(person: Person) -> None:
    env = person.env
    landed = needs_admin(person)
    admin = another(env)
    go = submit_form(admin, admin.http.get(admin_link(landed)), "admin-link")
    back = through_microsoft(admin, go.headers["location"])
    assert f"tenant={FABRIKAM_TENANT_ID}" in back
    forged = admin.get(back.replace(FABRIKAM_TENANT_ID, "evil.example"))
    assert title(forged) == NOT_APPROVED
    assert rows(env, "tenant") == []


# --- the admin link: forged, changed, expired, in another browser ---------------------------


def link_key(env: Env) -> bytes:
    config = yaml.safe_load(env.proxy.config_path.read_text())
    key = config["tokens"]["encryption_keys"][0]["value"]
    return hashlib.sha256(b"admin-link\0" + key.encode()).digest()


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed(env: Env, body: object, key: bytes | None = None) -> str:
    payload = b64(json.dumps(body).encode())
    mac = hmac.new(key or link_key(env), payload.encode(), "sha256").digest()
    return f"{payload}.{b64(mac)}"


def test_garbage_admin_links_are_refused(person: Person) -> None:
    env = person.env
    good = {"t": FABRIKAM_TENANT_ID, "a": "default", "s": ["Calendars.Read"]}
    later = time.time() + 3600
    landed = needs_admin(person)
    real = admin_link(landed).split("t=", 1)[1]
    payload, mac = real.split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    changed = b64(json.dumps({**body, "t": ""}).encode())
    garbage = [
        "",
        "x",
        "a.b.c",
        "....",
        "%00",
        "é",
        real + "x",
        f"{changed}.{mac}",  # another tenant under the real signature
        f"{payload}.{b64(b'0' * 32)}",
        "A" * 5000,
        signed(env, {**good, "e": time.time() - 1}),  # expired
        signed(env, {**good, "a": "unknown-app", "e": later}),
        signed(env, {**good, "s": "Calendars.Read", "e": later}),
        signed(env, {**good, "s": [1, 2], "e": later}),
        signed(env, {**good, "e": "soon"}),
        signed(env, {"t": 1, "a": "default", "s": [], "e": later}),
        signed(env, ["not", "an", "object"]),
        signed(env, {**good, "e": later}, key=b"another key"),
        b64(b"\xff\xfe") + "." + b64(b"\x00"),
    ]
    admin = another(env)
    states = len(values(env, "consent-state"))
    for token in garbage:
        shown = admin.get(f"{PREFIX}admin-link?t={quote(token)}")
        assert shown.status_code == 400 and title(shown) == INVALID, token
        posted = admin.post(f"{PREFIX}admin-link", data={"t": token})
        assert posted.status_code == 400 and title(posted) == INVALID, token
    assert admin.get(f"{PREFIX}admin-link").status_code == 400
    assert admin.get(f"{PREFIX}admin-link?t=a&t=b").status_code == 400
    assert admin.post(f"{PREFIX}admin-link", content=b"\xff" * 20000).status_code == 400
    assert len(values(env, "consent-state")) == states  # nothing started, nothing stored
    # The real link still works, and only in the browser it started in.
    go = submit_form(admin, admin.http.get(admin_link(landed)), "admin-link")
    back = through_microsoft(admin, go.headers["location"])
    elsewhere = another(env).get(back)
    assert elsewhere.status_code == 400
    assert title(elsewhere) == "This approval belongs to another browser"
    assert env.record("tenant", FABRIKAM_TENANT_ID) is None


# --- an unanswered consent page is no answer ---------------------------------------------------


def test_abandoned_consent_leaves_the_user_not_yet_asked(person: Person) -> None:
    env = person.env
    first = person.sign_in(user_id(ALICE, "mode-first_sign_in"))
    assert person.at_microsoft(first)  # ...and the user closes Microsoft's tab
    record = env.integration(ALICE)
    assert record is not None and record["status"] == "none"
    assert record["prompted_before"] is False
    second = another(env)
    again = second.sign_in(user_id(ALICE, "mode-first_sign_in"))
    assert second.at_microsoft(again)  # first_sign_in asks again: there was no answer

    landed = second.get(second.answer(again, "cancel"))
    assert title(landed) == "Office 365 not connected"
    record = env.integration(ALICE)
    assert record is not None and record["prompted_before"] is True
    third = another(env).sign_in(user_id(ALICE, "mode-first_sign_in"))
    assert third.status_code == 303 and third.headers["location"] == "/home"


# --- the connection page ---------------------------------------------------------------------


def test_connection_page_says_what_is_shared_and_who_can_help(person: Person) -> None:
    env = person.env
    first = person.sign_in(user_id(ALICE, "mode-every_sign_in"))
    person.get(person.answer(first, "cancel"))
    page = person.get(f"{PREFIX}?next=/calendar")
    assert "Not connected (you declined)" in page.text
    assert "If you connect, you allow the app to:" in page.text
    assert "<li>read your calendar</li>" in page.text and "<li>read your contacts</li>" in page.text
    assert "Reference: AADSTS65004" in page.text and "Last Microsoft answer" not in page.text
    assert 'id="admin-link"' not in page.text and "admin-consent" not in page.text
    assert '<input type="hidden" name="next" value="/calendar">' in page.text

    bob = another(env)
    needs_admin(bob)
    page = bob.get(PREFIX)
    assert 'id="admin-link"' in page.text and f'action="{PREFIX}admin-consent"' in page.text
    assert "Send this link to an administrator" in page.text

    carol = another(env)
    carol.sign_in(user_id(shared.CAROL, "hybrid"))
    page = carol.get(PREFIX)
    assert "through Exchange Web Services" in page.text


def test_disconnect_returns_to_where_the_user_was(person: Person) -> None:
    first = person.sign_in(user_id(ALICE, "mode-every_sign_in"))
    person.get(person.answer(first))
    for asked, kept in (("/calendar?week=2", "%2Fcalendar%3Fweek%3D2"), ("//evil.example", "%2F")):
        page = person.get(f"{PREFIX}?next={quote(asked)}")
        assert "Disconnect" in page.text
        done = submit_form(person, page, "disconnect")
        assert done.status_code == 303
        assert done.headers["location"] == f"{PREFIX}?done=disconnected&next={kept}"
        shown = person.get(done.headers["location"])
        assert "Disconnected." in shown.text
        person.get(person.answer(person.post(f"{PREFIX}connect", data=connect_form(shown))))


def connect_form(page: httpx.Response) -> dict[str, str]:
    return dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page.text))

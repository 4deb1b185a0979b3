"""Back from Microsoft (proxy/consent/callback.py), end to end over the same real servers
as test_consent.py: the one-time state (forged, replayed, expired, in another browser),
what never reaches the logs, an organization's admin consent, and Microsoft's other answers."""

from __future__ import annotations

import json
import time
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from proxy.demo.microsoft import DEMO_APP_ID

from . import test_consent as shared
from .test_consent import (
    ALICE,
    BOB,
    FABRIKAM_ADMIN,
    PREFIX,
    Person,
    another,
    submit,
    submit_form,
    title,
    user_id,
)

# One running environment for this module, from the fixtures of test_consent.py.
env, fresh, person = shared.env, shared.fresh, shared.person


# --- admin consent --------------------------------------------------------------------------


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

"""Fresh tokens to the app: header forwarding, anti-spoofing, single-flight refresh,
revocation, transient failures — over the same real servers as the consent journey."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from .jose import claims_of
from .servers import free_port, wait_for_port
from .test_consent import ALICE, PREFIX, Env, Person, consent_env, submit_form, user_id

NAMES = {
    "user": "x-consent-proxy-user",
    "tenant": "x-consent-proxy-tenant-id",
    "oid": "x-consent-proxy-object-id",
    "integration": "x-consent-proxy-integration",
    "token": "x-consent-proxy-access-token",
    "expires": "x-consent-proxy-token-expires",
    "route": "x-consent-proxy-token-route",
    "ews": "x-consent-proxy-ews-url",
    "assertion": "x-consent-proxy-assertion",
}


@pytest.fixture
def person(tmp_path: Path) -> Iterator[Person]:
    # A proxy of its own per test: what a proxy keeps in memory is part of what is tested.
    with consent_env(tmp_path) as env:
        browser = Person(env)
        yield browser
        browser.close()


def connect(person: Person, lifetime: int = 3600) -> None:
    person.env.standin.access_token_lifetime = lifetime
    first = person.sign_in(user_id(ALICE, "mode-every_sign_in"))
    assert person.get(person.answer(first)).status_code == 303


def seen(person: Person, headers: list[tuple[str, str]] | None = None) -> dict[str, str]:
    response = person.get("/echo", headers=headers or [])
    assert response.status_code == 200
    received: dict[str, str] = response.json()["headers"]
    return received


def test_connected_user_gets_identity_and_token_headers(person: Person) -> None:
    connect(person)
    got = seen(person)
    assert got[NAMES["user"]] == ALICE.email
    assert got[NAMES["tenant"]] == ALICE.tenant_id
    assert got[NAMES["oid"]] == ALICE.object_id
    assert got[NAMES["integration"]] == "connected"
    assert got[NAMES["route"]] == "graph"
    token = claims_of(got[NAMES["token"]])
    assert token["oid"] == ALICE.object_id and "Calendars.Read" in token["scp"]
    assert abs(int(got[NAMES["expires"]]) - token["exp"]) <= 2  # msal counts from expires_in
    assertion = claims_of(got[NAMES["assertion"]])
    assert assertion["upn"] == ALICE.email and assertion["integration"] == "connected"
    assert assertion["tid"] == ALICE.tenant_id and assertion["exp"] > assertion["iat"]


def test_signed_in_but_not_connected_gets_identity_only(person: Person) -> None:
    person.sign_in(user_id(ALICE, "mode-never"))
    got = seen(person)
    assert got[NAMES["user"]] == ALICE.email
    assert got[NAMES["integration"]] == "none"
    assert NAMES["token"] not in got


SPOOFS = [
    ("X-Consent-Proxy-Access-Token", "forged"),
    ("x-consent-proxy-user", "mallory@evil.example"),
    ("X_Consent_Proxy_User", "mallory@evil.example"),
    ("x.consent.proxy.user", "mallory@evil.example"),
    ("X-CONSENT-PROXY-INTEGRATION", "connected"),
    ("X-Consent-Proxy-Assertion", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJtYWxsb3J5In0."),
    ("X-Consent-Proxy-Token-Route", "ews"),
]


@pytest.mark.parametrize("signed_in", [False, True])
def test_inbound_copies_are_removed_in_every_spelling(person: Person, signed_in: bool) -> None:
    if signed_in:
        connect(person)
    raw = [*SPOOFS, ("X-Consent-Proxy-User", "second@evil.example")]  # with a duplicate
    got = seen(person, raw)
    text = json.dumps(got)
    assert "evil.example" not in text and "forged" not in text
    assert all(not k.startswith(("x_consent", "x.consent")) for k in got)
    if signed_in:
        assert got[NAMES["user"]] == ALICE.email
    else:
        assert not any(k.startswith("x-consent-proxy") for k in got)


def test_connection_cannot_strip_identity_headers(person: Person) -> None:
    # cf. Traefik CVE-2024-45410: headers the proxy adds are not the client's to name.
    connect(person)
    named = ", ".join([*NAMES.values(), "X-Request-ID", "X-Forwarded-For", "X-Client-Hop"])
    got = seen(person, [("Connection", named), ("X-Client-Hop", "hop")])
    assert got[NAMES["user"]] == ALICE.email
    assert got[NAMES["integration"]] == "connected"
    assert NAMES["token"] in got and NAMES["assertion"] in got
    assert got["x-request-id"] and got["x-forwarded-for"]
    assert "x-client-hop" not in got


def test_one_refresh_for_a_hundred_concurrent_requests(person: Person) -> None:
    # Tokens that live less than the refresh leeway are due for refresh at once; the
    # refreshed one lives an hour.
    connect(person, lifetime=200)
    standin = person.env.standin
    standin.access_token_lifetime = 3600
    before = standin.refresh_redemptions[ALICE.email]
    cookies = dict(person.http.cookies)

    def one(_: int) -> str:
        response = httpx.get(f"{person.env.proxy.url}/echo", cookies=cookies, timeout=30)
        return str(response.json()["headers"].get(NAMES["token"], ""))

    with ThreadPoolExecutor(max_workers=50) as pool:
        tokens = list(pool.map(one, range(100)))
    assert all(tokens)
    assert standin.refresh_redemptions[ALICE.email] - before == 1
    assert len(set(tokens)) == 1


def sealed_tokens(where: Env) -> bytes:
    conn = where.db()
    try:
        return bytes(conn.execute("SELECT value FROM kv WHERE namespace = 'tokens'").fetchone()[0])
    finally:
        conn.close()


def test_rotated_refresh_token_replaces_the_old_one(person: Person) -> None:
    connect(person, lifetime=200)
    person.env.standin.access_token_lifetime = 3600
    before = sealed_tokens(person.env)
    assert b"refresh_token" not in before  # sealed at rest
    assert seen(person)[NAMES["token"]]
    after = sealed_tokens(person.env)
    assert after != before  # the cache with the rotated refresh token replaced the old one
    assert person.env.standin.refresh_redemptions[ALICE.email] == 1


def test_revoked_refresh_token_marks_reconsent_required(person: Person) -> None:
    connect(person, lifetime=200)
    person.env.standin.revoke_user(ALICE.email)
    got = seen(person)
    assert got[NAMES["integration"]] == "reconsent_required"
    assert NAMES["token"] not in got
    record = person.env.integration(ALICE)
    assert record is not None and record["status"] == "reconsent_required"
    conn = person.env.db()
    left = conn.execute("SELECT count(*) FROM kv WHERE namespace = 'tokens'").fetchone()[0]
    conn.close()
    assert left == 0
    # every_sign_in: the next sign-in asks again.
    again = Person(person.env)
    assert again.at_microsoft(again.sign_in(user_id(ALICE, "mode-every_sign_in")))
    again.close()


def test_transient_refresh_failure_keeps_forwarding_the_valid_token(person: Person) -> None:
    connect(person, lifetime=200)  # due for refresh, but still valid for minutes
    person.env.standin.fail_token_requests(5, status=503)
    got = seen(person)
    assert got[NAMES["integration"]] == "connected"
    assert claims_of(got[NAMES["token"]])["oid"] == ALICE.object_id
    assert "retry in" in person.env.proxy.logs()


def test_disconnect_stops_forwarding_at_once(person: Person) -> None:
    connect(person)
    assert NAMES["token"] in seen(person)
    done = submit_form(person, person.get(PREFIX), "disconnect")
    assert done.status_code == 303  # POST-redirect-GET to the connection page
    assert person.get(done.headers["location"]).status_code == 200
    got = seen(person)
    assert NAMES["token"] not in got
    assert got[NAMES["integration"]] == "none"


def test_scope_drift_marks_reconsent_and_prompts_for_the_new_scopes(person: Person) -> None:
    connect(person)  # read-only calendars
    # The admin's rule for this user now asks for read-write calendars.
    later = Person(person.env)
    signed_in = later.sign_in(user_id(ALICE, "drift"))
    assert later.at_microsoft(signed_in)
    assert "Calendars.ReadWrite" in signed_in.headers["location"]
    record = person.env.integration(ALICE)
    assert record is not None and record["status"] == "reconsent_required"
    got = seen(later)  # the old grant still serves what it covers meanwhile
    assert got[NAMES["integration"]] == "reconsent_required"
    assert NAMES["token"] in got
    assert later.get(later.answer(signed_in)).status_code == 303
    record = person.env.integration(ALICE)
    assert record is not None and record["status"] == "connected"
    assert "Calendars.ReadWrite" in record["granted_scopes"]
    later.close()


# --- the ops listener: JWKS and the token broker ---------------------------------------------

BROKER_KEY = "a-broker-key-for-the-nightly-sync-000001"


@pytest.fixture
def with_ops(tmp_path: Path) -> Iterator[tuple[Person, str]]:
    port = free_port()
    extra = {"ops": {"port": port}, "broker": {"keys": [{"value": BROKER_KEY}]}}
    with consent_env(tmp_path, **extra) as env:
        wait_for_port(port)
        browser = Person(env)
        yield browser, f"http://127.0.0.1:{port}"
        browser.close()


def test_the_assertion_verifies_with_the_published_jwks(with_ops: tuple[Person, str]) -> None:
    person, ops = with_ops
    connect(person)
    token = seen(person)[NAMES["assertion"]]
    jwks = httpx.get(f"{ops}/.well-known/jwks.json").json()
    verified = jwt.decode(token, KeySet.import_key_set(jwks), algorithms=["ES256"])
    assert verified.claims["upn"] == ALICE.email
    assert verified.claims["aud"] == person.env.proxy.url
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    with pytest.raises(JoseError):
        jwt.decode(forged, KeySet.import_key_set(jwks), algorithms=["ES256"])


def broker(ops: str, user_key: str, key: str | None = BROKER_KEY) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key is not None else {}
    return httpx.get(f"{ops}/v1/users/{user_key}/token", headers=headers)


def test_token_broker(with_ops: tuple[Person, str]) -> None:
    person, ops = with_ops
    alice = f"{ALICE.tenant_id}.{ALICE.object_id}"
    assert broker(ops, alice, key=None).status_code == 401
    assert broker(ops, alice, key="wrong-key").status_code == 401
    assert broker(ops, alice, key=BROKER_KEY + "x").status_code == 401
    assert broker(ops, "nobody.nowhere").status_code == 404
    person.sign_in(user_id(ALICE, "mode-never"))  # known, not connected
    not_connected = broker(ops, alice)
    assert not_connected.status_code == 409
    assert not_connected.json() == {"error": "not_connected", "integration": "none"}
    connect(person)
    answer = broker(ops, alice)
    assert answer.status_code == 200
    body = answer.json()
    assert claims_of(body["access_token"])["oid"] == ALICE.object_id
    assert body["route"] == "graph" and body["expires_at"] > 0
    assert answer.headers["cache-control"] == "no-store"
    logs = person.env.proxy.logs()
    assert "token broker: key #0 asked for" in logs
    assert body["access_token"] not in logs and BROKER_KEY not in logs
    assert broker(ops, "a/../b").status_code in (401, 404)
    assert httpx.post(f"{ops}/v1/users/{alice}/token").status_code == 405


def test_status_command_reads_the_store(person: Person) -> None:
    connect(person)
    config = str(person.env.proxy.config_path)
    cli = [sys.executable, "-m", "proxy.cli", "status", "--config", config]
    text = subprocess.run([*cli, "--user", ALICE.email.upper()], capture_output=True, text=True)
    assert text.returncode == 0, text.stderr
    assert f"user: {ALICE.email}" in text.stdout
    assert "integration: connected" in text.stdout and "route: graph" in text.stdout
    as_json = subprocess.run(
        [*cli, "--user", f"{ALICE.tenant_id}.{ALICE.object_id}", "--json"],
        capture_output=True,
        text=True,
    )
    [record] = json.loads(as_json.stdout)
    assert record["status"] == "connected" and "account_id" not in record
    assert "eyJ" not in as_json.stdout  # no token, ever
    missing = subprocess.run(
        [*cli, "--user", "nobody@nowhere.example"], capture_output=True, text=True
    )
    assert missing.returncode == 1
    assert "no such user" in missing.stdout


def metric(ops: str, name: str) -> float:
    for line in httpx.get(f"{ops}/metrics").text.splitlines():
        if line.startswith(name):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not exposed")


def test_metrics_follow_the_journey(with_ops: tuple[Person, str]) -> None:
    person, ops = with_ops
    from .test_consent import BOB

    first = person.sign_in(user_id(BOB, "mode-every_sign_in"))
    person.get(person.answer(first, "back"))
    assert metric(ops, "consent_proxy_tenants_waiting_admin") == 1
    outcome = 'consent_proxy_consent_outcomes_total{outcome="admin_approval_required"}'
    assert metric(ops, outcome) == 1
    assert metric(ops, 'consent_proxy_prompts_total{action="consent",mode="every_sign_in"}') == 1
    assert metric(ops, 'consent_proxy_sign_ins_total{method="saml",outcome="recognised"}') == 1

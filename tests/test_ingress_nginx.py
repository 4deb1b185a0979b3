"""Behind nginx with the shipped examples/nginx/consent-proxy.conf: nginx carries the bytes,
consent-proxy answers its auth subrequests and sees the sign-in, the logout and its own
prefix. The whole journey, the anti-spoofing and the cache bounds, over the real servers."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .ingress import Ingress, behind, fresh_browser
from .jose import claims_of
from .test_consent import ALICE, BOB, CAROL, PREFIX, Env, Person, submit_form, user_id
from .test_tokens import NAMES, SPOOFS

MAX_AGE = 4  # forward_auth.max_age here: the bound on noticing a disconnect
UNCONNECTED = 1  # forward_auth.unconnected_max_age here


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Env, Ingress]]:
    work = tmp_path_factory.mktemp("nginx")
    forward_auth = {"max_age": MAX_AGE, "unconnected_max_age": UNCONNECTED}
    with behind("nginx", work, forward_auth=forward_auth) as running:
        yield running


@pytest.fixture
def person(front: tuple[Env, Ingress]) -> Iterator[Person]:
    with fresh_browser(front[0]) as fresh:
        yield fresh


def connect(person: Person, lifetime: int = 3600, who: str = "mode-every_sign_in") -> None:
    person.env.standin.access_token_lifetime = lifetime
    first = person.sign_in(user_id(ALICE, who))
    assert person.at_microsoft(first), first.headers
    landed = person.get(person.answer(first))
    assert landed.status_code == 303 and landed.headers["location"] == "/home"


def app_saw(person: Person, headers: list[tuple[str, str]] | None = None) -> dict[str, str]:
    response = person.get("/echo", headers=headers or [])
    assert response.status_code == 200, response.text
    seen: dict[str, str] = response.json()["headers"]
    return seen


def eventually_seen(person: Person, check: object, within: float) -> float:
    """Seconds until the app's view satisfies `check`; fails after `within`."""
    start = time.monotonic()
    while time.monotonic() - start < within:
        if check(app_saw(person)):  # type: ignore[operator]
            return time.monotonic() - start
        time.sleep(0.1)
    raise AssertionError(f"not within {within}s: {app_saw(person)}")


def test_the_whole_journey_through_nginx(person: Person) -> None:
    connect(person)
    got = app_saw(person)
    assert got[NAMES["user"]] == ALICE.email
    assert got[NAMES["tenant"]] == ALICE.tenant_id and got[NAMES["oid"]] == ALICE.object_id
    assert got[NAMES["integration"]] == "connected" and got[NAMES["route"]] == "graph"
    assert claims_of(got[NAMES["token"]])["oid"] == ALICE.object_id
    assert claims_of(got[NAMES["assertion"]])["upn"] == ALICE.email
    assert "x-request-id" not in got  # nginx carried it straight to the app, not the proxy


def test_anonymous_browsers_reach_the_app_without_identity(person: Person) -> None:
    got = app_saw(person)
    assert not any(k.startswith("x-consent-proxy") for k in got)


def spoofs() -> list[tuple[str, str]]:
    """A browser's copies of every identity and token header, in every spelling."""
    raw = [*SPOOFS, ("X-Consent-Proxy-User", "second@evil.example")]
    for name in NAMES.values():
        raw += [(name.title(), "forged"), (name.upper(), "forged")]
        raw += [(name.replace("-", sep), "forged") for sep in ("_", ".")]
        raw.append((name.replace("-", "_", 2).replace("-", "."), "forged"))  # mixed
    return raw


def forged_copies_never_reach_the_app(person: Person, signed_in: bool) -> None:
    if signed_in:
        connect(person)
    got = app_saw(person, spoofs())
    text = repr(got)
    assert "evil.example" not in text and "forged" not in text
    assert not any(k.replace("_", "-").replace(".", "-") != k for k in got if "consent" in k)
    if signed_in:
        assert got[NAMES["user"]] == ALICE.email
    else:
        assert not any("consent" in k for k in got)


@pytest.mark.parametrize("signed_in", [False, True])
def test_client_copies_never_reach_the_app(person: Person, signed_in: bool) -> None:
    forged_copies_never_reach_the_app(person, signed_in)


def test_the_auth_endpoint_is_not_reachable_from_a_browser(person: Person) -> None:
    connect(person)
    for method in ("GET", "POST"):
        answer = person.http.request(method, f"{person.env.origin}{PREFIX}auth")
        assert answer.status_code == 404
        assert not any(k.lower().startswith("x-consent-proxy") for k in answer.headers)


def test_sign_out_changes_the_cache_key_at_once(person: Person) -> None:
    connect(person)
    assert NAMES["token"] in app_saw(person)
    assert person.get("/logout").status_code == 303  # through the proxy: the session ends
    got = app_saw(person)
    assert not any(k.startswith("x-consent-proxy") for k in got)


def test_a_new_sign_in_changes_the_cache_key_at_once(person: Person) -> None:
    connect(person)
    assert app_saw(person)[NAMES["user"]] == ALICE.email
    person.sign_in(user_id(BOB, "mode-never"))
    assert app_saw(person)[NAMES["user"]] == BOB.email


def test_disconnect_shows_within_max_age(person: Person) -> None:
    connect(person)
    assert NAMES["token"] in app_saw(person)  # this answer is now cached by nginx
    done = submit_form(person, person.get(PREFIX), "disconnect")
    assert done.status_code == 303  # POST-redirect-GET to the connection page
    waited = eventually_seen(person, lambda got: NAMES["token"] not in got, MAX_AGE + 2)
    assert waited <= MAX_AGE + 1
    assert app_saw(person)[NAMES["integration"]] == "none"


def test_the_cache_answers_while_the_proxy_is_frozen(person: Person) -> None:
    connect(person)
    first = app_saw(person)[NAMES["token"]]
    proxy = person.env.proxy.proc
    assert proxy is not None
    proxy.send_signal(signal.SIGSTOP)  # an auth subrequest that reached it would hang
    try:
        started = time.monotonic()
        assert app_saw(person)[NAMES["token"]] == first
        assert time.monotonic() - started < 1
    finally:
        proxy.send_signal(signal.SIGCONT)


def test_a_new_connection_shows_within_the_unconnected_bound(person: Person) -> None:
    person.env.standin.access_token_lifetime = 3600
    first = person.sign_in(user_id(CAROL, "hybrid"))  # known to no earlier test
    assert app_saw(person)[NAMES["integration"]] == "none"  # cached, briefly
    person.get(person.answer(first))
    waited = eventually_seen(person, lambda got: NAMES["token"] in got, UNCONNECTED + 2)
    assert waited <= UNCONNECTED + 1
    assert app_saw(person)[NAMES["route"]] == "ews"


def test_a_token_due_for_refresh_is_never_served_from_the_cache(person: Person) -> None:
    connect(person, lifetime=200)  # below the refresh leeway: refreshed on the next check
    person.env.standin.revoke_user(ALICE.email)
    got = app_saw(person)
    assert got[NAMES["integration"]] == "reconsent_required"
    assert NAMES["token"] not in got


def test_auth_answers_say_how_long_they_may_be_reused(person: Person) -> None:
    env = person.env
    ask = f"{env.proxy.url}{PREFIX}auth"
    headers = {"X-Original-URI": "/home"}
    assert httpx.get(ask, headers=headers).headers["cache-control"] == f"max-age={UNCONNECTED}"
    connect(person)
    cookies = dict(person.http.cookies)
    answer = httpx.get(ask, headers=headers, cookies=cookies)
    assert answer.status_code == 200 and answer.headers[NAMES["user"]] == ALICE.email
    assert answer.headers["cache-control"] == f"max-age={MAX_AGE}"
    # An answer that ends the session (here: the app's session changed) is never cached,
    # and clears the proxy's cookie.
    ended = httpx.get(ask, headers=headers, cookies={**cookies, "app_session": "another"})
    assert ended.headers["cache-control"] == "no-store"
    assert NAMES["user"] not in ended.headers
    assert ended.headers["set-cookie"].startswith("consent_proxy=;")


def test_sign_in_and_reserved_pages_pass_through_the_proxy(person: Person) -> None:
    connect(person)
    page = person.get(PREFIX)
    assert page.status_code == 200 and "Connected" in page.text
    logs = person.env.proxy.logs()
    assert "session started" in logs and "Traceback" not in logs


def test_nginx_logs_no_token(front: tuple[Env, Ingress], person: Person) -> None:
    connect(person)
    token = app_saw(person)[NAMES["token"]]
    _, ingress = front
    assert token not in ingress.logs()
    assert "[emerg]" not in ingress.logs()


def reaches_the_app_without_the_proxy(kind: str, work: Path) -> None:
    """The proxy stops; the ingress still sends requests on, fast, without identity."""
    with behind(kind, work) as (env, ingress), fresh_browser(env) as person:
        connect(person)
        env.proxy.stop()
        started = time.monotonic()
        got = app_saw(person, spoofs())
        assert time.monotonic() - started < 5
        assert not any("consent" in k for k in got)
        assert ingress.proc.poll() is None


def test_the_app_is_reached_while_the_proxy_is_down(tmp_path: Path) -> None:
    reaches_the_app_without_the_proxy("nginx", tmp_path)

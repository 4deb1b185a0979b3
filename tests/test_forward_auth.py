"""The forward-auth endpoint on its own: which request it is asked about, whom it answers,
and that it never blocks (the journeys through real ingresses are in test_ingress_*.py)."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.app import ConsentProxy
from proxy.config import Settings
from proxy.identity.forward_auth import SCOPE_KEY, AuthAnswer, ForwardAuth
from proxy.identity.session import SessionCookie
from proxy.ops import metrics

from .servers import ProxyProcess, ThreadServer, free_port, running
from .sso_app import SsoApp
from .stored import session_settings

AUTH = "/.consent-proxy/auth"
SSO = {"endpoints": [{"type": "upstream", "path": "/login", "header": "X-User"}]}
HEADER_ENDPOINT = {"type": "upstream", "path": "/login/password", "header": "X-Authenticated-User"}


def settings(tmp_path: Path, **changes: Any) -> Settings:
    config: dict[str, Any] = {
        "upstream": {"url": "http://127.0.0.1:9"},
        "session": session_settings(),
        "sso": SSO,
        "store": {"path": str(tmp_path / "store.sqlite3")},
        "trusted_proxies": ["127.0.0.1/32"],
        "forward_auth": {"enabled": True},
        **changes,
    }
    return Settings.model_validate(config)


def ask(app: ConsentProxy, peer: str = "127.0.0.1", **kwargs: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=(peer, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://proxy") as client:
            return await client.get(AUTH, **kwargs)

    return asyncio.run(go())


def scope(path: str, headers: dict[str, str], query: bytes = b"") -> dict[str, Any]:
    return {
        "type": "http",
        "method": "GET",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }


async def _nothing(scope: Any, receive: Any, send: Any) -> None:
    return None


@pytest.mark.parametrize(
    ("headers", "path", "query", "expected"),
    [
        ({"X-Original-URI": "/a/b?x=1", "X-Original-Method": "post"}, AUTH, b"", "POST /a/b x=1"),
        ({"X-Forwarded-Uri": "/c", "X-Forwarded-Method": "PUT"}, AUTH, b"", "PUT /c "),
        ({"X-Original-URL": "https://app.example.com/d?y=2"}, AUTH, b"", "GET /d y=2"),
        ({}, AUTH + "/e/f", b"z=3", "GET /e/f z=3"),  # Envoy: the path follows ours
        ({}, AUTH, b"", "GET / "),
        ({"X-Original-URI": "//evil.example/x"}, AUTH, b"", "GET /x "),
        ({"X-Original-URI": "/log%6Fut?a=%20"}, AUTH, b"", "GET /logout a=%20"),
    ],
)
def test_the_request_asked_about(
    headers: dict[str, str], path: str, query: bytes, expected: str
) -> None:
    auth = ForwardAuth(_nothing, AUTH, ())
    original = auth.original(scope(path, headers, query))
    got = f"{original['method']} {original['path']} {original['query_string'].decode()}"
    assert got == expected
    assert original[SCOPE_KEY] is True


def test_an_anonymous_browser_gets_a_short_answer_without_identity(tmp_path: Path) -> None:
    answer = ask(ConsentProxy(settings(tmp_path)), headers={"X-Original-URI": "/"})
    assert answer.status_code == 200
    assert answer.headers["cache-control"] == "max-age=2"
    assert not any(k.startswith("x-consent-proxy") for k in answer.headers)


def test_only_a_trusted_ingress_is_answered(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = ConsentProxy(settings(tmp_path))
    refused = metrics.FORWARD_AUTH_ANSWERS.labels("refused")
    before = refused._value.get()
    with caplog.at_level(logging.WARNING, "consent_proxy.forward_auth"):
        for _ in range(3):
            answer = ask(app, peer="192.0.2.7")
            assert answer.status_code == 200 and answer.headers["cache-control"] == "no-store"
    assert refused._value.get() - before == 3  # counted every time, logged once
    assert [r.getMessage() for r in caplog.records] == [
        "forward-auth asked by 192.0.2.7, which is not in trusted_proxies: answered without "
        "identity"
    ]


def test_a_store_that_is_down_is_a_fast_answer_without_identity(tmp_path: Path) -> None:
    dead = {"type": "redis", "url": f"redis://127.0.0.1:{free_port()}/0", "timeout": 0.2}
    config = settings(tmp_path, store=dead)
    cookie = SessionCookie(config.session).sign("a-session-id")
    started = time.monotonic()
    cookies = f"consent_proxy={cookie}; app_session=x"
    answer = ask(ConsentProxy(config), headers={"X-Original-URI": "/", "Cookie": cookies})
    assert time.monotonic() - started < 2
    assert answer.status_code == 200
    assert not any(k.startswith("x-consent-proxy") for k in answer.headers)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"trusted_proxies": []}, "forward_auth.enabled: list the ingress in trusted_proxies"),
        ({"sso": {}}, "forward_auth.enabled: the answer names the signed-in user"),
    ],
)
def test_the_endpoint_needs_a_trusted_ingress_and_sign_ins(
    tmp_path: Path, changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        settings(tmp_path, **changes)


def test_off_by_default() -> None:
    assert Settings.model_validate({"upstream": {"url": "http://a"}}).forward_auth.enabled is False


def test_check_names_a_forward_auth_problem_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("upstream: {url: 'http://127.0.0.1:8080'}\nforward_auth: {enabled: true}\n")
    result = subprocess.run(
        [sys.executable, "-m", "proxy.cli", "check", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.startswith(f"{config}:") and result.stderr.count("\n") == 1
    assert result.stderr.endswith(
        " forward_auth.enabled: the answer names the signed-in user; configure sso.endpoints too\n"
    )


# --- over real servers: the same layers as a forwarded request ---------------------------------


@pytest.fixture(scope="module")
def signing_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    """A proxy whose app says who signed in (a header on /login/password), with /logout
    as a logout path, answering forward-auth questions from 127.0.0.1."""
    work = tmp_path_factory.mktemp("forward-auth")
    with running(ThreadServer(SsoApp().app())) as app:
        config = {
            "upstream": {"url": app.url},
            "session": session_settings(),
            "sso": {"endpoints": [HEADER_ENDPOINT], "logout_paths": ["/logout"]},
            "store": {"path": str(work / "store.sqlite3")},
            "trusted_proxies": ["127.0.0.1/32"],
            "forward_auth": {"enabled": True},
        }
        with running(ProxyProcess(config, work)) as proxy:
            yield proxy


def signed_in(proxy: ProxyProcess, user: str) -> str:
    response = httpx.get(f"{proxy.url}/login/password", params={"user": user})
    assert response.status_code == 303
    return "; ".join(f"{k}={v}" for k, v in response.cookies.items())


def ours(headers: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items() if k.lower().startswith("x-consent-proxy")}


def test_the_answer_carries_what_the_app_would_receive(signing_proxy: ProxyProcess) -> None:
    cookie = signed_in(signing_proxy, "dana@contoso.example")
    forwarded = httpx.get(f"{signing_proxy.url}/echo", headers={"Cookie": cookie})
    answer = httpx.get(
        f"{signing_proxy.url}{AUTH}", headers={"Cookie": cookie, "X-Original-URI": "/echo"}
    )
    assert answer.status_code == 200
    expected = ours(forwarded.json()["headers"])
    assert expected["x-consent-proxy-user"] == "dana@contoso.example"
    assert ours(answer.headers) == expected  # the assertion too: the same signer, cached


def test_a_logout_path_asked_about_ends_the_session(signing_proxy: ProxyProcess) -> None:
    cookie = signed_in(signing_proxy, "erin@contoso.example")
    ask = f"{signing_proxy.url}{AUTH}"
    assert ours(httpx.get(ask, headers={"Cookie": cookie, "X-Original-URI": "/home"}).headers)
    ended = httpx.get(ask, headers={"Cookie": cookie, "X-Original-URI": "/logout"})
    # As when forwarded: the logout request itself still says who is leaving.
    assert ended.status_code == 200 and ours(ended.headers)
    assert ended.headers["cache-control"] == "no-store"
    assert ended.headers["set-cookie"].startswith("consent_proxy=;")
    after = httpx.get(ask, headers={"Cookie": cookie, "X-Original-URI": "/home"})
    assert not ours(after.headers)  # the session is gone from the store, not just this answer
    assert "session ended for user" in signing_proxy.logs()


@pytest.mark.parametrize(
    ("expires_in", "ending", "expected"),
    [
        (None, False, 30),  # unconnected: its own bound, here capped by the assertion's
        (3600, False, 30),  # connected: max_age, capped by a quarter of the assertion's life
        (310, False, 10),  # until the refresh point (expiry minus the 300 s leeway)
        (200, False, 0),  # due for refresh: the next request must reach the proxy
        (3600, True, 0),  # the answer ends a session
    ],
)
def test_how_long_an_answer_may_be_reused(
    expires_in: int | None, ending: bool, expected: int
) -> None:
    answer = AuthAnswer(
        ["X-User", "X-Expires"],
        "X-Expires",
        max_age=300,
        unconnected_max_age=60,
        refresh_leeway=300,
        assertion_lifetime=120,
    )
    found = [(b"x-user", b"u")]
    if expires_in is not None:
        found.append((b"x-expires", str(int(time.time()) + expires_in).encode()))
    assert answer.reuse(found, ending) in (expected, expected - 1)  # a second may tick

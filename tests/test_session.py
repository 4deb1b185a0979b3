"""The proxy session: signed cookie, store record, bound to the upstream's session."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.config import Secret, SessionSettings
from proxy.identity.session import SessionCookie, request_cookies, upstream_cookie_change

from .servers import ProxyProcess, ThreadServer, running
from .sso_app import SsoApp
from .stored import SECRET, session_settings, stored

OLD_SECRET = "an-older-session-secret-still-accepted-000002"


def cookie_settings(*secrets: str, lifetime: float = 3600) -> SessionSettings:
    return SessionSettings(
        secrets=tuple(Secret(value=s) for s in secrets),  # type: ignore[arg-type]
        lifetime=lifetime,
        upstream_cookie="app_session",
    )


# --- the cookie itself ----------------------------------------------------------------------


def test_cookie_round_trip_and_tamper() -> None:
    cookie = SessionCookie(cookie_settings(SECRET))
    signed = cookie.sign("session-id-1")
    assert cookie.unsign(signed) == "session-id-1"
    assert "session-id-1" not in signed or "." in signed
    for bad in [
        # The last character's low bits are spare (see other_encoding): change one that counts.
        signed[:-2] + ("A" if signed[-2] != "A" else "B") + signed[-1],
        "",
        "garbage",
        "a.b.c",
        "\x00" * 10,
        signed + signed,
        "é" * 50,
    ]:
        assert cookie.unsign(bad) is None


def test_cookie_key_rotation_first_signs_all_verify() -> None:
    old = SessionCookie(cookie_settings(OLD_SECRET))
    rotated = SessionCookie(cookie_settings(SECRET, OLD_SECRET))
    issued_before = old.sign("sid-old")
    assert rotated.unsign(issued_before) == "sid-old"
    issued_after = rotated.sign("sid-new")
    assert SessionCookie(cookie_settings(SECRET)).unsign(issued_after) == "sid-new"
    assert old.unsign(issued_after) is None
    assert (
        SessionCookie(cookie_settings("some-other-secret-entirely-00000000")).unsign(issued_before)
        is None
    )


def test_cookie_expires_with_lifetime() -> None:
    cookie = SessionCookie(cookie_settings(SECRET, lifetime=61))
    signed = cookie.sign("sid")
    later = time.time() + 120
    import itsdangerous.timed as timed

    original = timed.TimestampSigner.get_timestamp
    timed.TimestampSigner.get_timestamp = lambda self: int(later)  # type: ignore[method-assign]
    try:
        assert cookie.unsign(signed) is None
    finally:
        timed.TimestampSigner.get_timestamp = original  # type: ignore[method-assign]


BASE64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def other_encoding(signed: str) -> str:
    """The same cookie with the spare low bits of its last base64 character set: a string
    that differs, yet decodes to the same signature (base64 decoders ignore those bits)."""
    return signed[:-1] + BASE64URL[BASE64URL.index(signed[-1]) ^ 1]


def test_several_strings_verify_as_one_cookie() -> None:
    cookie = SessionCookie(cookie_settings(SECRET))
    signed = cookie.sign("session-id-2")
    assert other_encoding(signed) != signed
    assert cookie.unsign(other_encoding(signed)) == "session-id-2"


def test_binding_is_keyed_and_survives_rotation() -> None:
    old = SessionCookie(cookie_settings(OLD_SECRET))
    binding = old.bind("upstream-cookie-value")
    assert "upstream-cookie-value" not in binding
    rotated = SessionCookie(cookie_settings(SECRET, OLD_SECRET))
    assert rotated.bound(binding, "upstream-cookie-value")
    assert not rotated.bound(binding, "another-value")
    assert not rotated.bound(binding, None)
    assert not rotated.bound(binding, "")
    assert not SessionCookie(cookie_settings(SECRET)).bound(binding, "upstream-cookie-value")


def test_cookie_header_attributes() -> None:
    settings = SessionSettings(
        secrets=(Secret(value=SECRET),), cookie_domain="app.example", lifetime=600
    )  # type: ignore[arg-type]
    name, value = SessionCookie(settings).header("v", 600)
    assert name == b"set-cookie"
    assert value == (
        b"consent_proxy=v; Path=/; Max-Age=600; Domain=app.example; Secure; HttpOnly; SameSite=Lax"
    )
    insecure = SessionCookie(settings.model_copy(update={"cookie_secure": False})).header("v", 1)
    assert b"Secure" not in insecure[1]


def test_request_cookie_parsing_is_lenient_and_first_wins() -> None:
    scope = {"headers": [(b"cookie", b'a=1; b="2"; junk; =x; a=3'), (b"cookie", b"c=4;;;")]}
    assert request_cookies(scope) == {"a": "1", "b": "2", "c": "4"}
    assert request_cookies({"headers": [(b"cookie", "é=ü".encode())]}) == {"Ã©": "Ã¼"}


@pytest.mark.parametrize(
    ("set_cookie", "expected"),
    [
        (b"app_session=abc; Path=/", (True, "abc")),
        (b"app_session=; Path=/", (True, None)),
        (b"app_session=abc; Max-Age=0", (True, None)),
        (b"app_session=abc; max-age=-1", (True, None)),
        (b"app_session=abc; Expires=Thu, 01 Jan 1970 00:00:00 GMT", (True, None)),
        (b"app_session=abc; Expires=Fri, 01 Jan 2100 00:00:00 GMT", (True, "abc")),
        (b"app_session=abc; Expires=not a date", (True, "abc")),
        (b"app_session_other=abc", (False, None)),
        (b"other=abc", (False, None)),
    ],
)
def test_upstream_cookie_change(set_cookie: bytes, expected: tuple[bool, str | None]) -> None:
    assert upstream_cookie_change([(b"set-cookie", set_cookie)], "app_session") == expected


# --- over real servers ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def sso_app() -> Iterator[SsoApp]:
    app = SsoApp()
    with running(ThreadServer(app.app())) as server:
        app.url = server.url  # type: ignore[attr-defined]
        yield app


def proxy_config(upstream: str, store: Path, endpoint: dict[str, Any]) -> dict[str, Any]:
    return {
        "upstream": {"url": upstream},
        "session": session_settings(),
        "sso": {"endpoints": [endpoint], "logout_paths": ["/logout"]},
        "store": {"path": str(store)},
    }


HEADER_ENDPOINT = {"type": "upstream", "path": "/login/password", "header": "X-Authenticated-User"}
WHOAMI_ENDPOINT = {
    "type": "upstream",
    "path": "/login/password",
    "whoami_path": "/api/me",
    "user_pointer": "/user/email",
    "name_pointer": "/user/name",
    "attribute_pointers": {"groups": "/user/groups"},
}


@pytest.fixture(scope="module")
def header_proxy(
    sso_app: SsoApp, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProxyProcess]:
    work = tmp_path_factory.mktemp("header-proxy")
    upstream = sso_app.url  # type: ignore[attr-defined]
    config = proxy_config(upstream, work / "store.sqlite3", HEADER_ENDPOINT)
    with running(ProxyProcess(config, work)) as proxy:
        yield proxy


def sessions(proxy: ProxyProcess) -> list[dict[str, Any]]:
    return stored(Path(yaml_store_path(proxy)), "session")


def yaml_store_path(proxy: ProxyProcess) -> str:
    import yaml

    return str(yaml.safe_load(proxy.config_path.read_text())["store"]["path"])


def set_cookies(response: httpx.Response) -> dict[str, str]:
    found = {}
    for header in response.headers.get_list("set-cookie"):
        name, _, rest = header.partition("=")
        found[name] = rest
    return found


def sign_in(proxy: ProxyProcess, user: str, **params: str) -> httpx.Response:
    return httpx.get(f"{proxy.url}/login/password", params={"user": user, **params})


def cookie_value(response: httpx.Response, name: str) -> str:
    return set_cookies(response)[name].split(";")[0]


def test_header_sign_in_starts_a_bound_session(header_proxy: ProxyProcess) -> None:
    response = sign_in(header_proxy, "alice@contoso.example")
    assert response.status_code == 303
    cookies = set_cookies(response)
    assert "app_session" in cookies and "consent_proxy" in cookies
    assert "HttpOnly" in cookies["consent_proxy"] and "SameSite=Lax" in cookies["consent_proxy"]
    assert "x-authenticated-user" not in response.headers  # the app's word is for the proxy only
    mine = [s for s in sessions(header_proxy) if s["email"] == "alice@contoso.example"]
    assert len(mine) == 1
    assert mine[0]["method"] == "upstream-header"
    assert cookie_value(response, "app_session") not in json.dumps(mine[0])  # only a keyed hash


def test_app_refusing_the_sign_in_means_no_session(header_proxy: ProxyProcess) -> None:
    response = sign_in(header_proxy, "refused@contoso.example", reject="1")
    assert response.status_code == 403
    assert "consent_proxy" not in set_cookies(response)
    assert not [s for s in sessions(header_proxy) if s["email"] == "refused@contoso.example"]


def test_browser_cannot_assert_identity_itself(header_proxy: ProxyProcess) -> None:
    response = httpx.get(
        f"{header_proxy.url}/login/password",
        params={"user": "bob@contoso.example", "no_header": "1"},
        headers={"X-Authenticated-User": "mallory@evil.example"},
    )
    assert response.status_code == 303
    assert "consent_proxy" not in set_cookies(response)
    assert not [s for s in sessions(header_proxy) if s["email"] == "mallory@evil.example"]


@pytest.mark.parametrize("asserted", ["", " ", "a" * 600, "{not json", '{"nope": 1}', '["list"]'])
def test_garbage_identity_header_is_no_session(header_proxy: ProxyProcess, asserted: str) -> None:
    response = sign_in(header_proxy, "x@contoso.example", **{"assert": asserted})
    assert response.status_code == 303
    assert "consent_proxy" not in set_cookies(response)
    assert "Traceback" not in header_proxy.logs()


def test_session_survives_ordinary_requests(header_proxy: ProxyProcess) -> None:
    signed_in = sign_in(header_proxy, "carol@contoso.example")
    jar = _jar(signed_in)
    for _ in range(3):
        response = httpx.get(f"{header_proxy.url}/page", cookies=jar)
        assert response.status_code == 200
        assert "consent_proxy" not in set_cookies(response)  # nothing to change
    assert [s for s in sessions(header_proxy) if s["email"] == "carol@contoso.example"]


def _jar(response: httpx.Response) -> dict[str, str]:
    return {name: cookie_value(response, name) for name in ("app_session", "consent_proxy")}


def test_logout_path_ends_the_session(header_proxy: ProxyProcess) -> None:
    jar = _jar(sign_in(header_proxy, "dave@contoso.example"))
    response = httpx.get(f"{header_proxy.url}/logout", cookies=jar)
    assert (
        set_cookies(response)["consent_proxy"].startswith(";")
        or "Max-Age=0" in set_cookies(response)["consent_proxy"]
    )
    assert not [s for s in sessions(header_proxy) if s["email"] == "dave@contoso.example"]


def identity(proxy: ProxyProcess, cookies: dict[str, str]) -> str | None:
    """Who the app is told this browser is (the echoed identity header), if anyone."""
    response = httpx.get(f"{proxy.url}/page", cookies=cookies)
    assert response.status_code == 200
    user: str | None = response.json()["headers"].get("x-consent-proxy-user")
    return user


@pytest.mark.parametrize("logout_with", ["canonical", "other"])
def test_logout_ends_every_encoding_of_the_cookie(
    header_proxy: ProxyProcess, logout_with: str
) -> None:
    user = f"nina-{logout_with}@contoso.example"
    jar = _jar(sign_in(header_proxy, user))
    encodings = {"canonical": jar["consent_proxy"], "other": other_encoding(jar["consent_proxy"])}
    [remaining] = [v for k, v in encodings.items() if k != logout_with]
    for value in (remaining, encodings[logout_with]):  # both verify: both resume the session
        assert identity(header_proxy, {**jar, "consent_proxy": value}) == user
    logout = {**jar, "consent_proxy": encodings[logout_with]}
    assert (
        "Max-Age=0"
        in set_cookies(httpx.get(f"{header_proxy.url}/logout", cookies=logout))["consent_proxy"]
    )
    # The app's cookie still matches the ended session's binding: only the proxy's own
    # bookkeeping stands between the remaining string and the user's identity.
    assert identity(header_proxy, {**jar, "consent_proxy": remaining}) is None
    assert not [s for s in sessions(header_proxy) if s["email"] == user]


def test_unverifiable_asserted_sign_in_ends_the_session(header_proxy: ProxyProcess) -> None:
    jar = _jar(sign_in(header_proxy, "olga@contoso.example"))
    # The app keeps its cookie and names a user the proxy cannot take its word for.
    response = httpx.get(
        f"{header_proxy.url}/login/password",
        params={"user": "x@contoso.example", "keep": "1", "assert": ""},
        cookies=jar,
    )
    assert response.status_code == 303
    assert "app_session" not in set_cookies(response)
    assert "Max-Age=0" in set_cookies(response)["consent_proxy"]
    assert identity(header_proxy, jar) is None
    assert not [s for s in sessions(header_proxy) if s["email"] == "olga@contoso.example"]


def test_switching_upstream_session_ends_the_proxy_session(header_proxy: ProxyProcess) -> None:
    alice = _jar(sign_in(header_proxy, "erin@contoso.example"))
    bob = _jar(sign_in(header_proxy, "frank@contoso.example"))
    # Erin's proxy cookie travels with Frank's app session: the proxy must not carry it over.
    mixed = {"consent_proxy": alice["consent_proxy"], "app_session": bob["app_session"]}
    response = httpx.get(f"{header_proxy.url}/page", cookies=mixed)
    assert response.status_code == 200
    assert "Max-Age=0" in set_cookies(response)["consent_proxy"]
    assert not [s for s in sessions(header_proxy) if s["email"] == "erin@contoso.example"]
    assert [s for s in sessions(header_proxy) if s["email"] == "frank@contoso.example"]


def test_missing_upstream_cookie_ends_the_proxy_session(header_proxy: ProxyProcess) -> None:
    jar = _jar(sign_in(header_proxy, "gina@contoso.example"))
    response = httpx.get(
        f"{header_proxy.url}/page", cookies={"consent_proxy": jar["consent_proxy"]}
    )
    assert "Max-Age=0" in set_cookies(response)["consent_proxy"]
    assert not [s for s in sessions(header_proxy) if s["email"] == "gina@contoso.example"]


def test_upstream_replacing_its_cookie_ends_the_proxy_session(header_proxy: ProxyProcess) -> None:
    jar = _jar(sign_in(header_proxy, "hank@contoso.example"))
    response = httpx.get(f"{header_proxy.url}/rotate", cookies=jar)
    assert "Max-Age=0" in set_cookies(response)["consent_proxy"]
    assert not [s for s in sessions(header_proxy) if s["email"] == "hank@contoso.example"]


def test_new_sign_in_replaces_the_old_session(header_proxy: ProxyProcess) -> None:
    first = _jar(sign_in(header_proxy, "ivan@contoso.example"))
    response = httpx.get(
        f"{header_proxy.url}/login/password", params={"user": "judy@contoso.example"}, cookies=first
    )
    assert "consent_proxy" in set_cookies(response)
    assert not [s for s in sessions(header_proxy) if s["email"] == "ivan@contoso.example"]
    assert [s for s in sessions(header_proxy) if s["email"] == "judy@contoso.example"]


@pytest.mark.parametrize(
    "cookie",
    [
        "consent_proxy=tampered.value.here",
        "consent_proxy=" + "A" * 4000,
        'consent_proxy="quoted"',
        "consent_proxy=",
        "consent_proxy=%00%ff",
    ],
)
def test_bad_proxy_cookie_is_ignored_and_cleared(header_proxy: ProxyProcess, cookie: str) -> None:
    response = httpx.get(f"{header_proxy.url}/page", headers={"cookie": cookie + "; app_session=x"})
    assert response.status_code == 200
    assert "Max-Age=0" in set_cookies(response).get("consent_proxy", "Max-Age=0")
    assert "Traceback" not in header_proxy.logs()


def test_non_ascii_cookie_bytes_do_not_crash(header_proxy: ProxyProcess) -> None:
    import socket

    with socket.create_connection(("127.0.0.1", header_proxy.port)) as sock:
        sock.sendall(
            b"GET /page HTTP/1.1\r\nHost: x\r\n"
            b"Cookie: consent_proxy=\xff\xfe; app_session=\xe9\r\n\r\n"
        )
        assert sock.recv(100).startswith(b"HTTP/1.1 200")
    assert httpx.get(f"{header_proxy.url}/page").status_code == 200


def test_whoami_sign_in(sso_app: SsoApp, tmp_path: Path) -> None:
    upstream = sso_app.url  # type: ignore[attr-defined]
    config = proxy_config(upstream, tmp_path / "store.sqlite3", WHOAMI_ENDPOINT)
    with running(ProxyProcess(config, tmp_path)) as proxy:
        response = sign_in(proxy, "kim@contoso.example", no_header="1")
        assert "consent_proxy" in set_cookies(response)
        [session] = sessions(proxy)
        assert session["email"] == "kim@contoso.example"
        assert session["name"] == "Kim"
        assert session["attributes"] == {"groups": ["Sales", "Everyone"]}
        assert session["method"] == "upstream-whoami"
        refused = sign_in(proxy, "lee@contoso.example", reject="1")
        assert "consent_proxy" not in set_cookies(refused)

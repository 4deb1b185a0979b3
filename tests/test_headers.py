"""Which headers cross the proxy, both ways: hop-by-hop, X-Forwarded-*, Host, Location,
Set-Cookie. Against real servers, except the pure rule checks at the end."""

from __future__ import annotations

import json
import socket
from typing import Any

import httpx
import pytest

from proxy.config import DEFAULT_MAX_HEAD_BYTES as MAX_HEADER_BYTES
from proxy.config import settings_from_data
from proxy.forward.headers import FORWARDED, RequestHeaderRules, fold

from .fixtures.forwarding import (
    Proxies,
    continued_exchange,
    echo,
    no_tracebacks,
    raw_exchange,
    received,
)
from .servers import ProxyProcess, ThreadServer

PUBLIC_URL = "https://app.example.test"


def forwarded_headers(data: dict[str, Any]) -> dict[str, list[str]]:
    """Every header the upstream got whose folded name is one the proxy sets."""
    out: dict[str, list[str]] = {}
    for key, value in data["headers"]:
        if fold(key.encode()) in FORWARDED:
            out.setdefault(key, []).append(value)
    return out


@pytest.fixture(scope="module")
def public_proxy(proxies: Proxies, upstream: ThreadServer) -> ProxyProcess:
    return proxies.get({"upstream": {"url": upstream.url}, "public_url": PUBLIC_URL})


# --- hop-by-hop ------------------------------------------------------------------------------


def test_hop_by_hop_request_headers_are_removed(client: httpx.Client) -> None:
    headers = {
        "Connection": "keep-alive, X-Conn-Named, x_conn_folded",
        "X-Conn-Named": "hop",
        "X.Conn.Folded": "hop",
        "Keep-Alive": "timeout=5",
        "Proxy-Connection": "keep-alive",
        "Proxy-Authorization": "Basic c2VjcmV0OnNlY3JldA==",
        "TE": "trailers",
        "Trailer": "X-Checksum",
        "Upgrade": "h2c",
        "X-Kept": "end-to-end",
    }
    data = echo(client.get("/echo/hop", headers=headers))
    names = {key for key, _ in data["headers"]}
    for gone in (
        "connection",
        "keep-alive",
        "x-conn-named",
        "x.conn.folded",
        "proxy-connection",
        "proxy-authorization",
        "te",
        "trailer",
        "upgrade",
    ):
        assert gone not in names
    assert received(data, "x-kept") == ["end-to-end"]


def test_connection_cannot_remove_the_body_framing(client: httpx.Client) -> None:
    data = echo(
        client.post("/echo/framing", content=b"12345", headers={"Connection": "Content-Length"})
    )
    assert data["body"] == "12345"
    assert received(data, "content-length") == ["5"]


def test_connection_cannot_remove_the_headers_the_proxy_sets(client: httpx.Client) -> None:
    # cf. Traefik CVE-2024-45410: the hop-by-hop list names the client's own headers only.
    named = "X-Request-ID, X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Host, X-Own-Hop"
    data = echo(client.get("/echo/own", headers={"Connection": named, "X-Own-Hop": "hop"}))
    assert len(received(data, "x-request-id")) == 1
    assert received(data, "x-forwarded-for") == ["127.0.0.1"]
    assert received(data, "x-forwarded-proto") == ["http"]
    assert len(received(data, "x-forwarded-host")) == 1
    assert received(data, "x-own-hop") == []


def test_hop_by_hop_response_headers_are_removed(client: httpx.Client) -> None:
    response = client.get("/hop")
    assert response.status_code == 200
    assert response.text == "hop"
    assert response.headers["x-kept"] == "yes"
    for gone in ("connection", "x-upstream-hop", "keep-alive", "proxy-authenticate", "trailer"):
        assert gone not in response.headers
    assert "upgrade" not in response.headers


def test_expect_100_continue_is_answered_once_the_upstream_wants_the_body(
    proxy: ProxyProcess,
) -> None:
    head = (
        b"POST /echo/expect HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\n"
        b"Expect: 100-continue\r\nConnection: close\r\n\r\n"
    )
    interim, answer = continued_exchange(proxy.port, head, b"hello")
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert answer.startswith(b"HTTP/1.1 200 ")
    data = json.loads(answer.partition(b"\r\n\r\n")[2])
    assert data["body"] == "hello"
    # The upstream was asked, and its 100 Continue is what let the body come.
    assert received(data, "expect") == ["100-continue"]


def _first_head(port: int, head: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), 10) as sock:
        sock.sendall(head)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    return answer.partition(b"\r\n\r\n")[0]


def test_an_upstream_refusing_the_body_is_answered_without_a_100_continue(
    proxy: ProxyProcess,
) -> None:
    # The client never sends its body: it waits for the 100 the upstream does not give.
    head = (
        b"POST /early-413 HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5000000\r\n"
        b"Expect: 100-continue\r\nConnection: close\r\n\r\n"
    )
    assert _first_head(proxy.port, head).startswith(b"HTTP/1.1 413 ")
    no_tracebacks(proxy)


@pytest.mark.parametrize("value", [b"200-ok", b"100-continue, x", b"\xff"])
def test_an_unknown_expectation_is_not_forwarded(proxy: ProxyProcess, value: bytes) -> None:
    with socket.create_connection(("127.0.0.1", proxy.port), 10) as sock:
        sock.sendall(
            b"POST /echo/expect HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\n"
            b"Expect: " + value + b"\r\nConnection: close\r\n\r\nhello"
        )
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    data = json.loads(answer.partition(b"\r\n\r\n")[2])
    assert data["body"] == "hello"
    assert received(data, "expect") == []


def test_headers_just_under_the_limit_pass(client: httpx.Client) -> None:
    cookies = "; ".join(f"c{i}={'v' * 3000}" for i in range(20))  # ~60 KB of cookies
    assert len(cookies) < MAX_HEADER_BYTES - 1000
    data = echo(client.get("/echo/big-cookies", headers={"cookie": cookies}))
    assert received(data, "cookie") == [cookies]


def test_headers_over_the_limit_are_refused_with_431(client: httpx.Client) -> None:
    response = client.get(
        "/echo/too-big",
        # Accept first: the head is refused while it is read, so a header after the
        # limit is never seen.
        headers=[("accept", "application/json"), ("x-big", "a" * MAX_HEADER_BYTES)],
    )
    assert response.status_code == 431
    assert response.json()["error"] == "request_headers_too_large"
    assert echo(client.get("/echo/after-431"))["path"] == "/echo/after-431"


# --- Set-Cookie --------------------------------------------------------------------------------


def test_set_cookies_are_kept_apart_and_internal_domains_dropped(client: httpx.Client) -> None:
    response = client.get("/cookies")
    assert response.headers.get_list("set-cookie") == [
        "first=1; Path=/; HttpOnly",
        "second=2; Path=/; Secure",
        "third=3; Expires=Wed, 21 Oct 2037 07:28:00 GMT",
        "fourth=4; Domain=other.example; Path=/",
        "fifth=5; Path=/",
    ]


def test_set_cookie_internal_domains_become_the_public_one(public_proxy: ProxyProcess) -> None:
    response = httpx.get(f"{public_proxy.url}/cookies")
    assert response.headers.get_list("set-cookie") == [
        "first=1; Domain=app.example.test; Path=/; HttpOnly",
        "second=2; Path=/; Domain=app.example.test; Secure",
        "third=3; Expires=Wed, 21 Oct 2037 07:28:00 GMT; Domain=app.example.test",
        "fourth=4; Domain=other.example; Path=/",
        "fifth=5; Path=/",
    ]


# --- Location and Content-Location -------------------------------------------------------------


def test_location_becomes_the_public_url(public_proxy: ProxyProcess) -> None:
    response = httpx.get(f"{public_proxy.url}/redirect", headers={"host": "ignored.example"})
    assert response.status_code == 302
    assert response.headers["location"] == f"{PUBLIC_URL}/landing?x=1#frag"
    assert response.headers["content-location"] == f"{PUBLIC_URL}/content"


def test_location_is_derived_from_host_without_public_url(proxy: ProxyProcess) -> None:
    response = httpx.get(f"{proxy.url}/redirect", headers={"host": "public.example:8443"})
    assert response.headers["location"] == "http://public.example:8443/landing?x=1#frag"
    assert response.headers["content-location"] == "http://public.example:8443/content"


def forwarded_location(proxy: ProxyProcess, host: str, proto: str, forwarded_host: str) -> str:
    """The Location of the upstream's redirect, asked with a Host and X-Forwarded-*."""
    headers = {"host": host, "x-forwarded-proto": proto, "x-forwarded-host": forwarded_host}
    return httpx.get(f"{proxy.url}/redirect", headers=headers).headers["location"]


def redirect_to(proxy: ProxyProcess, location: str, **headers: str) -> str:
    """The Location the client sees when the upstream redirects to `location`."""
    response = httpx.get(f"{proxy.url}/redirect", params={"to": location}, headers=headers)
    return response.headers["location"]


def test_location_ignores_forwarded_headers_of_an_untrusted_client(proxy: ProxyProcess) -> None:
    location = forwarded_location(proxy, "public.example", "https", "evil.example")
    assert location == "http://public.example/landing?x=1#frag"


def test_location_follows_forwarded_headers_of_a_trusted_proxy(
    trusting_proxy: ProxyProcess,
) -> None:
    location = forwarded_location(trusting_proxy, "internal-lb:8080", "https", "public.example")
    assert location == "https://public.example/landing?x=1#frag"


def test_location_takes_the_first_of_several_forwarded_values(
    trusting_proxy: ProxyProcess,
) -> None:
    location = forwarded_location(
        trusting_proxy, "internal-lb", "https, http", "public.example, lb.internal"
    )
    assert location == "https://public.example/landing?x=1#frag"


def test_location_without_any_host_names_the_address_the_client_used(
    proxy: ProxyProcess,
) -> None:
    # HTTP/1.0 needs no Host; a Location of "http:///landing" would be useless.
    answer = raw_exchange(proxy.port, b"GET /redirect HTTP/1.0\r\n\r\n")
    head = answer.partition(b"\r\n\r\n")[0].decode().lower().split("\r\n")
    assert head[0].startswith("http/1.1 302")
    assert f"location: http://127.0.0.1:{proxy.port}/landing?x=1#frag" in head
    no_tracebacks(proxy)


@pytest.mark.parametrize(
    "target",
    [
        "http://elsewhere.example/x",
        "https://127.0.0.1:{port}/other-scheme",
        "http://127.0.0.1:{port}0/longer-port",
        "http://127.0.0.1.evil.example:{port}/x",
        "http://127.0.0.1:{port}@evil.example/x",
        "/relative/path?q=1",
        "//elsewhere.example/x",
    ],
)
def test_location_elsewhere_is_untouched(
    proxy: ProxyProcess, upstream: ThreadServer, target: str
) -> None:
    location = target.format(port=upstream.port)
    assert redirect_to(proxy, location) == location


def test_location_match_ignores_case_of_scheme_and_host(
    proxy: ProxyProcess, upstream: ThreadServer
) -> None:
    location = f"HTTP://127.0.0.1:{upstream.port}/Upper?Q=1"
    assert redirect_to(proxy, location, host="pub.example") == "http://pub.example/Upper?Q=1"


def test_protocol_relative_location_naming_the_upstream_is_rewritten(
    proxy: ProxyProcess, upstream: ThreadServer
) -> None:
    location = f"//127.0.0.1:{upstream.port}/next?a=1"
    assert redirect_to(proxy, location, host="pub.example") == "http://pub.example/next?a=1"


# --- X-Forwarded-*, Forwarded, X-Real-IP, Host -------------------------------------------------

SPOOFED = [
    ("X-Forwarded-For", "1.1.1.1"),
    ("x-forwarded-for", "9.9.9.9"),
    ("X_Forwarded_For", "2.2.2.2"),
    ("x.forwarded.for", "3.3.3.3"),
    ("X-FORWARDED-FOR", "4.4.4.4"),
    ("x_FORWARDED.for", "4.4.4.5"),
    ("Forwarded", "for=5.5.5.5;proto=https;host=evil.example"),
    ("X-Real-IP", "6.6.6.6"),
    ("X_Real_IP", "6.6.6.7"),
    ("X-Forwarded-Proto", "https"),
    ("X_Forwarded_Proto", "https"),
    ("X-Forwarded-Host", "evil.example"),
    ("x.forwarded.host", "evil.example"),
    ("X-Forwarded-Port", "443"),
    ("X-Forwarded-Prefix", "/evil"),
]


def test_forwarded_headers_are_set_from_the_peer(client: httpx.Client) -> None:
    data = echo(client.get("/echo/xff", headers={"host": "public.example:8443"}))
    assert forwarded_headers(data) == {
        "x-forwarded-for": ["127.0.0.1"],
        "x-forwarded-proto": ["http"],
        "x-forwarded-host": ["public.example:8443"],
    }


def test_spoofed_forwarded_headers_are_removed_for_an_untrusted_client(
    client: httpx.Client,
) -> None:
    headers = [("host", "public.example"), *SPOOFED]
    data = echo(client.get("/echo/spoofed", headers=headers))
    assert forwarded_headers(data) == {
        "x-forwarded-for": ["127.0.0.1"],
        "x-forwarded-proto": ["http"],
        "x-forwarded-host": ["public.example"],
    }


def test_a_trusted_proxy_forwarded_headers_are_kept_and_extended(
    trusting_proxy: ProxyProcess,
) -> None:
    headers = [("host", "internal-lb"), *SPOOFED]
    data = echo(httpx.get(f"{trusting_proxy.url}/echo/trusted", headers=headers))
    # Only the canonical spellings are believed, even from a trusted proxy.
    assert forwarded_headers(data) == {
        "forwarded": ["for=5.5.5.5;proto=https;host=evil.example"],
        "x-real-ip": ["6.6.6.6"],
        "x-forwarded-proto": ["https"],
        "x-forwarded-host": ["evil.example"],
        "x-forwarded-port": ["443"],
        "x-forwarded-prefix": ["/evil"],
        "x-forwarded-for": ["1.1.1.1, 9.9.9.9, 4.4.4.4, 127.0.0.1"],
    }


def test_a_trusted_proxy_without_forwarded_headers_gets_them_set(
    trusting_proxy: ProxyProcess,
) -> None:
    data = echo(httpx.get(f"{trusting_proxy.url}/echo/plain", headers={"host": "h.example"}))
    assert forwarded_headers(data) == {
        "x-forwarded-for": ["127.0.0.1"],
        "x-forwarded-proto": ["http"],
        "x-forwarded-host": ["h.example"],
    }


def test_two_host_headers_are_a_400(proxy: ProxyProcess) -> None:
    request = (
        b"GET /echo HTTP/1.1\r\nHost: app.test\r\nHost: evil.example\r\nConnection: close\r\n\r\n"
    )
    answer = raw_exchange(proxy.port, request)
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"more than one Host header" in answer
    no_tracebacks(proxy)


def test_host_is_preserved_by_default(client: httpx.Client) -> None:
    data = echo(client.get("/echo/host", headers={"host": "public.example:8443"}))
    assert received(data, "host") == ["public.example:8443"]


def test_host_is_the_upstream_one_without_preserve_host(
    host_rewriting_proxy: ProxyProcess, upstream: ThreadServer
) -> None:
    response = httpx.get(f"{host_rewriting_proxy.url}/echo/host", headers={"host": "pub.example"})
    data = echo(response)
    assert received(data, "host") == [f"127.0.0.1:{upstream.port}"]
    assert received(data, "x-forwarded-host") == ["pub.example"]
    redirect = httpx.get(f"{host_rewriting_proxy.url}/redirect", headers={"host": "pub.example"})
    assert redirect.headers["location"] == "http://pub.example/landing?x=1#frag"


# --- the rules themselves -----------------------------------------------------------------------


def test_protected_headers_are_removed_whatever_their_spelling() -> None:
    settings = settings_from_data({"upstream": {"url": "http://127.0.0.1:9"}})
    rules = RequestHeaderRules(settings, protected=[b"X-Consent-User"])
    scope = {
        "type": "http",
        "client": ("203.0.113.9", 5000),
        "scheme": "https",
        "headers": [
            (b"host", b"app.example"),
            (b"x-consent-user", b"admin@example.com"),
            (b"x_consent_user", b"admin@example.com"),
            (b"x.consent.user", b"admin@example.com"),
            (b"x-consent-user-agent", b"kept"),
        ],
    }
    request = rules.upstream_request(scope)
    assert request.headers == [
        (b"x-consent-user-agent", b"kept"),
        (b"host", b"app.example"),
        (b"x-forwarded-for", b"203.0.113.9"),
        (b"x-forwarded-proto", b"https"),
        (b"x-forwarded-host", b"app.example"),
    ]
    assert request.proto == b"https"
    assert request.host == b"app.example"

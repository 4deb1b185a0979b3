"""WebSocket pass-through against a real upstream: messages, subprotocols, close codes,
refusals, and the headers the upstream's handshake sees."""

from __future__ import annotations

import json
import socket

import pytest
from websockets import ConnectionClosed, InvalidStatus
from websockets.frames import Close
from websockets.sync.client import ClientConnection, connect

from .fixtures.forwarding import Proxies, no_tracebacks, raw_exchange
from .servers import ProxyProcess, ThreadServer, eventually
from .upstream_app import RawUpstream, UpstreamApp

HANDSHAKE = (
    b"GET /ws HTTP/1.1\r\nHost: %b\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def ws_url(proxy: ProxyProcess, path: str = "/ws") -> str:
    return f"ws://127.0.0.1:{proxy.port}{path}"


def open_ws(proxy: ProxyProcess, path: str = "/ws", **options: object) -> ClientConnection:
    return connect(ws_url(proxy, path), open_timeout=10, close_timeout=5, **options)  # type: ignore[arg-type]


def upstream_headers(ws: ClientConnection) -> dict[str, list[str]]:
    ws.send("headers")
    reply = ws.recv(timeout=10)
    assert isinstance(reply, str)
    out: dict[str, list[str]] = {}
    for name, value in json.loads(reply):
        out.setdefault(name, []).append(value)
    return out


def test_text_messages_are_echoed(proxy: ProxyProcess) -> None:
    with open_ws(proxy) as ws:
        for text in ("hello", "", "ünïcødé ✓", "x" * 100_000):
            ws.send(text)
            assert ws.recv(timeout=10) == text


def test_binary_messages_are_echoed(proxy: ProxyProcess) -> None:
    with open_ws(proxy) as ws:
        for data in (b"\x00\x01\x02", bytes(range(256)) * 4096, b""):
            ws.send(data)
            assert ws.recv(timeout=10) == data


def test_many_messages_keep_their_order(proxy: ProxyProcess) -> None:
    with open_ws(proxy) as ws:
        for i in range(200):
            ws.send(f"m{i}" if i % 2 else f"m{i}".encode())
        replies = [ws.recv(timeout=10) for _ in range(200)]
    assert replies == [f"m{i}" if i % 2 else f"m{i}".encode() for i in range(200)]


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [
        (["chat.v1", "chat.v2"], "chat.v2"),  # the upstream's preference, not the client's
        (["chat.v1"], "chat.v1"),
        (["unknown"], None),
        (None, None),
    ],
)
def test_the_upstream_chooses_the_subprotocol(
    proxy: ProxyProcess, offered: list[str] | None, chosen: str | None
) -> None:
    with open_ws(proxy, subprotocols=offered) as ws:
        assert ws.subprotocol == chosen
        ws.send("still works")
        assert ws.recv(timeout=10) == "still works"


def closed_by_upstream(proxy: ProxyProcess, command: str) -> Close:
    """The close frame the client receives after asking the upstream to `close CODE REASON`."""
    with open_ws(proxy) as ws:
        ws.send(command)
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd is not None
    return closed.value.rcvd


def test_upstream_close_code_and_reason_reach_the_client(proxy: ProxyProcess) -> None:
    received = closed_by_upstream(proxy, "close 4001 bye now")
    assert received.code == 4001
    assert received.reason == "bye now"


def test_upstream_normal_close_reaches_the_client(proxy: ProxyProcess) -> None:
    assert closed_by_upstream(proxy, "close 1000 done").code == 1000


def test_client_close_code_and_reason_reach_the_upstream(
    proxy: ProxyProcess, upstream_app: UpstreamApp, tag: str
) -> None:
    with open_ws(proxy, f"/ws?tag={tag}") as ws:
        ws.send("ping")
        assert ws.recv(timeout=10) == "ping"
        ws.close(4002, "client leaving")
    assert eventually(lambda: bool(upstream_app.state.snapshot(tag)["ws_closes"]))
    assert upstream_app.state.snapshot(tag)["ws_closes"] == [(4002, "client leaving")]


def _masked_text(text: bytes) -> bytes:
    mask = b"\x01\x02\x03\x04"
    return (
        b"\x81"
        + bytes([0x80 | len(text)])
        + mask
        + bytes(byte ^ mask[i % 4] for i, byte in enumerate(text))
    )


def test_connection_cannot_strip_the_proxy_headers_from_a_handshake(proxy: ProxyProcess) -> None:
    handshake = (
        (HANDSHAKE % b"app.test")
        .replace(
            b"Connection: Upgrade", b"Connection: Upgrade, X-Request-ID, X-Forwarded-For, X-Own"
        )
        .replace(b"\r\n\r\n", b"\r\nX-Own: hop\r\n\r\n")
    )
    with socket.create_connection(("127.0.0.1", proxy.port), 10) as sock:
        sock.sendall(handshake)
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 101 ")
        sock.sendall(_masked_text(b"headers"))
        data = answer.partition(b"\r\n\r\n")[2]
        while len(data) < 2 or len(data) < 4 + int.from_bytes(data[2:4], "big"):
            data += sock.recv(65536)
    assert data[1] == 126  # a text frame of 126..65535 bytes, unmasked
    names = [name for name, _ in json.loads(data[4 : 4 + int.from_bytes(data[2:4], "big")])]
    assert names.count("x-request-id") == 1
    assert names.count("x-forwarded-for") == 1
    assert "x-own" not in names


def test_client_vanishing_closes_the_upstream_side(
    proxy: ProxyProcess, upstream_app: UpstreamApp, tag: str
) -> None:
    with socket.create_connection(("127.0.0.1", proxy.port), 10) as sock:
        sock.sendall(HANDSHAKE.replace(b"/ws", f"/ws?tag={tag}".encode()) % b"app.test")
        assert sock.recv(65536).startswith(b"HTTP/1.1 101 ")
    assert eventually(lambda: bool(upstream_app.state.snapshot(tag)["ws_closes"]))
    # 1006 (no close frame) may not be sent on; the upstream hears "going away".
    assert upstream_app.state.snapshot(tag)["ws_closes"] == [(1001, "")]
    no_tracebacks(proxy)


def test_a_refused_handshake_is_relayed(proxy: ProxyProcess) -> None:
    with pytest.raises(InvalidStatus) as refused:
        open_ws(proxy, "/ws-deny")
    assert refused.value.response.status_code == 403
    assert refused.value.response.body == b"go away"


def test_the_upstreams_handshake_response_headers_reach_the_client(proxy: ProxyProcess) -> None:
    with open_ws(proxy, "/ws-cookie") as ws:
        assert ws.response is not None
        headers = ws.response.headers
        ws.send("still works")
        assert ws.recv(timeout=10) == "still works"
    # Cookies each kept apart, the internal domain rewritten as for plain HTTP.
    assert headers.get_all("set-cookie") == ["ws=1; Path=/; HttpOnly", "room=2; Path=/"]
    assert headers.get_all("x-room") == ["lobby"]
    # The handshake's own headers are the proxy's, once each.
    assert headers.get_all("upgrade") == ["websocket"]
    assert len(headers.get_all("sec-websocket-accept")) == 1


def test_upstream_down_is_a_502(refused_proxy: ProxyProcess) -> None:
    with pytest.raises(InvalidStatus) as refused:
        open_ws(refused_proxy, "/ws")
    assert refused.value.response.status_code == 502
    assert b"upstream_unavailable" in (refused.value.response.body or b"")
    no_tracebacks(refused_proxy)


def test_an_upstream_that_never_answers_the_handshake_is_a_504(
    proxies: Proxies, raw_upstream: RawUpstream
) -> None:
    proxy = proxies.get({"upstream": {"url": raw_upstream.url, "timeouts": {"connect": 0.5}}})
    with pytest.raises(InvalidStatus) as refused:
        open_ws(proxy, "/hang")
    assert refused.value.response.status_code == 504
    assert b"upstream_timeout" in (refused.value.response.body or b"")
    no_tracebacks(proxy)


def test_path_and_query_reach_the_upstream(proxy: ProxyProcess) -> None:
    with open_ws(proxy, "/ws/room%2F1?token=a%20b&x=1") as ws:
        ws.send("echo")
        assert ws.recv(timeout=10) == "echo"


def test_handshake_headers_follow_the_http_rules(proxy: ProxyProcess) -> None:
    spoofed = {"X-Forwarded-For": "6.6.6.6", "X_Forwarded_For": "6.6.6.7", "X-Kept": "yes"}
    with open_ws(proxy, additional_headers=spoofed) as ws:
        seen = upstream_headers(ws)
    assert seen["host"] == [f"127.0.0.1:{proxy.port}"]
    assert seen["x-forwarded-for"] == ["127.0.0.1"]
    assert seen["x-forwarded-proto"] == ["http"]  # not "ws": apps compare it with http(s)
    assert seen["x-forwarded-host"] == [f"127.0.0.1:{proxy.port}"]
    assert seen["x-kept"] == ["yes"]
    assert "x_forwarded_for" not in seen
    assert len(seen["sec-websocket-key"]) == 1


def test_host_sent_upstream_is_the_clients_even_behind_a_trusted_proxy(
    trusting_proxy: ProxyProcess,
) -> None:
    # As for plain HTTP: X-Forwarded-Host tells the public host, Host stays the client's.
    headers = {"X-Forwarded-Host": "public.example", "X-Forwarded-Proto": "wss"}
    with open_ws(trusting_proxy, additional_headers=headers) as ws:
        seen = upstream_headers(ws)
    assert seen["host"] == [f"127.0.0.1:{trusting_proxy.port}"]
    assert seen["x-forwarded-host"] == ["public.example"]
    assert seen["x-forwarded-proto"] == ["wss"]


def test_host_is_the_upstream_one_without_preserve_host(
    host_rewriting_proxy: ProxyProcess, upstream: ThreadServer
) -> None:
    with open_ws(host_rewriting_proxy) as ws:
        seen = upstream_headers(ws)
    assert seen["host"] == [f"127.0.0.1:{upstream.port}"]
    assert seen["x-forwarded-host"] == [f"127.0.0.1:{host_rewriting_proxy.port}"]


@pytest.mark.parametrize(
    "host", [b"user@evil.example", b"user:secret@evil.example", b"bad host", b"[::1", b"h:99999"]
)
def test_an_unusable_host_is_a_400_not_a_crash(proxy: ProxyProcess, host: bytes) -> None:
    answer = raw_exchange(proxy.port, HANDSHAKE % host)
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:300]
    no_tracebacks(proxy)

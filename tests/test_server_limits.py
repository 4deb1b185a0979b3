"""The public listener's limits, over real sockets against `consent-proxy run`: a huge
request head is refused while it is being read, a slow head is timed out, and connections
over the cap are answered 503. Ordinary traffic, large heads under the limit and
WebSockets are not affected."""

from __future__ import annotations

import json
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from websockets.sync.client import connect

from proxy.config import settings_from_data
from proxy.errors import ConfigError
from tests.fixtures.forwarding import Proxies, no_tracebacks, raw_exchange, received

from .servers import ProxyProcess, ThreadServer, free_port, wait_for_port

MiB = 1024 * 1024
HEAD_TIMEOUT = 1.0
MAX_CONNECTIONS = 3


@pytest.fixture(scope="module")
def limited(proxies: Proxies, upstream: ThreadServer) -> ProxyProcess:
    return proxies.get(
        {
            "upstream": {"url": upstream.url},
            "server": {"head_timeout": HEAD_TIMEOUT, "max_connections": MAX_CONNECTIONS},
        }
    )


def _answered(sock: socket.socket) -> bool:
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable)


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def _one_response(sock: socket.socket) -> bytes:
    """One response with a Content-Length, read from a kept-alive connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.lower().partition(b"content-length: ")[2].split(b"\r\n")[0])
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def test_a_48_mib_head_is_refused_while_it_is_read(proxy: ProxyProcess) -> None:
    process = psutil.Process(proxy.proc.pid)  # type: ignore[union-attr]
    before = process.memory_info().rss
    line = b"x-filler: " + b"a" * 1000 + b"\r\n"
    chunk = line * 64  # 64 KiB of header lines at a time
    sent = 0
    with socket.create_connection(("127.0.0.1", proxy.port), 10) as sock:
        sock.sendall(b"GET /echo/huge HTTP/1.1\r\nhost: app.example\r\naccept: text/html\r\n")
        try:
            while sent < 48 * MiB and not _answered(sock):
                sock.sendall(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = _read_all(sock)
    growth = process.memory_info().rss - before
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b"connection: close" in answer.lower()
    assert b"Request headers too large" in answer
    # Refused a few reads after the limit, not after the whole head: the rest was never sent.
    assert sent < 4 * MiB, sent
    assert growth < 8 * MiB, growth
    no_tracebacks(proxy)


def test_the_refusal_speaks_json_to_api_clients(proxy: ProxyProcess) -> None:
    head = (
        b"GET /echo/huge HTTP/1.1\r\nhost: app.example\r\naccept: application/json\r\n"
        + b"x-big: " + b"a" * (128 * 1024) + b"\r\n\r\n"
    )  # fmt: skip
    answer = raw_exchange(proxy.port, head)
    assert answer.startswith(b"HTTP/1.1 431 ")
    assert b'"error": "request_headers_too_large"' in answer


def test_a_head_under_the_limit_with_its_body_in_the_same_read_passes(
    proxy: ProxyProcess,
) -> None:
    # ~60 KiB of head and 200 KiB of body in one write: the proxy reads both at once.
    cookie = b"; ".join(b"c%d=%b" % (i, b"v" * 3000) for i in range(20))
    body = b"b" * (200 * 1024)
    request = (
        b"POST /echo/under HTTP/1.1\r\nhost: app.example\r\ncookie: %b\r\n"
        b"content-length: %d\r\nconnection: close\r\n\r\n%b" % (cookie, len(body), body)
    )
    answer = raw_exchange(proxy.port, request)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    data = json.loads(answer.partition(b"\r\n\r\n")[2])
    assert data["length"] == len(body)
    assert received(data, "cookie") == [cookie.decode()]


def test_a_slow_head_is_answered_408_and_closed_after_the_timeout(limited: ProxyProcess) -> None:
    with socket.create_connection(("127.0.0.1", limited.port), 10) as sock:
        start = time.monotonic()
        sock.sendall(b"GET /echo/slow HTTP/1.1\r\nhost: app.example\r\n")  # and no more
        answer = _read_all(sock)
        elapsed = time.monotonic() - start
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert HEAD_TIMEOUT * 0.9 <= elapsed < HEAD_TIMEOUT + 3, elapsed


def test_a_connection_that_sends_nothing_is_closed_after_the_timeout(
    limited: ProxyProcess,
) -> None:
    with socket.create_connection(("127.0.0.1", limited.port), 10) as sock:
        start = time.monotonic()
        assert _read_all(sock) == b""
        assert time.monotonic() - start < HEAD_TIMEOUT + 3


def test_many_slow_heads_are_all_closed(limited: ProxyProcess) -> None:
    socks = [socket.create_connection(("127.0.0.1", limited.port), 10) for _ in range(50)]
    try:
        for sock in socks:
            sock.sendall(b"GET / HTTP/1.1\r\nhost: a\r\nx-half: ")
        time.sleep(HEAD_TIMEOUT + 2.5)
        closed = sum(_read_all(sock).startswith(b"HTTP/1.1 408 ") for sock in socks)
    finally:
        for sock in socks:
            sock.close()
    assert closed == len(socks)


def test_a_kept_alive_connection_times_out_only_a_head_that_stalls(
    limited: ProxyProcess,
) -> None:
    request = b"GET /echo/keep HTTP/1.1\r\nhost: app.example\r\n\r\n"
    with socket.create_connection(("127.0.0.1", limited.port), 10) as sock:
        for _ in range(2):  # answered, then answered again well after the head timeout
            sock.sendall(request)
            assert _one_response(sock).startswith(b"HTTP/1.1 200 ")
            time.sleep(HEAD_TIMEOUT * 0.6)
        sock.sendall(b"GET /echo/keep HTTP/1.1\r\n")
        assert _read_all(sock).startswith(b"HTTP/1.1 408 ")


def test_connections_over_the_cap_are_answered_503(limited: ProxyProcess) -> None:
    request = b"GET /echo/cap HTTP/1.1\r\nhost: app.example\r\n\r\n"
    held = [socket.create_connection(("127.0.0.1", limited.port), 10) for _ in range(3)]
    try:
        for sock in held:  # kept alive, each one counted
            sock.sendall(request)
            assert _one_response(sock).startswith(b"HTTP/1.1 200 ")
        answer = raw_exchange(limited.port, request)
        assert answer.startswith(b"HTTP/1.1 503 "), answer[:200]
        held.pop().close()
        time.sleep(0.2)
        answer = raw_exchange(
            limited.port, request.replace(b"\r\n\r\n", b"\r\nconnection: close\r\n\r\n")
        )
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    finally:
        for sock in held:
            sock.close()


def test_websockets_pass_the_limited_listener(limited: ProxyProcess) -> None:
    with connect(f"ws://127.0.0.1:{limited.port}/ws", open_timeout=10) as ws:
        ws.send("hello")
        assert ws.recv(timeout=10) == "hello"


def test_ordinary_requests_pass_the_limited_listener(limited: ProxyProcess) -> None:
    answer = raw_exchange(
        limited.port, b"GET /echo/plain HTTP/1.1\r\nhost: app.example\r\nconnection: close\r\n\r\n"
    )
    assert answer.startswith(b"HTTP/1.1 200 ")
    data = json.loads(answer.partition(b"\r\n\r\n")[2])
    assert received(data, "host") == ["app.example"]


def test_the_limits_have_defaults_and_are_validated() -> None:
    settings = settings_from_data({"upstream": {"url": "http://127.0.0.1:8000"}})
    assert settings.server.max_head_bytes == 64 * 1024
    assert settings.server.head_timeout == 10
    assert settings.server.max_connections == 1024
    bad = {"max_head_bytes": 100, "head_timeout": 0, "max_connections": 0, "max_heads": 1}
    with pytest.raises(ConfigError) as error:
        settings_from_data({"upstream": {"url": "http://127.0.0.1:8000"}, "server": bad})
    text = "\n".join(error.value.problems)
    for key in bad:
        assert f"server.{key}" in text, text


def test_a_raised_limit_lets_a_larger_head_through(
    proxies: Proxies, upstream: ThreadServer
) -> None:
    roomy = proxies.get(
        {"upstream": {"url": upstream.url}, "server": {"max_head_bytes": 256 * 1024}}
    )
    cookie = b"a=" + b"v" * (150 * 1024)
    request = b"GET /echo/roomy HTTP/1.1\r\nhost: app.example\r\ncookie: %b\r\n" % cookie
    answer = raw_exchange(roomy.port, request + b"connection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    answer = raw_exchange(roomy.port, request + b"x-more: " + cookie + b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]


def test_a_websocket_outlives_the_head_timeout(limited: ProxyProcess) -> None:
    with connect(f"ws://127.0.0.1:{limited.port}/ws", open_timeout=10) as ws:
        time.sleep(HEAD_TIMEOUT * 2.5)
        ws.send("still here")
        assert ws.recv(timeout=10) == "still here"


def test_a_slow_answer_is_not_a_slow_head(limited: ProxyProcess) -> None:
    request = b"GET /slow?delay=%g HTTP/1.1\r\nhost: app.example\r\n\r\n" % (HEAD_TIMEOUT * 2.5)
    with socket.create_connection(("127.0.0.1", limited.port), 10) as sock:
        sock.sendall(request)
        assert _one_response(sock).endswith(b"slow answer")
        sock.sendall(request)  # and the connection is still good for another
        assert _one_response(sock).endswith(b"slow answer")


def test_every_worker_has_the_limits(tmp_path: Path, upstream: ThreadServer) -> None:
    port = free_port()
    config = tmp_path / "workers.yaml"
    config.write_text(
        f"upstream: {{url: '{upstream.url}'}}\nops: {{port: 0}}\nserver: {{head_timeout: 1}}\n"
    )
    run = [sys.executable, "-m", "proxy.cli", "run", "--config", str(config)]
    proc = subprocess.Popen(
        [*run, "--port", str(port), "--workers", "2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, proc=proc, timeout=30)
        socks = [socket.create_connection(("127.0.0.1", port), 10) for _ in range(6)]
        for sock in socks:  # spread over both workers by the kernel
            sock.sendall(b"GET / HTTP/1.1\r\nhost: a\r\nx-half: ")
        answers = [_read_all(sock) for sock in socks]
        for sock in socks:
            sock.close()
    finally:
        proc.terminate()
        proc.wait(20)
    assert all(answer.startswith(b"HTTP/1.1 408 ") for answer in answers), answers

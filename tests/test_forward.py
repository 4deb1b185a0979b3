"""The forwarding core against real servers: methods, bodies, streaming, failures, reuse."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import socket
import threading
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import psutil
import pytest

from .fixtures.forwarding import (
    Proxies,
    continued_exchange,
    echo,
    no_tracebacks,
    raw_exchange,
    received,
    upstream_stats,
)
from .servers import ProxyProcess, ThreadServer, eventually
from .upstream_app import RawUpstream, UpstreamApp, pattern, pattern_crc

MiB = 1024 * 1024
BIG = 200 * MiB
RSS_GROWTH_LIMIT = 60 * MiB


class RssSampler:
    """The peak resident memory of a process, sampled in a thread while a transfer runs."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.baseline = self.process.memory_info().rss
        self.peak = self.baseline
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            self.samples += 1
            self._stop.wait(0.01)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth(self) -> int:
        return self.peak - self.baseline


def pid(proxy: ProxyProcess) -> int:
    assert proxy.proc is not None
    return proxy.proc.pid


def parse_raw_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


@pytest.fixture(scope="module")
def slow_proxy(proxies: Proxies, upstream: ThreadServer) -> ProxyProcess:
    """Gives up on the upstream after half a second."""
    return proxies.get({"upstream": {"url": upstream.url, "timeouts": {"read": 0.5}}})


@pytest.fixture(scope="module")
def raw_proxy(proxies: Proxies, raw_upstream: RawUpstream) -> ProxyProcess:
    return proxies.get({"upstream": {"url": raw_upstream.url}})


@pytest.fixture(scope="module")
def dying_proxy(proxies: Proxies, upstream: ThreadServer) -> ProxyProcess:
    """Its own process, so its log shows only what the dying upstream caused."""
    return proxies.get({"upstream": {"url": upstream.url}}, name="dying")


# --- methods, targets, bodies ----------------------------------------------------------------

METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND"]


@pytest.mark.parametrize("method", METHODS)
def test_method_path_query_and_body_reach_the_upstream(client: httpx.Client, method: str) -> None:
    body = f"body of a {method} request".encode()
    response = client.request(method, "/echo/some/path?b=2&a=1&a=3", content=body)
    data = echo(response)
    assert data["method"] == method
    assert data["path"] == "/echo/some/path"
    assert data["query_string"] == "b=2&a=1&a=3"
    assert data["body"] == body.decode()
    assert received(data, "content-length") == [str(len(body))]


def test_head_reaches_the_upstream_and_gets_no_body(client: httpx.Client) -> None:
    response = client.head("/echo/head?x=1")
    assert response.status_code == 200
    assert response.headers["x-echo-method"] == "HEAD"
    assert int(response.headers["content-length"]) > 0  # the length a GET would have
    assert response.content == b""
    # The connection is still in step: the next request on it gets its own answer.
    assert echo(client.get("/echo/after-head"))["path"] == "/echo/after-head"


def test_head_of_a_large_resource(client: httpx.Client) -> None:
    response = client.head("/stream", params={"size": str(50 * MiB)})
    assert response.headers["content-length"] == str(50 * MiB)
    assert response.content == b""
    assert echo(client.get("/echo/after"))["method"] == "GET"


def test_raw_path_and_query_reach_the_upstream_byte_for_byte(proxy: ProxyProcess) -> None:
    path = b"/echo/a%2Fb/%7Euser;p=1/caf%C3%A9/%20sp"
    query = b"q=%2F%20x+y&empty=&flag&pct=%25zz&utf=%E2%82%AC&slash=/?&b=%3d"
    request = b"GET %b?%b HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n" % (path, query)
    status, _, body = parse_raw_response(raw_exchange(proxy.port, request))
    assert status == 200
    data = json.loads(body)
    assert data["raw_path"] == path.decode()
    assert data["query_string"] == query.decode()


def test_empty_post_has_no_body_and_content_length_zero(client: httpx.Client) -> None:
    data = echo(client.post("/echo/empty", content=b""))
    assert data["length"] == 0
    assert received(data, "content-length") == ["0"]
    assert received(data, "transfer-encoding") == []


def test_chunked_request_body_is_forwarded_chunked(client: httpx.Client) -> None:
    def parts() -> Iterator[bytes]:
        yield b"first,"
        yield b""
        yield b"second," * 1000
        yield b"end"

    data = echo(client.post("/echo/chunked", content=parts()))
    expected = b"first," + b"second," * 1000 + b"end"
    assert data["body"] == expected.decode()
    assert received(data, "transfer-encoding") == ["chunked"]
    assert received(data, "content-length") == []


def _dechunk(body: bytes) -> bytes:
    out = bytearray()
    while True:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return bytes(out)
        out += body[:size]
        body = body[size + 2 :]


def test_an_answer_streamed_mid_upload_flows_while_the_body_is_sent(
    proxies: Proxies, upstream: ThreadServer
) -> None:
    # Far more than the sockets and the proxy buffer: if the proxy read the answer only
    # after the whole upload, both sides would wait on each other until the write timeout.
    proxy = proxies.get({"upstream": {"url": upstream.url, "timeouts": {"write": 3}}})
    size = 32 * MiB
    with socket.create_connection(("127.0.0.1", proxy.port), 30) as sock:

        def upload() -> None:
            head = b"PUT /echo-stream HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size
            with contextlib.suppress(OSError):  # the assertions below say what went wrong
                sock.sendall(head)
                for piece in pattern(size):
                    sock.sendall(piece)

        sender = threading.Thread(target=upload)
        sender.start()
        answer = bytearray()
        while not answer.endswith(b"\r\n0\r\n\r\n"):
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            answer += chunk
        sender.join()
    head, _, body = bytes(answer).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head
    echoed = _dechunk(body)
    assert len(echoed) == size
    assert zlib.crc32(echoed) == pattern_crc(size)


def test_codings_before_chunked_are_kept_when_rechunked(proxy: ProxyProcess) -> None:
    body = gzip.compress(b"compressed upload " * 100)
    chunks = b"".join(b"%x\r\n%b\r\n" % (len(part), part) for part in (body[:10], body[10:]))
    answer = raw_exchange(
        proxy.port,
        b"POST /echo/gzip HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Transfer-Encoding: gzip, chunked\r\n\r\n" + chunks + b"0\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    data = json.loads(answer.partition(b"\r\n\r\n")[2])
    assert received(data, "transfer-encoding") == ["gzip, chunked"]
    # The upstream's server does not decode gzip: it gets the compressed bytes, intact.
    assert data["length"] == len(body)
    assert data["crc32"] == zlib.crc32(body)


@pytest.mark.parametrize("coding", [b"gz ip, chunked", b"gzip;q=1, chunked", b", chunked"])
def test_a_transfer_encoding_that_is_not_a_coding_list_is_a_400(
    proxy: ProxyProcess, coding: bytes
) -> None:
    answer = raw_exchange(
        proxy.port,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Transfer-Encoding: " + coding + b"\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    no_tracebacks(proxy)


def test_content_length_request_body_is_streamed(client: httpx.Client) -> None:
    size = 20 * MiB
    headers = {"content-length": str(size)}
    data = echo(client.put("/echo/upload", content=pattern(size), headers=headers))
    assert data["length"] == size
    assert data["crc32"] == pattern_crc(size)
    assert received(data, "content-length") == [str(size)]
    assert received(data, "transfer-encoding") == []


def test_large_upload_streams_in_bounded_memory(proxy: ProxyProcess) -> None:
    with httpx.Client(base_url=proxy.url, timeout=60) as client:
        echo(client.post("/echo/warm-up", content=b"x" * 100_000))
        with RssSampler(pid(proxy)) as rss:
            data = echo(client.post("/echo/big-upload", content=pattern(BIG)))
    assert data["length"] == BIG
    assert data["crc32"] == pattern_crc(BIG)
    assert rss.samples > 5
    assert rss.growth < RSS_GROWTH_LIMIT, f"proxy grew by {rss.growth / MiB:.1f} MiB"


def test_large_download_streams_in_bounded_memory(proxy: ProxyProcess) -> None:
    with httpx.Client(base_url=proxy.url, timeout=60) as client:
        client.get("/stream", params={"size": "100000"}).raise_for_status()
        length = crc = 0
        with (
            RssSampler(pid(proxy)) as rss,
            client.stream("GET", "/stream", params={"size": str(BIG)}) as response,
        ):
            assert response.headers["content-length"] == str(BIG)
            for chunk in response.iter_raw():
                length += len(chunk)
                crc = zlib.crc32(chunk, crc)
    assert length == BIG
    assert crc == pattern_crc(BIG)
    assert rss.samples > 5
    assert rss.growth < RSS_GROWTH_LIMIT, f"proxy grew by {rss.growth / MiB:.1f} MiB"


def test_chunked_response_is_streamed(client: httpx.Client) -> None:
    size = 3 * MiB + 7
    response = client.get("/stream", params={"size": str(size), "length": "0"})
    assert response.status_code == 200
    assert "content-length" not in response.headers
    assert response.content == b"".join(pattern(size))


def test_response_without_length_is_read_until_close(raw_proxy: ProxyProcess) -> None:
    size = 5 * MiB + 3
    with httpx.Client(base_url=raw_proxy.url, timeout=30) as client:
        response = client.get("/close-delimited", params={"size": str(size)})
        assert response.status_code == 200
        assert response.content == b"".join(pattern(size))
        # The proxy still serves the client on the same connection.
        assert client.get("/after").status_code == 200


def test_interim_responses_from_the_upstream_are_skipped(raw_proxy: ProxyProcess) -> None:
    response = httpx.get(f"{raw_proxy.url}/early-hints", timeout=10)
    assert response.status_code == 200
    assert response.text.startswith("raw /early-hints")


@pytest.mark.parametrize("code", [204, 304])
def test_bodyless_statuses_keep_the_connection_in_step(client: httpx.Client, code: int) -> None:
    for _ in range(3):
        response = client.get("/status", params={"code": str(code)})
        assert response.status_code == code
        assert response.headers["etag"] == '"1"'
        assert response.content == b""
    assert echo(client.get("/echo/next"))["path"] == "/echo/next"


def test_a_streamed_answer_started_before_the_body_still_gets_the_body(
    slow_proxy: ProxyProcess,
) -> None:
    # A streaming transform: the upstream answers 200 at once, then reads the upload.
    size = 4 * MiB
    response = httpx.post(f"{slow_proxy.url}/early-200", content=pattern(size), timeout=30)
    assert response.status_code == 200
    assert response.text == f"started;read {size} {pattern_crc(size)}"


def test_early_413_is_relayed_without_reading_the_body(client: httpx.Client) -> None:
    response = client.post("/early-413", content=pattern(16 * MiB))
    assert response.status_code == 413
    assert response.text == "too large"
    assert echo(client.get("/echo/after-413"))["path"] == "/echo/after-413"


# --- failures ----------------------------------------------------------------------------------


def test_an_upstream_that_does_not_speak_http_is_a_502(raw_proxy: ProxyProcess) -> None:
    response = httpx.get(f"{raw_proxy.url}/garbage", headers={"accept": "application/json"})
    assert response.status_code == 502
    assert response.json()["error"] == "upstream_bad_response"
    assert response.json()["description"].startswith("invalid HTTP response from the upstream")
    no_tracebacks(raw_proxy)


BAD_HEADS = {
    "status 999": (b"HTTP/1.1 999 Weird", "the upstream answered with status 999"),
    "status 600": (b"HTTP/1.1 600 Nope", "the upstream answered with status 600"),
    "status 99": (b"HTTP/1.1 099 Early", "the upstream answered with status 99"),
    "control character": (b"HTTP/1.1 200 OK\r\nx-bad: a\x01b", "invalid HTTP response"),
    "DEL character": (b"HTTP/1.1 200 OK\r\nx-bad: a\x7fb", "invalid HTTP response"),
    "folded header": (b"HTTP/1.1 200 OK\r\nx-fold: a\r\n  b", "invalid HTTP response"),
}


@pytest.mark.parametrize(("head", "description"), BAD_HEADS.values(), ids=BAD_HEADS.keys())
def test_an_unusable_response_head_is_a_502(
    raw_proxy: ProxyProcess, head: bytes, description: str
) -> None:
    response = httpx.get(
        f"{raw_proxy.url}/head-bytes",
        params={"head": head.hex()},
        headers={"accept": "application/json"},
    )
    assert response.status_code == 502
    assert response.json()["error"] == "upstream_bad_response"
    assert response.json()["description"].startswith(description)
    no_tracebacks(raw_proxy)


def test_odd_but_valid_response_heads_pass(raw_proxy: ProxyProcess) -> None:
    with httpx.Client(base_url=raw_proxy.url, timeout=10) as client:
        for head in (b"HTTP/1.0 200 OK", b"HTTP/1.1 200", b"HTTP/1.1 299 Custom\r\nx-empty:"):
            response = client.get("/head-bytes", params={"head": head.hex()})
            assert (response.status_code, response.content) == (int(head[9:12]), b"ok")
        response = client.get(
            "/head-bytes", params={"head": b"HTTP/1.1 200 OK\r\nx-name: caf\xc3\xa9".hex()}
        )
        assert response.headers.raw[0] == (b"x-name", b"caf\xc3\xa9")


def test_refused_upstream_is_a_502_page(refused_proxy: ProxyProcess) -> None:
    response = httpx.get(f"{refused_proxy.url}/anything", headers={"accept": "text/html"})
    assert response.status_code == 502
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["cache-control"] == "no-store"
    assert "<h1>The application is not reachable</h1>" in response.text
    assert "Error code: upstream_unavailable" in response.text
    assert "Traceback" not in response.text
    no_tracebacks(refused_proxy)


def test_refused_upstream_is_json_for_api_clients(refused_proxy: ProxyProcess) -> None:
    response = httpx.post(
        f"{refused_proxy.url}/api", content=b"{}", headers={"accept": "application/json"}
    )
    assert response.status_code == 502
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["error"] == "upstream_unavailable"
    assert body["title"] == "The application is not reachable"
    assert body["description"].startswith("cannot connect to the upstream")
    assert "Traceback" not in response.text


def test_refused_upstream_head_has_no_body(refused_proxy: ProxyProcess) -> None:
    response = httpx.head(f"{refused_proxy.url}/anything")
    assert response.status_code == 502
    assert response.content == b""


def test_read_timeout_is_a_504(slow_proxy: ProxyProcess) -> None:
    response = httpx.get(
        f"{slow_proxy.url}/slow", params={"delay": "3"}, headers={"accept": "application/json"}
    )
    assert response.status_code == 504
    assert response.json()["error"] == "upstream_timeout"
    assert response.json()["description"] == "no response from the upstream within 0.5 s"
    page = httpx.get(f"{slow_proxy.url}/slow", params={"delay": "3"})
    assert page.status_code == 504
    assert "Error code: upstream_timeout" in page.text
    no_tracebacks(slow_proxy)


def test_read_timeout_mid_body_breaks_the_response(slow_proxy: ProxyProcess) -> None:
    with httpx.Client(base_url=slow_proxy.url, timeout=10) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            client.get("/slow-body", params={"delay": "3"})
        assert echo(client.get("/echo/after-timeout"))["path"] == "/echo/after-timeout"


@pytest.mark.parametrize("length", ["1", "0"], ids=["content-length", "chunked"])
def test_upstream_dying_mid_stream_aborts_the_response(
    dying_proxy: ProxyProcess, length: str
) -> None:
    with httpx.Client(base_url=dying_proxy.url, timeout=10) as client:
        received = 0
        with (
            pytest.raises(httpx.RemoteProtocolError),
            client.stream("GET", "/die", params={"length": length}) as response,
        ):
            assert response.status_code == 200
            for chunk in response.iter_raw():
                received += len(chunk)
        assert received < 10_000_000
        assert echo(client.get("/echo/after-death"))["path"] == "/echo/after-death"
    no_tracebacks(dying_proxy)


def test_reset_mid_body_without_length_aborts_the_response(raw_proxy: ProxyProcess) -> None:
    # A body delimited by the close must not look complete when the close was a reset.
    with httpx.Client(base_url=raw_proxy.url, timeout=10) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            client.get("/reset", params={"size": str(MiB)})
        assert client.get("/after-reset").status_code == 200
    no_tracebacks(raw_proxy)


def test_client_leaving_mid_download_cancels_the_upstream(
    proxy: ProxyProcess, upstream: ThreadServer, tag: str
) -> None:
    with httpx.Client(base_url=proxy.url, timeout=10) as client:
        params = {"size": str(100 * 1024 * MiB), "tag": tag}
        with client.stream("GET", "/stream", params=params) as response:
            for received, _ in enumerate(response.iter_raw()):
                if received > 20:
                    break
    assert eventually(lambda: upstream_stats(upstream, tag)["disconnects"] == 1)
    assert upstream_stats(upstream, tag)["finished"] == 0


def test_client_leaving_while_the_upstream_thinks_cancels_it(
    proxy: ProxyProcess, upstream: ThreadServer, tag: str
) -> None:
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(f"{proxy.url}/slow", params={"delay": "30", "tag": tag}, timeout=0.5)
    assert eventually(lambda: upstream_stats(upstream, tag)["disconnects"] == 1)
    no_tracebacks(proxy)


def test_client_leaving_mid_upload_is_not_an_error(
    proxy: ProxyProcess, upstream: ThreadServer, tag: str
) -> None:
    head = b"POST /echo?tag=%b HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n" % (
        tag.encode()
    )
    with socket.create_connection(("127.0.0.1", proxy.port)) as sock:
        sock.sendall(head + b"x" * 1000)
        assert eventually(lambda: upstream_stats(upstream, tag)["requests"] == 1)
    with httpx.Client(base_url=proxy.url) as client:
        assert echo(client.get("/echo/after-upload"))["path"] == "/echo/after-upload"
    no_tracebacks(proxy)


# --- malformed input -----------------------------------------------------------------------------

MALFORMED = {
    "garbage request line": b"THIS IS NOT HTTP\r\n\r\n",
    "binary noise": bytes(range(256)) * 4,
    "header without colon": b"GET / HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n",
    "space before colon": b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
    "bad http version": b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
    "oversized header": (
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: "
        + b"a" * (4 * MiB)
        + b"\r\n\r\n"
    ),
    "many headers": (
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + b"X-H: v\r\n" * 200_000 + b"\r\n"
    ),
    "content-length not a number": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    "negative content-length": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
    "two content-lengths": (
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"
    ),
    "content-length and chunked": (
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    ),
    "bad chunk size": (
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n"
    ),
    "non-ascii header name": b"GET / HTTP/1.1\r\nHost: x\r\nX-Caf\xc3\xa9: 1\r\n\r\n",
    "control character in value": b"GET / HTTP/1.1\r\nHost: x\r\nX-Ctl: a\x01b\r\n\r\n",
    "NUL in target": b"GET /a\x00b HTTP/1.1\r\nHost: x\r\n\r\n",
    "CONNECT": b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n",
    "transfer-encoding not chunked": (
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n"
        b"Content-Length: 3\r\n\r\nabc"
    ),
}


@pytest.mark.parametrize("request_bytes", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_requests_get_a_4xx_or_a_closed_connection(
    proxy: ProxyProcess, request_bytes: bytes
) -> None:
    try:
        answer = raw_exchange(proxy.port, request_bytes)
    except (BrokenPipeError, ConnectionResetError):
        answer = b""
    if answer:
        status = int(answer.split(b" ", 2)[1])
        assert 400 <= status < 500, answer[:200]
    response = httpx.get(f"{proxy.url}/echo/still-serving")
    assert echo(response)["path"] == "/echo/still-serving"
    no_tracebacks(proxy)


def test_absolute_form_target_is_forwarded_in_origin_form(proxy: ProxyProcess) -> None:
    request = (
        b"GET http://evil.example/echo/absolute?q=%2F HTTP/1.1\r\n"
        b"Host: app.test\r\nConnection: close\r\n\r\n"
    )
    status, _, body = parse_raw_response(raw_exchange(proxy.port, request))
    assert status == 200
    data = json.loads(body)
    assert (data["raw_path"], data["query_string"]) == ("/echo/absolute", "q=%2F")
    assert received(data, "host") == ["app.test"]


def test_options_asterisk_is_forwarded(proxy: ProxyProcess) -> None:
    request = b"OPTIONS * HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n"
    status, _, body = parse_raw_response(raw_exchange(proxy.port, request))
    assert status == 200
    data = json.loads(body)
    assert (data["method"], data["raw_path"]) == ("OPTIONS", "*")


def test_non_ascii_header_value_is_forwarded_as_is(proxy: ProxyProcess) -> None:
    request = (
        b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Name: caf\xc3\xa9 \xff\r\nConnection: close\r\n\r\n"
    )
    status, _, body = parse_raw_response(raw_exchange(proxy.port, request))
    assert status == 200
    data = json.loads(body)
    assert received(data, "x-name") == ["caf\xc3\xa9 \xff"]  # the bytes, as latin-1
    no_tracebacks(proxy)


# --- connection reuse ----------------------------------------------------------------------------


def test_sequential_requests_reuse_one_upstream_connection(
    client: httpx.Client, upstream: ThreadServer, tag: str
) -> None:
    for i in range(50):
        response = client.get("/echo/reuse", params={"tag": tag, "i": str(i)})
        assert response.status_code == 200
    for _ in range(5):
        client.get("/stream", params={"tag": tag, "size": str(MiB)}).raise_for_status()
        client.post("/echo/reuse", params={"tag": tag}, content=b"x" * 100_000).raise_for_status()
    stats = upstream_stats(upstream, tag)
    assert stats["requests"] == 60
    assert stats["connections"] == 1


def test_a_reused_connection_closed_by_the_upstream_is_retried(
    raw_proxy: ProxyProcess, raw_upstream: RawUpstream
) -> None:
    before = raw_upstream.unanswered
    with httpx.Client(base_url=raw_proxy.url, timeout=10) as client:
        for i in range(10):
            response = client.get(f"/stale/{i}")
            assert response.status_code == 200, response.text
            assert response.text == f"raw /stale/{i} on request 1 of its connection"
    assert raw_upstream.unanswered > before


@pytest.mark.parametrize(
    ("method", "headers"),
    [("PUT", {}), ("DELETE", {}), ("POST", {"Idempotency-Key": "order-17"})],
)
def test_a_body_request_that_may_be_repeated_is_retried_on_a_stale_connection(
    raw_proxy: ProxyProcess, raw_upstream: RawUpstream, method: str, headers: dict[str, str]
) -> None:
    before = raw_upstream.unanswered
    with httpx.Client(base_url=raw_proxy.url, timeout=10) as client:
        for i in range(6):
            response = client.request(
                method, f"/stale/body/{i}", content=b"payload " * 1000, headers=headers
            )
            assert response.status_code == 200, response.text
            assert response.text == f"raw /stale/body/{i} on request 1 of its connection"
    assert raw_upstream.unanswered > before


def test_an_upstream_ignoring_expect_still_gets_the_body(raw_proxy: ProxyProcess) -> None:
    # The raw upstream never sends 100 Continue: after a short wait the body goes anyway.
    head = (
        b"PUT /expect-ignored HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b"Expect: 100-continue\r\nConnection: close\r\n\r\n"
    )
    interim, answer = continued_exchange(raw_proxy.port, head, b"hello")
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    assert b"\r\n\r\nraw /expect-ignored on request " in answer


def test_a_post_is_never_sent_twice(proxies: Proxies, raw_upstream: RawUpstream) -> None:
    # RFC 9110 9.2.2: the upstream may have acted on it; the client decides whether to retry.
    # A proxy of its own: its first request must find no idle connection.
    raw_proxy = proxies.get({"upstream": {"url": raw_upstream.url}}, name="post-once")
    with httpx.Client(base_url=raw_proxy.url, timeout=10) as client:
        assert client.post("/stale/post/0", content=b"order").status_code == 200
        before = raw_upstream.connections
        assert client.post("/stale/post/1", content=b"order").status_code == 502
    assert raw_upstream.connections == before
    no_tracebacks(raw_proxy)


def test_a_large_body_is_not_kept_to_be_sent_again(
    raw_proxy: ProxyProcess, raw_upstream: RawUpstream
) -> None:
    with httpx.Client(base_url=raw_proxy.url, timeout=10) as client:
        assert client.put("/stale/large/0", content=b"x" * 10).status_code == 200
        before = raw_upstream.connections
        response = client.put("/stale/large/1", content=b"x" * (1024 * 1024))
    assert response.status_code == 502
    assert raw_upstream.connections == before
    no_tracebacks(raw_proxy)


def test_every_idle_connection_closed_by_the_upstream_is_still_no_502(
    raw_proxy: ProxyProcess, raw_upstream: RawUpstream
) -> None:
    # Three requests at once leave three idle connections in the pool; the upstream then
    # closes each one it is asked to reuse. A retry must not pick another stale one.
    responses: list[int] = []

    def hold() -> None:
        responses.append(httpx.get(f"{raw_proxy.url}/barrier?n=3", timeout=10).status_code)

    threads = [threading.Thread(target=hold) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert responses == [200, 200, 200]
    with httpx.Client(base_url=raw_proxy.url, timeout=10) as client:
        statuses = [client.get(f"/stale/after-barrier/{i}").status_code for i in range(4)]
    assert statuses == [200] * 4


def test_concurrent_requests_share_a_small_pool(
    proxies: Proxies, upstream: ThreadServer, tag: str
) -> None:
    proxy = proxies.get({"upstream": {"url": upstream.url, "pool": {"max_connections": 4}}})

    def one(i: int) -> int:
        params = {"delay": "0.05", "tag": tag, "i": str(i)}
        return httpx.get(f"{proxy.url}/slow", params=params, timeout=30).status_code

    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(one, range(48)))
    assert statuses == [200] * 48
    stats = upstream_stats(upstream, tag)
    assert stats["requests"] == 48
    assert stats["connections"] <= 4


def test_every_failure_gives_its_upstream_connection_back(
    proxies: Proxies, upstream: ThreadServer, tag: str
) -> None:
    # One connection in all: a failure path that kept it would starve the next request.
    proxy = proxies.get(
        {
            "upstream": {
                "url": upstream.url,
                "pool": {"max_connections": 1},
                "timeouts": {"read": 0.5, "pool": 3},
            }
        }
    )
    with httpx.Client(base_url=proxy.url, timeout=10) as client:
        assert client.get("/slow", params={"delay": "3"}).status_code == 504
        with pytest.raises(httpx.RemoteProtocolError):
            client.get("/die")
        with pytest.raises(httpx.RemoteProtocolError):
            client.get("/slow-body", params={"delay": "3"})
        assert client.post("/early-413", content=pattern(4 * MiB)).status_code == 413
        assert client.head("/stream").status_code == 200
        assert client.get("/status", params={"code": "304"}).status_code == 304
    with (
        httpx.Client(base_url=proxy.url, timeout=10) as leaving,
        leaving.stream("GET", "/stream", params={"size": str(10 * 1024 * MiB)}) as response,
    ):
        next(response.iter_raw())
    with socket.create_connection(("127.0.0.1", proxy.port)) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nabc")
    with httpx.Client(base_url=proxy.url, timeout=10) as client:
        for i in range(3):
            response = client.get("/echo/after-failures", params={"tag": tag, "i": str(i)})
            assert response.status_code == 200, response.text
    no_tracebacks(proxy)


def test_upstream_closing_idle_connections_causes_no_502(
    proxies: Proxies, upstream_app: UpstreamApp, tag: str
) -> None:
    short_keep_alive = ThreadServer(upstream_app, timeout_keep_alive=1, proxy_headers=False).start()
    try:
        proxy = proxies.get({"upstream": {"url": short_keep_alive.url}})
        with httpx.Client(base_url=proxy.url, timeout=10) as client:
            for round_ in range(2):
                for i in range(5):
                    response = client.get("/echo/idle", params={"tag": tag, "i": str(i)})
                    assert response.status_code == 200, response.text
                if round_ == 0:
                    time.sleep(1.5)  # the upstream closes the idle connection meanwhile
        stats = upstream_app.state.snapshot(tag)
        assert stats["requests"] == 10
        assert stats["connections"] >= 2  # the first one was closed while idle
    finally:
        short_keep_alive.stop()


def test_pool_slots_are_first_come_and_never_lost() -> None:
    from proxy.errors import UpstreamTimeout
    from proxy.forward.slots import Slots

    async def scenario() -> None:
        slots = Slots(1)
        assert slots.take() and not slots.take()
        order: list[str] = []

        async def waiter(name: str, timeout: float = 5) -> None:
            await slots.wait(timeout)
            order.append(name)

        first = asyncio.ensure_future(waiter("first"))
        second = asyncio.ensure_future(waiter("second"))
        await asyncio.sleep(0)
        slots.give()  # handed to `first`...
        first.cancel()  # ...which gives up before it runs: the slot goes on to `second`
        await asyncio.gather(first, return_exceptions=True)
        await second
        assert order == ["second"]
        with pytest.raises(UpstreamTimeout):
            await slots.wait(0.01)  # `second` still holds the only slot
        slots.give()
        assert slots.free == 1 and slots.take()

    asyncio.run(scenario())

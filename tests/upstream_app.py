"""The app the tests put behind the proxy, and a raw-socket upstream for what uvicorn won't do.

`UpstreamApp` is a plain ASGI app (HTTP and WebSocket) that reports what reached it and
misbehaves on request. It runs under uvicorn in the test process (tests/servers.py), so the
tests can also read its `state` directly; `/stats` serves the same numbers over HTTP.

`RawUpstream` answers with hand-written bytes: a body delimited by the connection closing,
a connection reset mid-body, an interim 103, keep-alive connections it closes without
answering (the stale-connection race, made deterministic).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import socket
import struct
import threading
import zlib
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

BLOCK = bytes(range(256)) * 256  # 64 KiB; generated bodies repeat it
SUBPROTOCOLS = ("chat.v2", "chat.v1")  # the upstream's order of preference


def pattern(size: int) -> collections.abc.Iterator[bytes]:
    """`size` bytes of the repeating test pattern, in 64 KiB pieces."""
    while size > 0:
        piece = BLOCK if size >= len(BLOCK) else BLOCK[:size]
        size -= len(piece)
        yield piece


def pattern_crc(size: int) -> int:
    crc = 0
    for piece in pattern(size):
        crc = zlib.crc32(piece, crc)
    return crc


class UpstreamState:
    """What the upstream saw, per `tag` query parameter (tests use a unique tag each)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ports: dict[str, set[int]] = collections.defaultdict(set)
        self.requests: collections.Counter[str] = collections.Counter()
        self.disconnects: collections.Counter[str] = collections.Counter()
        self.finished: collections.Counter[str] = collections.Counter()
        self.ws_closes: dict[str, list[tuple[int, str]]] = collections.defaultdict(list)

    def seen(self, tag: str, port: int) -> None:
        with self.lock:
            self.ports[tag].add(port)
            self.requests[tag] += 1

    def snapshot(self, tag: str) -> dict[str, Any]:
        with self.lock:
            return {
                "requests": self.requests[tag],
                "connections": len(self.ports[tag]),
                "disconnects": self.disconnects[tag],
                "finished": self.finished[tag],
                "ws_closes": list(self.ws_closes[tag]),
            }


def _query(scope: Scope) -> dict[str, str]:
    return dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))


def _text(value: bytes) -> str:
    return value.decode("latin-1")


async def _json(send: Send, data: Any, status: int = 200, extra: Any = ()) -> None:
    body = json.dumps(data).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _plain(send: Send, body: bytes, status: int = 200, headers: Any = ()) -> None:
    head = [(b"content-length", str(len(body)).encode()), *headers]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class UpstreamApp:
    def __init__(self) -> None:
        self.state = UpstreamState()
        self.routes: dict[str, Callable[[Scope, Receive, Send], Awaitable[None]]] = {
            "/echo": self.echo,
            "/stream": self.stream,
            "/slow": self.slow,
            "/slow-body": self.slow_body,
            "/redirect": self.redirect,
            "/cookies": self.cookies,
            "/hop": self.hop,
            "/status": self.status,
            "/die": self.die,
            "/early-413": self.early_413,
            "/early-200": self.early_200,
            "/echo-stream": self.echo_stream,
            "/stats": self.stats,
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        query = _query(scope)
        if scope["type"] == "websocket":
            await self.websocket(scope, receive, send, query)
            return
        if scope["type"] != "http":
            return
        if "tag" in query:
            self.state.seen(query["tag"], scope["client"][1])
        route = "/" + scope["path"].split("/")[1] if scope["path"].startswith("/") else ""
        handler = self.routes.get(route, self.echo)
        await handler(scope, receive, send)

    async def echo(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Method, target, headers and body as received (the body as length and CRC-32)."""
        length, crc, head = 0, 0, bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            length += len(chunk)
            crc = zlib.crc32(chunk, crc)
            if len(head) < 65536:
                head += chunk[: 65536 - len(head)]
            if not message.get("more_body", False):
                break
        data = {
            "method": scope["method"],
            "path": scope["path"],
            "raw_path": _text(scope.get("raw_path") or b""),
            "query_string": _text(scope.get("query_string", b"")),
            "headers": [[_text(n), _text(v)] for n, v in scope["headers"]],
            "body": _text(bytes(head)) if length <= 65536 else None,
            "length": length,
            "crc32": crc,
            "client_port": scope["client"][1],
        }
        await _json(send, data, extra=[(b"x-echo-method", scope["method"].encode())])

    async def stream(self, scope: Scope, receive: Receive, send: Send) -> None:
        """`size` bytes of pattern, with Content-Length unless `length=0`. A client that goes
        away is counted under `tag` (the send itself fails silently under uvicorn)."""
        query = _query(scope)
        size = int(query.get("size", "1048576"))
        tag = query.get("tag", "")
        headers = [(b"content-type", b"application/octet-stream")]
        if query.get("length", "1") == "1":
            headers.append((b"content-length", str(size).encode()))
        gone = asyncio.ensure_future(_until_disconnect(receive))
        try:
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            for piece in pattern(size):
                if gone.done():
                    break
                await send({"type": "http.response.body", "body": piece, "more_body": True})
                # uvicorn's send only yields when the socket is full; let the loop notice a
                # lost connection (and answer /stats) meanwhile.
                await asyncio.sleep(0)
            else:
                await send({"type": "http.response.body", "body": b""})
                with self.state.lock:
                    self.state.finished[tag] += 1
                return
        finally:
            gone.cancel()
        with self.state.lock:
            self.state.disconnects[tag] += 1

    async def slow(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer after `delay` seconds, or count the client going away first."""
        query = _query(scope)
        delay = float(query.get("delay", "1"))
        gone = asyncio.ensure_future(_until_disconnect(receive))
        try:
            await asyncio.wait_for(asyncio.shield(gone), delay)
        except TimeoutError:
            await _plain(send, b"slow answer")
            return
        finally:
            gone.cancel()
        with self.state.lock:
            self.state.disconnects[query.get("tag", "")] += 1

    async def slow_body(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Headers and a first piece at once, the rest after `delay` seconds."""
        delay = float(_query(scope).get("delay", "1"))
        headers = [(b"content-length", b"10")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        await asyncio.sleep(delay)
        await send({"type": "http.response.body", "body": b"-last"})

    async def redirect(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A redirect naming this server's own (internal) origin, or `to` verbatim."""
        query = _query(scope)
        host, port = scope["server"]
        location = query.get("to") or f"http://{host}:{port}/landing?x=1#frag"
        headers = [
            (b"location", location.encode()),
            (b"content-location", f"http://{host}:{port}/content".encode()),
        ]
        await _plain(send, b"", int(query.get("status", "302")), headers)

    async def cookies(self, scope: Scope, receive: Receive, send: Send) -> None:
        host = scope["server"][0]
        cookies = [
            f"first=1; Domain={host}; Path=/; HttpOnly",
            f"second=2; Path=/; domain=.{host}; Secure",
            f"third=3; Expires=Wed, 21 Oct 2037 07:28:00 GMT; DoMaIn={host.upper()}",
            "fourth=4; Domain=other.example; Path=/",
            "fifth=5; Path=/",
        ]
        await _plain(send, b"", 200, [(b"set-cookie", c.encode()) for c in cookies])

    async def hop(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A response carrying hop-by-hop headers, one of them named only in Connection."""
        headers = [
            (b"connection", b"x-upstream-hop, keep-alive"),
            (b"x-upstream-hop", b"private"),
            (b"keep-alive", b"timeout=5"),
            (b"proxy-authenticate", b"Basic"),
            (b"trailer", b"x-checksum"),
            (b"upgrade", b"h2c"),
            (b"x-kept", b"yes"),
        ]
        await _plain(send, b"hop", 200, headers)

    async def status(self, scope: Scope, receive: Receive, send: Send) -> None:
        code = int(_query(scope).get("code", "204"))
        await send({"type": "http.response.start", "status": code, "headers": [(b"etag", b'"1"')]})
        await send({"type": "http.response.body", "body": b""})

    async def die(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Promise a body, send part of it, then fail: uvicorn drops the connection."""
        query = _query(scope)
        headers = [(b"content-type", b"application/octet-stream")]
        if query.get("length", "1") == "1":
            headers.append((b"content-length", b"10000000"))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for piece in pattern(int(query.get("sent", "300000"))):
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        raise RuntimeError("the test upstream dies mid-response on purpose")

    async def early_413(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse the body without reading any of it."""
        await _plain(send, b"too large", 413, [(b"content-type", b"text/plain")])

    async def early_200(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Start a streamed 200 first, then read the whole body (a streaming transform)."""
        headers = [(b"content-type", b"text/plain")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"started;", "more_body": True})
        length, crc = 0, 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            length += len(message.get("body", b""))
            crc = zlib.crc32(message.get("body", b""), crc)
            if not message.get("more_body", False):
                break
        await send({"type": "http.response.body", "body": f"read {length} {crc}".encode()})

    async def echo_stream(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Send each piece of the body back as it arrives, before the rest is read."""
        headers = [(b"content-type", b"application/octet-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            if body:
                await send({"type": "http.response.body", "body": body, "more_body": True})
            if not message.get("more_body", False):
                break
        await send({"type": "http.response.body", "body": b""})

    async def stats(self, scope: Scope, receive: Receive, send: Send) -> None:
        await _json(send, self.state.snapshot(_query(scope).get("of", "")))

    async def websocket(
        self, scope: Scope, receive: Receive, send: Send, query: dict[str, str]
    ) -> None:
        """Echo; `close CODE REASON` makes the upstream close; `/ws-deny` refuses with 403;
        `/ws-cookie` accepts with cookies and a header of its own."""
        await receive()  # websocket.connect
        if scope["path"] == "/ws-deny":
            headers = [(b"content-type", b"text/plain"), (b"content-length", b"7")]
            await send({"type": "websocket.http.response.start", "status": 403, "headers": headers})
            await send({"type": "websocket.http.response.body", "body": b"go away"})
            return
        offered = scope.get("subprotocols") or []
        chosen = next((p for p in SUBPROTOCOLS if p in offered), None)
        accept: list[tuple[bytes, bytes]] = []
        if scope["path"] == "/ws-cookie":  # handshake response headers meant for the browser
            host = scope["server"][0]
            accept = [
                (b"set-cookie", b"ws=1; Path=/; HttpOnly"),
                (b"set-cookie", f"room=2; Domain={host}; Path=/".encode()),
                (b"x-room", b"lobby"),
            ]
        await send({"type": "websocket.accept", "subprotocol": chosen, "headers": accept})
        tag = query.get("tag", "")
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                with self.state.lock:
                    code, reason = message.get("code", 1005), message.get("reason") or ""
                    self.state.ws_closes[tag].append((code, reason))
                return
            text = message.get("text")
            if text is not None and text.startswith("close "):
                _, code, reason = text.split(" ", 2)
                await send({"type": "websocket.close", "code": int(code), "reason": reason})
                return
            if text == "headers":
                headers = [[_text(n), _text(v)] for n, v in scope["headers"]]
                await send({"type": "websocket.send", "text": json.dumps(headers)})
            elif text is not None:
                await send({"type": "websocket.send", "text": text})
            else:
                await send({"type": "websocket.send", "bytes": message.get("bytes") or b""})


# --- a raw-socket upstream -----------------------------------------------------------------


class RawUpstream:
    """HTTP/1.1 written by hand, one thread per connection. Request bodies must come with
    a Content-Length; they are read and ignored.

    - `/close-delimited?size=N`: N bytes with neither Content-Length nor chunking, then close;
    - `/reset?size=N`: the same head, N bytes, then a TCP reset;
    - `/early-hints`: a 103 interim response, then a 200;
    - `/barrier?n=N`: answers once N requests wait (forces N pooled connections);
    - `/garbage`: bytes that are not HTTP; `/hang`: no answer until the peer goes away;
    - `/head-bytes?head=HEX`: a response whose status line and headers are those bytes;
    - `/stale...`: answered on a fresh connection; on a reused one, closed unanswered;
    - anything else: a keep-alive 200.
    `connections` counts accepted connections.
    """

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.connections = 0
        self.unanswered = 0
        self.lock = threading.Lock()
        self.barriers: dict[int, threading.Barrier] = {}
        self.thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> RawUpstream:
        self.thread.start()
        return self

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            buffer = b""
            served = 0
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                target = head.split(b" ", 2)[1].decode("latin-1")
                length = _content_length(head)
                while len(buffer) < length:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffer += data
                buffer = buffer[length:]
                served += 1
                if not self._answer(conn, target, served):
                    return

    def _answer(self, conn: socket.socket, target: str, served: int) -> bool:
        path, _, query_string = target.partition("?")
        query = dict(parse_qsl(query_string))
        if path == "/close-delimited" or path == "/reset":
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n\r\n")
            for piece in pattern(int(query.get("size", "100000"))):
                conn.sendall(piece)
            if path == "/reset":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            else:
                conn.shutdown(socket.SHUT_WR)
            return False
        if path == "/garbage":
            conn.sendall(b"SURPRISE\r\n\r\n")
            return False
        if path == "/head-bytes":
            # A response head with whatever bytes the test asks for (hex in `head`).
            conn.sendall(bytes.fromhex(query["head"]) + b"\r\ncontent-length: 2\r\n\r\nok")
            return True
        if path == "/hang":
            while conn.recv(65536):
                pass
            return False
        if path == "/early-hints":
            conn.sendall(b"HTTP/1.1 103 Early Hints\r\nlink: </app.css>; rel=preload\r\n\r\n")
        elif path == "/barrier":
            n = int(query["n"])
            with self.lock:
                barrier = self.barriers.setdefault(n, threading.Barrier(n))
            barrier.wait(10)
        elif path.startswith("/stale") and served > 1:
            with self.lock:
                self.unanswered += 1
            return False
        body = f"raw {path} on request {served} of its connection".encode()
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%b" % (len(body), body))
        return True


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0

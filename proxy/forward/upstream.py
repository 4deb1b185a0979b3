"""A small pooled HTTP/1.1 client for the upstream leg, on asyncio protocols and httptools.

Why not httpx here: on the hot path every microsecond of per-request overhead is added to
every page of the app, and a general-purpose client spends far more than this one (see
bench/upstream_clients.py for the measurement). httpx stays the client for everything
else (Microsoft, discovery, JWKS).

What it does: keep-alive connections to one origin, bounded in number; request bodies
streamed with the transport's write flow control; response bodies streamed with
back-pressure (reading pauses while the consumer is behind); connect, read, write and
pool timeouts; a request that finds its idle connection closed by the upstream is retried
once on a fresh one when it has no body. Every failure is an UpstreamError.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from collections.abc import AsyncIterator
from typing import cast
from urllib.parse import urlsplit

import httptools

from proxy.asgi import Headers
from proxy.config import UpstreamSettings
from proxy.errors import UpstreamError, UpstreamProtocolError, UpstreamTimeout
from proxy.forward.slots import Slots

# Reading from the upstream pauses once this much of a response waits for the client.
HIGH_WATER = 256 * 1024
CHUNKED_END = b"0\r\n\r\n"


_TIMED_OUT = object()


def _expire(waiter: asyncio.Future[object]) -> None:
    if not waiter.done():
        waiter.set_result(_TIMED_OUT)


class _StaleConnection(UpstreamError):
    """A reused connection was closed by the upstream before it answered."""


class Connection(asyncio.Protocol):
    """One HTTP/1.1 connection; one request at a time; fed by the event loop."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._can_write = asyncio.Event()
        self._can_write.set()
        self._waiter: asyncio.Future[object] | None = None
        self._reset(head=False)

    def _reset(self, head: bool) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.head_request = head
        self.status = 0
        self.headers: Headers = []
        self.chunks: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.got_bytes = False
        self.headers_done = False
        self.message_done = False
        self.reusable = True
        self.error: UpstreamError | None = None
        self.paused = False

    # --- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        if self.message_done:  # bytes nobody asked for: the connection is out of step
            self.reusable = False
            self.close()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(UpstreamProtocolError("the upstream switched protocols unasked"))
        except httptools.HttpParserError as exc:
            self._fail(UpstreamProtocolError(f"invalid HTTP response from the upstream: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        if not self.message_done and self.error is None:  # keep the first, precise error
            if self.headers_done and exc is None and self._body_ends_at_close():
                # A body delimited by the close ends here; one cut by a reset does not.
                self.message_done = True
            elif not self.got_bytes:
                self.error = _StaleConnection("the upstream closed the connection")
            else:
                self.error = UpstreamProtocolError(
                    "the upstream closed the connection mid-response"
                )
        self._can_write.set()
        self._wake()

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()

    # --- httptools callbacks -----------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if not 100 <= status <= 599:  # the parser takes any three digits; HTTP does not
            self._fail(UpstreamProtocolError(f"the upstream answered with status {status}"))
            return
        if 100 <= status < 200:  # interim response (100 Continue, 103 Early Hints): skip it
            self.headers = []
            return
        self.status = status
        self.headers_done = True
        if self.head_request:
            # httptools cannot be told a HEAD response has no body; this parser is done.
            self.message_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.status == 0:  # end of an interim response
            return
        self.message_done = True
        self.reusable = self.reusable and self.parser.should_keep_alive()
        self._wake()

    # --- used by the pool and the response ---------------------------------------------------

    def _body_ends_at_close(self) -> bool:
        names = {name for name, _ in self.headers}
        return b"content-length" not in names and b"transfer-encoding" not in names

    def _fail(self, error: UpstreamError) -> None:
        self.error = error
        self.close()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, timeout: float, what: str) -> None:
        # A bare timer rather than asyncio.timeout(): this runs for most requests, and the
        # context manager's bookkeeping costs more than the wait itself.
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[object] = loop.create_future()
        self._waiter = waiter
        timer = loop.call_later(timeout, _expire, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None
        if waiter.result() is _TIMED_OUT:
            self.close()
            raise UpstreamTimeout(f"no {what} from the upstream within {timeout:g} s")

    def write(self, data: bytes) -> None:
        if self.closed or self.transport is None:
            raise self.error or UpstreamError("the upstream closed the connection")
        self.transport.write(data)

    async def drain(self, timeout: float) -> None:
        if self._can_write.is_set():
            return
        try:
            async with asyncio.timeout(timeout):
                await self._can_write.wait()
        except TimeoutError:
            self.close()
            raise UpstreamTimeout(
                f"the upstream did not read the request within {timeout:g} s"
            ) from None
        if self.closed and self.error:
            raise self.error

    def take_body(self) -> bytes:
        data = self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)
        self.chunks.clear()
        self.buffered = 0
        if self.paused and self.transport is not None and not self.closed:
            self.paused = False
            self.transport.resume_reading()
        return data

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()


class Exchange:
    """One request to the upstream and its response. Always `aclose()` it.

    `UpstreamPool.request` returns once the request is sent; `ready` tells whether the
    response head is already in (so a caller can skip any waiting machinery), and
    `wait_headers()` waits for it, retrying once on a fresh connection when a reused idle
    connection turns out to have been closed by the upstream and the request had no body.
    """

    def __init__(self, pool: UpstreamPool, head: bytes, is_head: bool, has_body: bool) -> None:
        self._pool = pool
        self._head = head
        self._is_head = is_head
        self._has_body = has_body
        self._conn: Connection | None = None
        self._reused = False
        self.aborted = False

    async def _start(
        self, body: AsyncIterator[bytes] | None, chunked: bool, fresh: bool = False
    ) -> None:
        self._conn, self._reused = await self._pool._checkout(self._is_head, fresh)
        conn = self._conn
        conn.write(self._head)
        if body is not None:
            await self._pool._send_body(conn, body, chunked)

    @property
    def ready(self) -> bool:
        return self._conn is not None and self._conn.headers_done

    @property
    def status(self) -> int:
        return self._conn.status if self._conn is not None else 0

    @property
    def headers(self) -> Headers:
        return self._conn.headers if self._conn is not None else []

    @property
    def complete(self) -> bool:
        """The whole body is already here (most small responses arrive in one read)."""
        return self._conn is None or self._conn.message_done

    async def wait_headers(self) -> None:
        read_timeout = self._pool.settings.timeouts.read
        while True:
            conn = self._conn
            assert conn is not None
            if conn.headers_done:
                return
            if self.aborted:
                raise UpstreamError("the client went away")
            if conn.error is None:
                await conn.wait(read_timeout, "response")
                continue
            error = conn.error
            if isinstance(error, _StaleConnection) and self._reused and not self._has_body:
                self._release()
                # A fresh connection this time: the other idle ones may be just as stale
                # (the upstream restarted, or closes every idle connection at once).
                await self._start(None, False, fresh=True)
                continue
            raise UpstreamError(str(error)) if isinstance(error, _StaleConnection) else error

    def first_chunk(self) -> bytes:
        """The body so far (all of it when `complete`)."""
        return self._conn.take_body() if self._conn is not None else b""

    async def body(self) -> AsyncIterator[bytes]:
        conn = self._conn
        if conn is None:
            return
        read_timeout = self._pool.settings.timeouts.read
        while True:
            if conn.chunks:
                yield conn.take_body()
            elif conn.message_done:
                break
            elif conn.error is not None:
                raise conn.error
            else:
                await conn.wait(read_timeout, "response data")

    def abort(self) -> None:
        """The client went away: drop the upstream connection, cancelling its work."""
        self.aborted = True
        if self._conn is not None:
            self._conn.close()

    def _release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self._pool.release(conn)

    async def aclose(self) -> None:
        self._release()


class UpstreamPool:
    """Keep-alive connections to the one upstream origin."""

    def __init__(self, settings: UpstreamSettings) -> None:
        self.settings = settings
        url = urlsplit(settings.url)
        self.scheme = url.scheme
        self.host = url.hostname or ""
        self.port = url.port or (443 if url.scheme == "https" else 80)
        self.ssl = self._ssl_context() if url.scheme == "https" else None
        self._idle: collections.deque[Connection] = collections.deque()
        self._slots = Slots(settings.pool.max_connections)

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.settings.ca_file)
        if not self.settings.tls_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    async def request(
        self,
        method: bytes,
        target: bytes,
        headers: Headers,
        body: AsyncIterator[bytes] | None = None,
        chunked: bool = False,
        codings: bytes = b"",
    ) -> Exchange:
        """Send one request (head and body); the caller then awaits the response head.
        A chunked body is re-chunked; `codings` are those the client applied before."""
        head = _request_head(method, target, headers, chunked, codings)
        exchange = Exchange(self, head, method == b"HEAD", body is not None)
        try:
            await exchange._start(body, chunked)
        except BaseException:
            await exchange.aclose()
            raise
        return exchange

    async def _send_body(self, conn: Connection, body: AsyncIterator[bytes], chunked: bool) -> None:
        write_timeout = self.settings.timeouts.write
        async for chunk in body:
            if conn.headers_done and (conn.message_done or conn.status >= 300):
                # Refused early (e.g. 413) or answered in full: stop sending, do not reuse.
                # A 2xx still streaming may be a transform that reads as it answers
                # (RFC 9112 9.5: stop only when the server does not want the body).
                conn.reusable = False
                return
            if chunk:
                conn.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
                await conn.drain(write_timeout)
        if chunked:
            conn.write(CHUNKED_END)

    async def _checkout(self, head: bool, fresh: bool = False) -> tuple[Connection, bool]:
        if not self._slots.take():
            await self._slots.wait(self.settings.timeouts.pool)
        try:
            conn, reused = (None if fresh else self._reuse()) or (await self._connect(), False)
        except BaseException:
            self._slots.give()
            raise
        conn._reset(head)
        return conn, reused

    def _reuse(self) -> tuple[Connection, bool] | None:
        expiry = time.monotonic() - self.settings.pool.idle_timeout
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed and conn.idle_since > expiry:
                return conn, True
            conn.close()
        return None

    async def _connect(self) -> Connection:
        loop = asyncio.get_running_loop()
        timeout = self.settings.timeouts.connect
        try:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(
                    Connection, self.host, self.port, ssl=self.ssl
                )
        except TimeoutError:
            raise UpstreamTimeout(
                f"could not connect to the upstream within {timeout:g} s"
            ) from None
        except (OSError, ssl.SSLError) as exc:
            reason = exc.strerror or str(exc) if isinstance(exc, OSError) else str(exc)
            raise UpstreamError(f"cannot connect to the upstream: {reason}") from None
        return conn

    def release(self, conn: Connection) -> None:
        if conn.message_done and conn.reusable and not conn.closed and not conn.chunks:
            if len(self._idle) < self.settings.pool.max_idle:
                conn.idle_since = time.monotonic()
                self._idle.append(conn)
            else:
                conn.close()
        else:
            conn.close()
        self._slots.give()

    async def aclose(self) -> None:
        while self._idle:
            self._idle.pop().close()


def _request_head(
    method: bytes, target: bytes, headers: Headers, chunked: bool, codings: bytes
) -> bytes:
    parts = [method, b" ", target, b" HTTP/1.1\r\n"]
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    if chunked:
        parts += (b"transfer-encoding: ", codings + b", " if codings else b"", b"chunked\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)

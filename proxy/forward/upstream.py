"""A small pooled HTTP/1.1 client for the upstream leg, on asyncio protocols and httptools.

Why not httpx here: on the hot path every microsecond of per-request overhead is added to
every page of the app, and a general-purpose client spends far more than this one (see
bench/upstream_clients.py for the measurement). httpx stays the client for everything
else (Microsoft, discovery, JWKS).

What it does: keep-alive connections to one origin, bounded in number; request bodies
streamed with the transport's write flow control; response bodies streamed with
back-pressure (reading pauses while the consumer is behind); connect, read, write and
pool timeouts; a request that finds its idle connection closed by the upstream is retried
once on a fresh one when that is safe (retry.py). Every failure is an UpstreamError.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

from proxy.asgi import Headers
from proxy.config import UpstreamSettings
from proxy.errors import UpstreamError, UpstreamTimeout
from proxy.forward.connection import Connection, StaleConnection
from proxy.forward.retry import ReplayableBody, may_retry
from proxy.forward.slots import Slots

CHUNKED_END = b"0\r\n\r\n"
# How long the client's body waits for the upstream's 100 Continue (as curl does).
CONTINUE_WAIT = 1.0


class Exchange:
    """One request to the upstream and its response. Always `aclose()` it.

    `UpstreamPool.request` returns once the request is sent; `ready` tells whether the
    response head is already in (so a caller can skip any waiting machinery), and
    `wait_headers()` waits for it, sending the request again on a fresh connection when a
    reused idle connection turns out to have been closed by the upstream and that is safe.
    """

    def __init__(
        self,
        pool: UpstreamPool,
        head: bytes,
        is_head: bool,
        body: ReplayableBody | None,
        chunked: bool,
        retry: bool,
    ) -> None:
        self._pool = pool
        self._head = head
        self._is_head = is_head
        self._body = body
        self._chunked = chunked
        self._retry = retry
        self._conn: Connection | None = None
        self._reused = False
        self._sending: asyncio.Future[None] | None = None
        self.expect_continue = False
        self.aborted = False

    async def _send(self, fresh: bool = False) -> None:
        """Write the head; the body goes on in a task of its own while the response is
        awaited, so that an upstream answering mid-upload (an early 413, an echo that
        streams back what it reads) is heard at once rather than after a write timeout."""
        self._conn, self._reused = await self._pool._checkout(self._is_head, fresh)
        conn = self._conn
        conn.write(self._head)
        if self._body is not None:
            sending = asyncio.ensure_future(
                self._pool._send_body(
                    conn, self._body.chunks(), self._chunked, self.expect_continue
                )
            )
            sending.add_done_callback(self._body_done)
            self._sending = sending

    def _body_done(self, sending: asyncio.Future[None]) -> None:
        error = None if sending.cancelled() else sending.exception()
        if error is not None and not isinstance(error, UpstreamError):
            self.abort()  # the client went away mid-body
        if self._conn is not None:
            self._conn._wake()

    def _send_failure(self) -> BaseException | None:
        """Why the body could not be sent, once that is known (a stale connection aside)."""
        sending = self._sending
        if sending is None or not sending.done() or sending.cancelled():
            return None
        error = sending.exception()
        return None if isinstance(error, StaleConnection) else error

    async def body_sent(self) -> None:
        """Wait until the request body is sent or has failed; cancelling the wait leaves
        the sending be."""
        if self._sending is not None and not self._sending.done():
            await asyncio.wait((self._sending,))

    def _may_send_again(self, error: UpstreamError) -> bool:
        return (
            isinstance(error, StaleConnection)
            and self._reused
            and self._retry
            and (self._body is None or self._body.replayable)
        )

    async def _send_again(self) -> None:
        self._sending = None
        self._release()
        # A fresh connection this time: the other idle ones may be just as stale
        # (the upstream restarted, or closes every idle connection at once).
        await self._send(fresh=True)

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
            failure = self._send_failure()
            if isinstance(failure, UpstreamError):
                raise failure
            if conn.error is None:
                # The read timeout counts from the end of the upload, not from its start.
                sending = self._sending is not None and not self._sending.done()
                await conn.wait(None if sending else read_timeout, "response")
                continue
            error = conn.error
            await self.body_sent()  # the connection is gone: it ends at its next write
            if self.aborted:
                raise UpstreamError("the client went away")
            if self._may_send_again(error):
                await self._send_again()
                continue
            raise UpstreamError(str(error)) if isinstance(error, StaleConnection) else error

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
        sending = self._sending
        if sending is not None and not sending.done():
            # Answered before the upload ended: the upstream does not want the rest.
            if self._conn is not None:
                self._conn.reusable = False
            sending.cancel()
            await asyncio.wait((sending,))
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
        expect_continue: bool = False,
    ) -> Exchange:
        """Send one request (head and body); the caller then awaits the response head.
        A chunked body is re-chunked; `codings` are those the client applied before."""
        head = _request_head(method, target, headers, chunked, codings)
        replayable = ReplayableBody(body) if body is not None else None
        retry = body is None or may_retry(method, headers)
        exchange = Exchange(self, head, method == b"HEAD", replayable, chunked, retry)
        exchange.expect_continue = expect_continue
        try:
            await exchange._send()
        except BaseException:
            await exchange.aclose()
            raise
        return exchange

    async def _send_body(
        self, conn: Connection, body: AsyncIterator[bytes], chunked: bool, expect: bool
    ) -> None:
        write_timeout = self.settings.timeouts.write
        if expect:
            # The client's 100 Continue is sent when its body is first read: not before the
            # upstream's, and not at all when the upstream answers without wanting the body.
            await conn.wait_continue(CONTINUE_WAIT)
            if conn.headers_done or conn.error is not None:
                conn.reusable = False
                return
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

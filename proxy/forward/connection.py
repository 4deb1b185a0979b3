"""One pooled HTTP/1.1 connection to the upstream: an asyncio protocol fed to httptools.

It holds one request's response at a time (status, headers, body chunks buffered up to a
high-water mark, then reading pauses) and turns every way a connection can fail into an
UpstreamError, telling a reused connection closed unanswered (`StaleConnection`, which the
exchange may retry) from one cut mid-response.
"""

from __future__ import annotations

import asyncio
import collections
from typing import cast

import httptools

from proxy.asgi import Headers
from proxy.errors import UpstreamError, UpstreamProtocolError, UpstreamTimeout

# Reading from the upstream pauses once this much of a response waits for the client.
HIGH_WATER = 256 * 1024


_TIMED_OUT = object()


def _expire(waiter: asyncio.Future[object]) -> None:
    if not waiter.done():
        waiter.set_result(_TIMED_OUT)


class StaleConnection(UpstreamError):
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
        # Set when the upstream said 100 Continue, answered, or failed (wait_continue).
        self._go_on: asyncio.Event | None = None
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
                self.error = StaleConnection("the upstream closed the connection")
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
            if status == 100 and self._go_on is not None:
                self._go_on.set()
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
        if self._go_on is not None:
            self._go_on.set()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, timeout: float | None, what: str) -> None:
        # A bare timer rather than asyncio.timeout(): this runs for most requests, and the
        # context manager's bookkeeping costs more than the wait itself.
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[object] = loop.create_future()
        self._waiter = waiter
        timer = loop.call_later(timeout, _expire, waiter) if timeout is not None else None
        try:
            await waiter
        finally:
            if timer is not None:
                timer.cancel()
            self._waiter = None
        if waiter.result() is _TIMED_OUT:
            self.close()
            raise UpstreamTimeout(f"no {what} from the upstream within {timeout:g} s")

    async def wait_continue(self, timeout: float) -> None:
        """Wait for the upstream's 100 Continue (or its answer, or its failure), at most
        `timeout`: an upstream that ignores `Expect` is sent the body after that."""
        self._go_on = asyncio.Event()
        if self.headers_done or self.error is not None or self.closed:
            return
        try:
            async with asyncio.timeout(timeout):
                await self._go_on.wait()
        except TimeoutError:
            pass

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

"""The public listener's HTTP/1.1 protocol: uvicorn's httptools protocol with the limits a
server facing the internet needs, enforced while the request head is read.

uvicorn with httptools is the fastest correct server layer measured (bench/server_layers.py)
but has no limit on a request head (httptools buffers header lines as they come) and no
timeout for one that never completes. This protocol adds both:
- a head longer than `max_bytes` is answered 431 as soon as the limit is passed, before the
  parser has buffered more than that;
- a head not complete within `timeout` seconds of the connection (or of the first byte of
  a later request on it) is answered 408; a connection silent that long since it opened
  or since its last response is just closed, as browsers' speculative pre-connections
  expect (uvicorn's 5 s keep-alive usually closes an idle one first).
Either way the connection then ends. The cap on connections is uvicorn's own
`limit_concurrency` (server.py sets it).

Head bytes are counted as they arrive: a read that passes the limit is fed to the parser
only up to the limit, so a head just under it followed by its body in the same read is not
mistaken for a large head.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass
from typing import Any, cast

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from proxy.errors import BadRequest, ConsentProxyError
from proxy.forward.headers import RequestHeadersTooLarge
from proxy.forward.pages import render_error

log = logging.getLogger("consent_proxy.server")

# How long a refused client's remaining input is read and dropped before the close.
LINGER = 2.0
# Writes at least this large go out at once (after any that wait): a streamed body's chunks.
WRITE_AT_ONCE = 64 * 1024


class RequestHeadTimeout(BadRequest):
    code = "request_head_timeout"
    status = 408
    title = "Request timeout"


@dataclass(frozen=True, slots=True)
class HeadLimits:
    """Picklable, so that `--workers` processes receive it with uvicorn's config."""

    max_bytes: int
    timeout: float


def protocol_factory(limits: HeadLimits) -> Any:
    """The `http` option for uvicorn.Config: the limited protocol bound to `limits`."""
    return functools.partial(LimitedHttpToolsProtocol, limits=limits)


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: HeadLimits,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits
        self.head_left = limits.max_bytes  # bytes the current head may still take
        self.head_seen = 0  # bytes of the current head received so far
        self.in_head = True  # the next bytes belong to a request head
        self.heads_done = 0
        self.waiting_since = 0.0  # when the wait for the current head began
        self.head_timer: asyncio.TimerHandle | None = None
        self.refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(cast(asyncio.Transport, CoalescingTransport(transport, self.loop)))
        self.waiting_since = self.loop.time()
        self._check_in(self.limits.timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return  # what a refused client still sends is read and dropped (`_refuse`)
        if not self.in_head:
            super().data_received(data)
            return
        if not self.head_seen and self.heads_done:
            self.waiting_since = self.loop.time()  # a later request on a kept-alive connection
        if len(data) <= self.head_left:
            self.head_left -= len(data)
            self.head_seen += len(data)
            super().data_received(data)
            return
        # The limit is passed within this read: let the parser see only what the head may
        # take; if the head ends within that, the rest is body or the next request.
        fits, rest = data[: self.head_left], data[self.head_left :]
        done = self.heads_done
        self.head_left = 0
        self.head_seen += len(fits)
        if fits:
            super().data_received(fits)
        if self.transport.is_closing():
            return
        if self.heads_done == done:
            size = self.limits.max_bytes
            self._refuse(
                RequestHeadersTooLarge(
                    f"the request headers are longer than {size} bytes, which is the most "
                    "accepted (large cookies are the usual cause: clearing them helps)"
                )
            )
            return
        protocol = self.transport.get_protocol()  # a WebSocket upgrade took the socket over
        protocol.data_received(rest)  # type: ignore[attr-defined]

    def on_headers_complete(self) -> None:
        self.in_head = False
        self.heads_done += 1
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.in_head = True
        self.head_left = self.limits.max_bytes
        self.head_seen = 0

    def handle_websocket_upgrade(self) -> None:
        self._disarm()  # the socket is the WebSocket protocol's from now on
        super().handle_websocket_upgrade()

    def on_response_complete(self) -> None:
        self.waiting_since = self.loop.time()  # silence from now on counts
        super().on_response_complete()

    # One timer per connection, not one per request: it looks at the clock when it fires
    # and sets itself for the rest of the wait (a timer per request costs as much as the
    # rest of this class on the hot path).
    def _check_in(self, delay: float) -> None:
        self.head_timer = self.loop.call_later(delay, self._check_head)

    def _check_head(self) -> None:
        self.head_timer = None
        if self.transport.is_closing() or self.transport.get_protocol() is not self:
            return
        timeout = self.limits.timeout
        if not self.in_head or (self.cycle is not None and not self.cycle.response_complete):
            self._check_in(timeout)  # a request is being read or answered: not waiting
            return
        waited = self.loop.time() - self.waiting_since
        if waited < timeout:
            self._check_in(timeout - waited)
        elif not self.head_seen:
            self.transport.close()  # nothing asked: nothing to answer
        else:
            self._refuse(
                RequestHeadTimeout(f"the request headers did not arrive within {timeout:g} s")
            )

    def _disarm(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def _refuse(self, error: ConsentProxyError) -> None:
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "?"
        log.info("connection from %s closed: %s", client, error.description)
        self._disarm()
        if self.cycle is not None and not self.cycle.response_complete:
            self.transport.close()  # in the middle of another response: nothing to say
            return
        # Closing a socket with unread input makes the kernel reset the connection, and a
        # client still sending would lose our answer with it: answer, stop writing, and
        # read (and drop) what still comes for a moment before closing (nginx's lingering
        # close).
        self.refused = True
        self.transport.write(_response(error, self.headers or []))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER, self.transport.close)


def _response(error: ConsentProxyError, headers: list[tuple[bytes, bytes]]) -> bytes:
    """The error page, in the form the headers read so far ask for (JSON or HTML)."""
    body, content_type = render_error({"headers": headers}, error)
    return b"HTTP/1.1 %d %b\r\n%b\r\n%b" % (
        error.status,
        error.title.encode(),
        b"".join(
            b"%b: %b\r\n" % header
            for header in (
                (b"content-type", content_type),
                (b"content-length", b"%d" % len(body)),
                (b"cache-control", b"no-store"),
                (b"x-content-type-options", b"nosniff"),
                (b"connection", b"close"),
            )
        ),
        body,
    )


class CoalescingTransport:
    """The client's transport, with the writes made in one turn of the event loop sent
    together: a response's head and its body leave in one send, not two. On loopback and
    in most virtual machines a send costs more than all the rest of the proxy's work on a
    small response; the head waits for its body a single loop turn at most."""

    __slots__ = ("_loop", "_parts", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> None:
        if len(data) >= WRITE_AT_ONCE:
            self._parts.append(data)
            self.flush()
            return
        if not self._parts:
            self._loop.call_soon(self.flush)
        self._parts.append(data)

    def flush(self) -> None:
        parts = self._parts
        if not parts:
            return
        self._parts = []
        if not self._transport.is_closing():
            self._transport.write(parts[0] if len(parts) == 1 else b"".join(parts))

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._parts))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

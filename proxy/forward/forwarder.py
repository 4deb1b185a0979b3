"""The streaming reverse proxy core: an ASGI app that forwards HTTP to the upstream.

It knows nothing about identity. Middlewares in front of it may edit `scope["headers"]`
and wrap `send`; this module only forwards what it is given, as fast and as faithfully as
it can:
- request and response bodies stream both ways with back-pressure;
- hop-by-hop headers go, `X-Forwarded-*` are set (headers.py);
- absolute `Location`/`Content-Location` and `Set-Cookie` domains naming the upstream's
  internal origin are rewritten to the public origin, each `Set-Cookie` kept apart;
- a client that goes away cancels the upstream request;
- an unreachable or slow upstream is a small 502/504 page, never a traceback.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

from proxy.asgi import Headers, Message, Receive, Scope, Send
from proxy.config import Settings
from proxy.errors import BadRequest, UpstreamError
from proxy.forward.headers import (
    HOP_BY_HOP,
    ForwardedRequest,
    RequestHeaderRules,
    connection_tokens,
)
from proxy.forward.pages import send_error
from proxy.forward.upstream import Exchange, UpstreamPool
from proxy.ops import metrics

log = logging.getLogger("consent_proxy.forward")

# A browser that leaves while the upstream is still silent is noticed from this long on.
WATCH_AFTER = 0.05
# Response headers that may name the upstream's internal origin.
REWRITTEN = frozenset({b"location", b"content-location", b"set-cookie"})


class ClientDisconnected(Exception):
    """The browser went away before its request body was complete."""


class ResponseRewriter:
    """Make the upstream's response speak of the public origin, not the internal one."""

    def __init__(self, settings: Settings) -> None:
        url = urlsplit(settings.upstream.url)
        default_port = 443 if url.scheme == "https" else 80
        host = (url.hostname or "").lower()
        port = url.port or default_port
        names = [f"{host}:{port}"] + ([host] if port == default_port else [])
        # Absolute and protocol-relative ("//host/...") forms both leak the internal origin.
        self.internal_origins = tuple(
            prefix for n in names for prefix in (f"{url.scheme}://{n}".encode(), f"//{n}".encode())
        )
        self.internal_host = host.encode()
        self.public_origin = settings.public_url.encode() if settings.public_url else None
        public_host = urlsplit(settings.public_url).hostname if settings.public_url else None
        self.public_cookie_domain = public_host.encode() if public_host else None

    def headers(self, upstream: Headers, request: ForwardedRequest) -> Headers:
        out: Headers = []
        named: set[bytes] = set()
        for name, value in upstream:  # names come lower-cased from our client
            if name in HOP_BY_HOP:
                if name == b"connection":
                    named |= connection_tokens(value)
                continue
            if name in REWRITTEN:
                if name == b"set-cookie":
                    value = self.cookie(value)
                else:
                    value = self.location(value, request)
            out.append((name, value))
        if named:  # rare: an upstream naming its own hop-by-hop headers
            out = [(name, value) for name, value in out if name not in named]
        return out

    def location(self, value: bytes, request: ForwardedRequest) -> bytes:
        lowered = value[:64].lower()
        for origin in self.internal_origins:
            if lowered.startswith(origin):
                rest = value[len(origin) :]
                if rest[:1] in (b"", b"/", b"?", b"#"):
                    public = self.public_origin or request.proto + b"://" + request.host
                    return public + rest
        return value

    def cookie(self, value: bytes) -> bytes:
        if b"domain" not in value.lower():  # attribute names are case-insensitive
            return value
        parts = value.split(b";")
        kept = [parts[0]]
        for attr in parts[1:]:
            key, _, domain = attr.strip().partition(b"=")
            if (
                key.lower() == b"domain"
                and domain.strip().lstrip(b".").lower() == self.internal_host
            ):
                if self.public_cookie_domain is None:
                    continue  # a host-only cookie for whatever host the browser used
                attr = b" Domain=" + self.public_cookie_domain
            kept.append(attr)
        return b";".join(kept)


class Forwarder:
    """ASGI app: forward an HTTP request to the upstream and stream the answer back."""

    def __init__(self, settings: Settings, rules: RequestHeaderRules) -> None:
        self.pool = UpstreamPool(settings.upstream)
        self.rules = rules
        self.rewriter = ResponseRewriter(settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            request = self.rules.upstream_request(scope)
        except BadRequest as exc:
            log.info("request refused: %s %s: %s", scope["method"], scope["path"], exc.description)
            metrics.count_response(exc.status)  # metrics
            await send_error(scope, send, exc)
            return
        target = scope.get("raw_path") or scope["path"].encode()
        if scope.get("query_string"):
            target = target + b"?" + scope["query_string"]
        body = _request_body(receive) if request.has_body else None
        send = metrics.watch_response(send)  # metrics: counts the response, times its head
        try:
            exchange = await self.pool.request(
                scope["method"].encode(),
                target,
                request.headers,
                body,
                request.chunked,
                request.codings,
                request.expect_continue,
            )
        except UpstreamError as exc:
            await self._fail(scope, send, exc)
            return
        try:
            await self._respond(scope, receive, send, exchange, request)
        finally:
            await exchange.aclose()

    async def _respond(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        exchange: Exchange,
        request: ForwardedRequest,
    ) -> None:
        if not exchange.ready:
            armed: list[asyncio.Future[None]] = []
            # Most answers come within milliseconds: watch for a browser that goes away
            # only once the wait is long enough to matter, saving a task per request.
            timer = asyncio.get_running_loop().call_later(
                WATCH_AFTER, lambda: armed.append(_watch(receive, exchange))
            )
            try:
                await exchange.wait_headers()
            except UpstreamError as exc:
                if not exchange.aborted:
                    await self._fail(scope, send, exc)
                return
            finally:
                timer.cancel()
                for task in armed:
                    task.cancel()
        if exchange.complete:
            # The common case: the whole response is in. No task, no more waits.
            await send(self._start(exchange, request))
            await send({"type": "http.response.body", "body": exchange.first_chunk()})
            return
        watcher = _watch(receive, exchange)
        try:
            await send(self._start(exchange, request))
            await self._stream(exchange, send)
        finally:
            watcher.cancel()

    def _start(self, exchange: Exchange, request: ForwardedRequest) -> Message:
        headers = self.rewriter.headers(exchange.headers, request)
        return {"type": "http.response.start", "status": exchange.status, "headers": headers}

    async def _stream(self, exchange: Exchange, send: Send) -> None:
        try:
            async for chunk in exchange.body():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except UpstreamError as exc:
            if exchange.aborted:
                return
            # Headers are gone already: the only honest signal left is to break the response.
            log.warning("upstream response broken off: %s", exc.description)
            raise
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _fail(self, scope: Scope, send: Send, exc: UpstreamError) -> None:
        log.warning(
            "upstream request failed: %s %s -> %d %s: %s",
            scope["method"],
            scope["path"],
            exc.status,
            exc.code,
            exc.description,
        )
        await send_error(scope, send, exc)

    async def aclose(self) -> None:
        await self.pool.aclose()


async def _request_body(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        yield message.get("body", b"")
        if not message.get("more_body", False):
            return


def _watch(receive: Receive, exchange: Exchange) -> asyncio.Future[None]:
    return asyncio.ensure_future(_watch_disconnect(receive, exchange))


async def _watch_disconnect(receive: Receive, exchange: Exchange) -> None:
    # Once the request body was handed to the upstream (or there was none), whatever
    # receive() yields is the rest of an unread body, or the disconnect. Until then the
    # body's sending notices a client that goes away.
    await exchange.body_sent()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            exchange.abort()
            return

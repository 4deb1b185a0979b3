"""WebSocket pass-through: the browser's socket on one side, the upstream's on the other.

The handshake is repeated towards the upstream with the browser's headers (less the
hop-by-hop and handshake ones, which the client library writes itself) and its
subprotocols; the upstream's choice of subprotocol is what the browser gets, and so are
the other headers of its handshake response (Set-Cookie above all), under the same rules
as a plain HTTP response (hop-by-hop ones dropped, the internal origin rewritten). Messages
and close codes are relayed both ways until one side closes. A refused handshake is
relayed with the upstream's status when the server supports the ASGI
`websocket.http.response` extension, otherwise as a close.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from urllib.parse import urlsplit

from websockets import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.asyncio.client import ClientConnection, connect

from proxy.asgi import Headers, Receive, Scope, Send
from proxy.config import Settings
from proxy.errors import BadRequest, UpstreamError, UpstreamTimeout
from proxy.forward.forwarder import ResponseRewriter
from proxy.forward.headers import ForwardedRequest, RequestHeaderRules
from proxy.forward.pages import render_error

log = logging.getLogger("consent_proxy.websocket")

# The client library writes these itself; copies from the browser would be duplicates.
HANDSHAKE_HEADERS = frozenset(
    {
        b"host",
        b"sec-websocket-key",
        b"sec-websocket-version",
        b"sec-websocket-extensions",
        b"sec-websocket-protocol",
        b"sec-websocket-accept",
    }
)
# The Host becomes part of a URI for the client library: a host[:port] and nothing else
# (no user info, which the library would turn into an Authorization header).
HOST = re.compile(rb"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~%-]+)(:[0-9]{1,5})?")
MAX_MESSAGE = 16 * 1024 * 1024  # as uvicorn's default on the browser side
CLOSE_GOING_AWAY = 1001
CLOSE_INTERNAL_ERROR = 1011


class WebSocketForwarder:
    def __init__(self, settings: Settings, rules: RequestHeaderRules) -> None:
        url = urlsplit(settings.upstream.url)
        self.secure = url.scheme == "https"
        self.host = url.hostname or ""
        self.port = url.port or (443 if self.secure else 80)
        self.connect_timeout = settings.upstream.timeouts.connect
        self.rules = rules
        self.rewriter = ResponseRewriter(settings)
        self.ssl: ssl.SSLContext | None = None
        if self.secure:
            self.ssl = ssl.create_default_context(cafile=settings.upstream.ca_file)
            if not settings.upstream.tls_verify:
                self.ssl.check_hostname = False
                self.ssl.verify_mode = ssl.CERT_NONE

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        try:
            upstream, request = await self._connect(scope)
        except InvalidStatus as exc:
            response = exc.response
            await self._deny(scope, send, response.status_code, bytes(response.body or b""))
            return
        except (UpstreamError, BadRequest) as exc:
            log.warning("websocket not forwarded: %s %s", scope["path"], exc.description)
            body, _ = render_error(scope, exc)
            await self._deny(scope, send, exc.status, body)
            return
        async with upstream:
            await send(
                {
                    "type": "websocket.accept",
                    "subprotocol": upstream.subprotocol,
                    "headers": self._accept_headers(upstream, request),
                }
            )
            await _relay(receive, send, upstream)

    def _accept_headers(self, upstream: ClientConnection, request: ForwardedRequest) -> Headers:
        response = upstream.response
        if response is None:
            return []
        headers = [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in response.headers.raw_items()
        ]
        # The browser's server writes the handshake headers of its own side.
        return [
            (name, value)
            for name, value in self.rewriter.headers(headers, request)
            if name not in HANDSHAKE_HEADERS and name != b"content-length"
        ]

    async def _connect(self, scope: Scope) -> tuple[ClientConnection, ForwardedRequest]:
        request = self.rules.upstream_request(scope)
        # The Host the rules chose for the upstream (the client's, or the upstream's own),
        # exactly as for plain HTTP; the library writes it from the URI.
        netloc = next(value for name, value in request.headers if name == b"host")
        if not _usable_host(netloc):
            raise BadRequest(f"the Host header {netloc.decode('latin-1')!r} is not a host[:port]")
        headers = [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in request.headers
            if name not in HANDSHAKE_HEADERS
        ]
        target = scope.get("raw_path") or scope["path"].encode()
        if scope.get("query_string"):
            target += b"?" + scope["query_string"]
        uri = f"{'wss' if self.secure else 'ws'}://{netloc.decode()}{target.decode('latin-1')}"
        try:
            upstream = await connect(
                uri,
                host=self.host,
                port=self.port,
                ssl=self.ssl,
                server_hostname=self.host if self.secure else None,
                additional_headers=headers,
                subprotocols=scope.get("subprotocols") or None,
                compression=None,
                user_agent_header=None,
                proxy=None,
                open_timeout=self.connect_timeout,
                ping_interval=None,
                max_size=MAX_MESSAGE,
            )
        except InvalidStatus:
            raise
        except TimeoutError:
            raise UpstreamTimeout("the upstream did not accept the WebSocket in time") from None
        except InvalidURI:  # its message would repeat the query string, which may hold secrets
            raise BadRequest("the request cannot be forwarded as a WebSocket") from None
        except (OSError, InvalidHandshake, ValueError) as exc:
            raise UpstreamError(f"cannot open a WebSocket to the upstream: {exc}") from None
        return upstream, request

    async def _deny(self, scope: Scope, send: Send, status: int, body: bytes) -> None:
        if "websocket.http.response" in scope.get("extensions", {}):
            await send(
                {
                    "type": "websocket.http.response.start",
                    "status": status,
                    "headers": [(b"content-length", str(len(body)).encode())],
                }
            )
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await send({"type": "websocket.close", "code": CLOSE_INTERNAL_ERROR})


async def _relay(receive: Receive, send: Send, upstream: ClientConnection) -> None:
    to_upstream = asyncio.ensure_future(_browser_to_upstream(receive, upstream))
    to_browser = asyncio.ensure_future(_upstream_to_browser(send, upstream))
    try:
        await asyncio.wait({to_upstream, to_browser}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (to_upstream, to_browser):
            task.cancel()
        await asyncio.gather(to_upstream, to_browser, return_exceptions=True)


async def _browser_to_upstream(receive: Receive, upstream: ClientConnection) -> None:
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "websocket.receive":
            text = message.get("text")
            try:
                await upstream.send(text if text is not None else message.get("bytes") or b"")
            except ConnectionClosed:
                return
        elif kind == "websocket.disconnect":
            code = message.get("code", CLOSE_GOING_AWAY)
            reason = message.get("reason") or ""
            await upstream.close(*((code, reason) if _sendable(code) else (CLOSE_GOING_AWAY,)))
            return


async def _upstream_to_browser(send: Send, upstream: ClientConnection) -> None:
    try:
        async for data in upstream:
            if isinstance(data, str):
                await send({"type": "websocket.send", "text": data})
            else:
                await send({"type": "websocket.send", "bytes": data})
    except ConnectionClosed:
        pass
    code = upstream.close_code
    code = code if code is not None and _sendable(code) else CLOSE_GOING_AWAY
    reason = upstream.close_reason or ""
    await send({"type": "websocket.close", "code": code, "reason": reason})


def _usable_host(host: bytes) -> bool:
    match = HOST.fullmatch(host)
    return match is not None and (not match[2] or int(match[2][1:]) <= 65535)


def _sendable(code: int) -> bool:
    # 1005, 1006 and 1015 describe what happened; they may not be sent in a close frame.
    return code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011) or 3000 <= code < 5000

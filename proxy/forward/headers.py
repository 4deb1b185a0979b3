"""Which request headers go upstream.

Rules, in order, for every forwarded request:
- hop-by-hop headers (RFC 9110 7.6.1) and any named in `Connection` are removed, but a
  client's `Connection` can never name away a header the proxy sets itself (identity
  headers, `X-Request-ID`, `X-Forwarded-*`): those are not part of the client's message;
- headers the proxy itself sets are removed from what the client sent, whatever their
  spelling: servers behind us may fold `X_Forwarded_For` or `x.forwarded.for` into
  `X-Forwarded-For`, so names are compared after folding case, `_` and `.` to `-`;
- `X-Forwarded-For/Proto/Host` are set; inbound values are kept (and extended) only when
  the TCP peer is one of the configured trusted proxies;
- `Host` is the client's (preserve_host) or the upstream's own;
- headers larger than `server.max_head_bytes` in all are refused (431), not forwarded.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

from proxy.asgi import App, Headers, Receive, Scope, Send
from proxy.config import IpNetwork, Settings
from proxy.config.values import peer_checker
from proxy.errors import BadRequest
from proxy.ops.logs import REQUEST_ID_HEADER

# RFC 9110 5.6.2: a token, which is what a transfer-coding name is.
TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
# `Expect: 100-continue` goes up (the upstream decides whether it wants the body, see
# ForwardedRequest.expect_continue); any other expectation is unknown to HTTP and goes.
REQUEST_ONLY_DROPPED = frozenset({b"host"})
FORWARDED = frozenset(
    {
        b"forwarded",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-forwarded-port",
        b"x-forwarded-prefix",
        b"x-real-ip",
    }
)


class RequestHeadersTooLarge(BadRequest):
    code = "request_headers_too_large"
    status = 431
    title = "Request headers too large"


# A WebSocket's scope says ws/wss; apps compare X-Forwarded-Proto with http/https.
WEB_SCHEMES = {"http": "http", "https": "https", "ws": "http", "wss": "https"}


MAX_REMEMBERED_NAMES = 4096  # a bound: names are attacker-chosen


def fold(name: bytes) -> bytes:
    """The form some servers turn a header name into: lower case, `_` and `.` as `-`."""
    name = name.lower()
    if b"_" in name or b"." in name:
        name = name.replace(b"_", b"-").replace(b".", b"-")
    return name


def connection_tokens(value: bytes) -> set[bytes]:
    return {fold(token.strip()) for token in value.split(b",") if token.strip()}


class ForwardedRequest:
    """What the forwarder needs to know about one request, computed in one pass."""

    __slots__ = (
        "chunked",
        "codings",
        "content_length",
        "expect_continue",
        "headers",
        "host",
        "proto",
    )

    def __init__(self) -> None:
        self.headers: Headers = []
        self.host = b""
        self.proto = b"http"
        self.content_length: bytes | None = None
        self.chunked = False
        # Transfer codings the client applied before chunking (`gzip` of `gzip, chunked`):
        # the body is re-chunked on the way up, and these must stay named or it is garbled.
        self.codings = b""
        # The client waits for a 100 Continue before it sends the body; the ASGI server
        # sends one when the body is first read, so it is read once the upstream said so.
        self.expect_continue = False

    @property
    def has_body(self) -> bool:
        return self.chunked or (self.content_length not in (None, b"0"))


# What the rules do with a header, by name; decided once per name and remembered.
KEEP, DROP, HOST, LENGTH, CODING, CONNECTION, XFF, XFP, XFH, EXPECT = range(10)
_TRUSTED_INBOUND = {b"x-forwarded-for": XFF, b"x-forwarded-proto": XFP, b"x-forwarded-host": XFH}


class RequestHeaderRules:
    def __init__(self, settings: Settings, protected: Iterable[bytes] = ()) -> None:
        upstream = urlsplit(settings.upstream.url)
        self.upstream_host = (upstream.netloc or "").encode("latin-1")
        self.preserve_host = settings.upstream.preserve_host
        # The listener refuses a longer head while reading it (http_server.py); this check
        # of names and values holds whatever server is in front.
        self.max_header_bytes = settings.server.max_head_bytes
        self.trusted_networks: tuple[IpNetwork, ...] = settings.trusted_proxies
        self.dropped = HOP_BY_HOP | REQUEST_ONLY_DROPPED | {fold(n) for n in protected}
        self.dropped_untrusted = self.dropped | FORWARDED
        # The headers the proxy sets itself: a client's `Connection` header names headers
        # of the client's own message, never these (cf. Traefik CVE-2024-45410).
        own = {fold(n.encode("latin-1")) for n in settings.headers.model_dump().values()}
        self.never_named = frozenset(
            own | FORWARDED | {REQUEST_ID_HEADER, b"content-length", b"host"}
        )
        self._trusted = peer_checker(self.trusted_networks)
        self._kinds: tuple[dict[bytes, int], dict[bytes, int]] = ({}, {})

    def _kind(self, name: bytes, trusted: bool) -> int:
        if name == b"connection":
            return CONNECTION
        if name == b"host":
            return HOST
        if name == b"expect":
            return EXPECT
        if name == b"content-length":
            return LENGTH
        if name == b"transfer-encoding":
            return CODING
        if trusted and name in _TRUSTED_INBOUND:
            return _TRUSTED_INBOUND[name]
        folded = fold(name)
        if folded in (self.dropped if trusted else self.dropped_untrusted):
            return DROP
        if trusted and folded in FORWARDED and folded != name:
            return DROP  # only the canonical spelling is trusted, even from a proxy
        return KEEP

    def upstream_request(self, scope: MutableMapping[str, Any]) -> ForwardedRequest:
        out = ForwardedRequest()
        client = scope.get("client")
        peer = client[0] if client else ""
        trusted = bool(self.trusted_networks) and self._trusted(peer)
        kinds = self._kinds[trusted]
        named: set[bytes] = set()
        inbound_xff = inbound_proto = inbound_host = b""
        size = hosts = 0
        headers = out.headers
        for name, value in scope["headers"]:
            size += len(name) + len(value)
            kind = kinds.get(name)
            if kind is None:
                kind = self._kind(name, trusted)
                if len(kinds) < MAX_REMEMBERED_NAMES:  # a bound: names are attacker-chosen
                    kinds[name] = kind
            if kind == KEEP:
                headers.append((name, value))
            elif kind == DROP:
                continue
            elif kind == CONNECTION:
                named |= connection_tokens(value)
            elif kind == HOST:
                if hosts:
                    # RFC 9112 3.2: a 400. Which one would each server in the chain believe?
                    raise BadRequest("the request has more than one Host header")
                hosts += 1
                out.host = value
            elif kind == LENGTH:
                out.content_length = value
                headers.append((name, value))
            elif kind == CODING:
                out.chunked = True
                out.codings = _join(out.codings, _codings_before_chunked(value))
            elif kind == XFF:  # re-added below, extended
                inbound_xff = value if not inbound_xff else inbound_xff + b", " + value
            elif kind == XFP:
                inbound_proto = value
                headers.append((name, value))
            elif kind == EXPECT:
                if value.strip().lower() == b"100-continue":
                    out.expect_continue = True
                    headers.append((name, b"100-continue"))
            elif kind == XFH:
                inbound_host = value
                headers.append((name, value))
        if size > self.max_header_bytes:
            raise RequestHeadersTooLarge(
                f"the request headers are {size} bytes long; at most {self.max_header_bytes} "
                "are accepted (large cookies are the usual cause: clearing them helps)"
            )
        named -= self.never_named
        if named:  # hop-by-hop for the client's connection only (RFC 9110 7.6.1)
            headers[:] = [(n, v) for n, v in headers if fold(n) not in named]
        if out.chunked:
            out.content_length = None
            headers[:] = [(n, v) for n, v in headers if n != b"content-length"]
        # A chain of proxies may list several values; the first is what the client used.
        scheme = WEB_SCHEMES.get(scope.get("scheme", "http"), "http")
        out.proto = _first(inbound_proto) or scheme.encode("latin-1")
        public_host = _first(inbound_host) or out.host
        headers.append(
            (b"host", out.host if self.preserve_host and out.host else self.upstream_host)
        )
        peer_bytes = peer.encode("latin-1")
        headers.append(
            (b"x-forwarded-for", inbound_xff + b", " + peer_bytes if inbound_xff else peer_bytes)
        )
        if not inbound_proto:
            headers.append((b"x-forwarded-proto", out.proto))
        if not inbound_host and out.host:
            headers.append((b"x-forwarded-host", out.host))
        # No Host at all (HTTP/1.0): the address the client connected to is the public one.
        out.host = public_host or _server_netloc(scope)
        return out


def _first(value: bytes) -> bytes:
    return value.split(b",", 1)[0].strip() if value else value


def _server_netloc(scope: MutableMapping[str, Any]) -> bytes:
    server = scope.get("server")
    if not server or server[1] is None:
        return b""
    host, port = server
    return (f"[{host}]:{port}" if ":" in host else f"{host}:{port}").encode("latin-1")


class ProtectedHeaders:
    """Outermost: the headers the proxy sets are removed from every inbound request, in
    every spelling, session or not. Nothing downstream ever sees a browser's copy."""

    def __init__(self, app: App, names: Iterable[str]) -> None:
        self.app = app
        self.names = frozenset(fold(n.encode("latin-1")) for n in names)
        # Header names repeat from request to request: fold each one once.
        self._seen: dict[bytes, bool] = {}

    def protected(self, name: bytes) -> bool:
        hit = self._seen.get(name)
        if hit is None:
            hit = fold(name) in self.names
            if len(self._seen) < MAX_REMEMBERED_NAMES:
                self._seen[name] = hit
        return hit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            headers = scope["headers"]
            seen = self._seen
            for name, _ in headers:  # a plain loop: this runs for every request
                hit = seen.get(name)
                if hit or (hit is None and self.protected(name)):
                    scope["headers"] = [(n, v) for n, v in headers if not self.protected(n)]
                    break
        await self.app(scope, receive, send)


def _codings_before_chunked(value: bytes) -> bytes:
    """The codings of one Transfer-Encoding value other than `chunked`, or a 400 for a
    value that is not a list of coding names (the server only checks the last one)."""
    kept = []
    for token in value.split(b","):
        coding = token.strip().lower()
        if not TOKEN.fullmatch(coding):
            raise BadRequest("the Transfer-Encoding header is not a list of transfer codings")
        if coding != b"chunked":
            kept.append(coding)
    return b", ".join(kept)


def _join(first: bytes, second: bytes) -> bytes:
    return first + b", " + second if first and second else first or second

"""The forward-auth endpoint: the proxy's identity core behind an ingress that carries the
bytes itself (nginx `auth_request`, Caddy `forward_auth`, Traefik `forwardAuth`, Envoy
`ext_authz`).

The ingress asks `<consent.prefix>auth` about each request of the browser, sending its
headers (cookies) and where it was going (`X-Original-URI`/`-Method` from nginx,
`X-Original-URL` from ingress-nginx, `X-Forwarded-Uri`/`-Method` from Caddy and Traefik,
or the original path appended to the endpoint's, as Envoy does). It is the same request the
built-in proxy would forward, and it takes the same path through the same objects:
`ForwardAuth` turns the question back into that request (before the session middleware,
which ends a session on a logout path), the session middleware resolves and binds the
session, `AuthBranch` sends it to `IdentityHeaders` and `AuthAnswer` instead of the
forwarder, and the answer carries exactly the headers that chain added.

The answer is always 200 — the app does authentication, the proxy only adds what it
knows — and says how long the ingress may reuse it (Cache-Control). Only a trusted ingress
(`trusted_proxies`) is answered with identity: the answer holds access tokens.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from urllib.parse import unquote, urlsplit

from proxy.asgi import App, Headers, Receive, Scope, Send
from proxy.config import IpNetwork
from proxy.config.values import peer_checker
from proxy.identity.session import request_state
from proxy.ops import metrics

log = logging.getLogger("consent_proxy.forward_auth")

SCOPE_KEY = "consent_proxy.forward_auth"
# Where ingresses say which request they are asking about, most specific first.
URI_HEADERS = (b"x-original-uri", b"x-forwarded-uri", b"x-original-url")
METHOD_HEADERS = (b"x-original-method", b"x-forwarded-method")
# An ingress that did not ask (a request from anyone else, a misconfiguration): no identity.
NOTHING: Headers = [(b"cache-control", b"no-store"), (b"content-length", b"0")]
MAX_WARNED = 256


class ForwardAuth:
    """Outside the session middleware: a question from a trusted ingress becomes the
    request it asks about (method, path, query; the browser's own headers), marked so that
    `AuthBranch` answers it instead of forwarding it."""

    def __init__(self, app: App, path: str, trusted: Iterable[IpNetwork]) -> None:
        self.app = app
        self.path = path
        self.trusted = tuple(trusted)
        self._is_trusted = peer_checker(self.trusted)
        self._warned: set[str] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or not (path == self.path or path.startswith(self.path + "/")):
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        peer = client[0] if client else ""
        if not self._is_trusted(peer):
            self._warn(peer)
            metrics.FORWARD_AUTH_ANSWERS.labels("refused").inc()
            await _respond(send, NOTHING)
            return
        await self.app(self.original(scope), receive, send)

    def original(self, scope: Scope) -> Scope:
        headers = dict(scope["headers"][::-1])  # the first of a repeated header wins
        target = next((headers[n] for n in URI_HEADERS if headers.get(n)), b"")
        method = next((headers[n] for n in METHOD_HEADERS if headers.get(n)), b"")
        if not target:  # Envoy: the original path follows the endpoint's own
            raw: bytes = scope.get("raw_path") or scope["path"].encode("latin-1")
            target = raw[len(self.path) :] or b"/"
            query = scope.get("query_string", b"")
            target += b"?" + query if query else b""
        parts = urlsplit(target.decode("latin-1"))
        original = dict(scope)
        raw_path = parts.path if parts.path.startswith("/") else "/"
        original["raw_path"] = raw_path.encode("latin-1")
        original["path"] = unquote(raw_path)  # as the server would decode the request's
        original["query_string"] = parts.query.encode("latin-1")
        original["method"] = method.decode("latin-1").upper() or scope["method"]
        original[SCOPE_KEY] = True
        return original

    def _warn(self, peer: str) -> None:
        if peer not in self._warned and len(self._warned) < MAX_WARNED:
            self._warned.add(peer)
            log.warning(
                "forward-auth asked by %s, which is not in trusted_proxies: answered without "
                "identity",
                peer or "an unknown peer",
            )


class AuthBranch:
    """Inside the session middleware: questions from the ingress go to `answer` (the
    identity headers, then `AuthAnswer`), every other request goes on as always."""

    def __init__(self, answer: App, other: App) -> None:
        self.answer = answer
        self.other = other

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get(SCOPE_KEY):
            await self.answer(scope, receive, send)
        else:
            await self.other(scope, receive, send)


class AuthAnswer:
    """The end of the chain in place of the forwarder: 200, with the headers the chain
    added to the request, and how long the ingress may reuse the answer.

    The headers the proxy sets were removed from the inbound request in every spelling,
    so every one of them found here was added by `IdentityHeaders`.
    """

    def __init__(
        self,
        names: Iterable[str],
        expires_header: str,
        max_age: float,
        unconnected_max_age: float,
        refresh_leeway: float,
        assertion_lifetime: float | None,
    ) -> None:
        self.names = frozenset(n.lower().encode("latin-1") for n in names)
        self.expires = expires_header.lower().encode("latin-1")
        # A reused assertion has at least a quarter of its lifetime left: never cache past it.
        cap = assertion_lifetime / 4 if assertion_lifetime else max_age
        self.max_age = min(max_age, cap)
        self.unconnected_max_age = min(unconnected_max_age, cap)
        self.refresh_leeway = refresh_leeway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = [(n, v) for n, v in scope["headers"] if n in self.names]
        metrics.FORWARD_AUTH_ANSWERS.labels("identity" if found else "anonymous").inc()
        age = self.reuse(found, request_state(scope).end_reason is not None)
        cache = f"max-age={age}".encode() if age > 0 else b"no-store"
        await _respond(send, [*found, (b"cache-control", cache), (b"content-length", b"0")])

    def reuse(self, found: Headers, ending: bool) -> int:
        """Seconds an ingress may reuse this answer: an access token's answer until shortly
        before the proxy would refresh it (capped), anything else briefly."""
        if ending:  # the answer ends a session: the next question must reach the proxy
            return 0
        expires = next((v for n, v in found if n == self.expires), None)
        if expires is None:
            return int(self.unconnected_max_age)
        left = int(expires) - self.refresh_leeway - time.time()
        return max(0, int(min(self.max_age, left)))


async def _respond(send: Send, headers: Headers) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b""})

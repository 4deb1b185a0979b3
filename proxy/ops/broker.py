"""The token broker API and the assertion JWKS, served on the ops listener.

`GET /v1/users/{user key}/token` hands the app's back-end jobs (a nightly calendar sync,
say) a fresh access token for a connected user, refreshed like any other (single flight,
same store). The caller presents one of `broker.keys` as a bearer token, compared in
constant time; every call is audit-logged with the user and the outcome — never a token or
a key. 404: no such user; 409: the user is not connected (the body says the state).

`GET /.well-known/jwks.json` publishes the keys that verify the identity assertion.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol
from urllib.parse import unquote

from proxy.asgi import Receive, Scope, Send
from proxy.identity.assertion import AssertionSigner
from proxy.identity.headers import ForwardedTokens
from proxy.store import StoreError

log = logging.getLogger("consent_proxy.broker")
audit = logging.getLogger("consent_proxy.audit")

PREFIX = "/v1/users/"
SUFFIX = "/token"
JWKS_PATH = "/.well-known/jwks.json"


async def _json(
    send: Send,
    status: int,
    body: dict[str, Any],
    *extra: tuple[bytes, bytes],
    cache: bytes = b"no-store",
) -> None:
    data = json.dumps(body).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(data)).encode()),
        (b"cache-control", cache),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


class BrokeredTokens(ForwardedTokens, Protocol):
    """What the app's requests are told of a user's tokens, and whether their state is one
    whose tokens are handed out."""

    @property
    def forwarded(self) -> bool: ...


class TokenSource(Protocol):
    """Fresh tokens for a user (`proxy.consent.tokens.TokenService`, passed in by app.py:
    ops never imports the consent package)."""

    async def for_user(self, user_key: str) -> BrokeredTokens: ...


class TokenBroker:
    def __init__(
        self, keys: list[str], tokens: TokenSource, known: Callable[[str], Awaitable[bool]]
    ) -> None:
        """`known(user_key)` says whether the user ever signed in (an integration record)."""
        self._keys = [k.encode() for k in keys]
        self.tokens = tokens
        self.known = known

    def handles(self, path: str) -> bool:
        return path.startswith(PREFIX) and path.endswith(SUFFIX)

    def _caller(self, scope: Scope) -> int | None:
        """Which configured key the request presents (its index), or None."""
        presented = b""
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                if scheme.lower() == b"bearer":
                    presented = token.strip()
        found = None
        for index, key in enumerate(self._keys):  # no early exit: constant time over keys
            if hmac.compare_digest(presented, key) and presented:
                found = index
        return found

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.handles(scope["path"]):
            await _json(send, 404, {"error": "not_found"})
            return
        user_key = unquote(scope["path"][len(PREFIX) : -len(SUFFIX)])
        if scope["method"] != "GET":
            await _json(send, 405, {"error": "method_not_allowed"}, (b"allow", b"GET"))
            return
        caller = self._caller(scope)
        if caller is None:
            audit.warning("token broker: refused a caller without a valid key (user %r)", user_key)
            challenge = (b"www-authenticate", b'Bearer realm="consent-proxy token broker"')
            await _json(send, 401, {"error": "unauthorized"}, challenge)
            return
        if not user_key or "/" in user_key or len(user_key) > 200:
            await _json(send, 404, {"error": "unknown_user"})
            return
        try:
            status, body = await self._token(user_key)
        except StoreError as exc:
            log.warning("token broker: store unavailable: %s", exc.description)
            await _json(send, 503, {"error": "store_unavailable"})
            return
        audit.info("token broker: key #%d asked for %s: %s", caller, user_key, status)
        await _json(send, status, body)

    async def _token(self, user_key: str) -> tuple[int, dict[str, Any]]:
        if not await self.known(user_key):
            return 404, {"error": "unknown_user"}
        tokens = await self.tokens.for_user(user_key)
        if not tokens.forwarded or tokens.access_token is None:
            return 409, {"error": "not_connected", "integration": tokens.status}
        return 200, {
            "access_token": tokens.access_token,
            "expires_at": int(tokens.expires_at or 0),
            "route": tokens.route or "graph",
            "ews_url": tokens.ews_url,
            "integration": tokens.status,
        }


class Jwks:
    def __init__(self, signer: AssertionSigner) -> None:
        self.signer = signer

    def handles(self, path: str) -> bool:
        return path == JWKS_PATH

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await _json(send, 200, self.signer.jwks(), cache=b"max-age=300")

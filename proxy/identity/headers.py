"""What the app is told about the signed-in user, on every forwarded request.

For a browser with a live proxy session: who it is (UPN/email, tenant id, object id), where
its Office 365 connection stands, and — when connected — a fresh access token for its
route (Graph or EWS) with its expiry, the route, and the EWS URL; plus the same claims as
a signed JWT (assertion.py). Header names come from the `headers` settings. Inbound copies
were already removed by `ProtectedHeaders`, so whatever the app finds here, the proxy put.
"""

from __future__ import annotations

from typing import Protocol

from proxy.asgi import App, Receive, Scope, Send
from proxy.config import HeaderNames
from proxy.identity.assertion import AssertionSigner
from proxy.identity.session import STATE_KEY, RequestState


class ForwardedTokens(Protocol):
    """Where a user's Office 365 connection stands, and its access token if it has one."""

    @property
    def status(self) -> str: ...
    @property
    def access_token(self) -> str | None: ...
    @property
    def expires_at(self) -> float | None: ...
    @property
    def route(self) -> str | None: ...
    @property
    def ews_url(self) -> str | None: ...


class TokenSource(Protocol):
    """Fresh tokens for a user: `proxy.consent.tokens.TokenService`, which app.py passes
    in, so that identity never imports the consent package."""

    async def for_user(self, user_key: str) -> ForwardedTokens: ...


class IdentityHeaders:
    def __init__(
        self,
        app: App,
        names: HeaderNames,
        tokens: TokenSource | None,
        signer: AssertionSigner | None,
    ) -> None:
        self.app = app
        self.tokens = tokens
        self.signer = signer
        encode = str.encode
        self.user = encode(names.user.lower())
        self.tenant = encode(names.tenant_id.lower())
        self.object_id = encode(names.object_id.lower())
        self.integration = encode(names.integration.lower())
        self.access_token = encode(names.access_token.lower())
        self.expires = encode(names.token_expires.lower())
        self.route = encode(names.token_route.lower())
        self.ews_url = encode(names.ews_url.lower())
        self.assertion = encode(names.assertion.lower())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = scope.get(STATE_KEY)
        if isinstance(state, RequestState) and state.session is not None:
            await self._add(scope, state)
        await self.app(scope, receive, send)

    async def _add(self, scope: Scope, state: RequestState) -> None:
        session = state.session
        assert session is not None
        added: list[tuple[bytes, bytes]] = []
        user = session.email or session.subject
        added.append((self.user, _value(user)))
        if session.tenant_id:
            added.append((self.tenant, _value(session.tenant_id)))
        if session.object_id:
            added.append((self.object_id, _value(session.object_id)))
        status, route, expires = "none", None, None
        if self.tokens is not None:
            tokens = await self.tokens.for_user(session.user_key)
            status = tokens.status
            if tokens.access_token is not None and tokens.expires_at is not None:
                route, expires = tokens.route or "graph", int(tokens.expires_at)
                added.append((self.access_token, tokens.access_token.encode("latin-1")))
                added.append((self.expires, str(expires).encode()))
                added.append((self.route, route.encode()))
                if tokens.ews_url:
                    added.append((self.ews_url, _value(tokens.ews_url)))
        added.append((self.integration, status.encode()))
        if self.signer is not None:
            claims = {
                "sub": session.user_key,
                "upn": user,
                "tid": session.tenant_id,
                "oid": session.object_id,
                "integration": status,
                "route": route,
                "token_exp": expires,
            }
            token = self.signer.assertion({k: v for k, v in claims.items() if v is not None})
            added.append((self.assertion, token.encode()))
        scope["headers"] = [*scope["headers"], *added]


def _value(text: str) -> bytes:
    # Header values must stay on one line; SSO attributes are not trusted to.
    return text.replace("\r", " ").replace("\n", " ").encode("utf-8")

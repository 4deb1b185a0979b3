"""The ASGI application: an explicit, ordered composition of the proxy's parts.

A request passes, outermost first:
    SessionMiddleware   who is this browser? (signed cookie -> store, bound to the
                        upstream's session cookie); starts/ends sessions on the response
    SignInWatcher       on SSO endpoints only: verify the assertion, watch the answer
    Forwarder           stream to the upstream and back (WebSocketForwarder for sockets)
Without `sso.endpoints` the proxy is a plain pass-through: only the forwarders run.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .config import Settings, load_settings
from .forward import Forwarder
from .headers import RequestHeaderRules
from .session import SessionMiddleware
from .sso.watch import SignInWatcher
from .store import Store, open_store
from .websocket import WebSocketForwarder

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("consent_proxy")


class ConsentProxy:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        rules = RequestHeaderRules(settings)
        self.forwarder = Forwarder(settings, rules)
        self.websocket = WebSocketForwarder(settings, rules)
        self.store: Store | None = None
        self.watcher: SignInWatcher | None = None
        self.http: App = self.forwarder
        self.sockets: App = self.websocket
        if settings.sso.endpoints:
            self.store = open_store(settings.store)
            self.watcher = SignInWatcher(self.forwarder, settings, self.store)
            self.http = SessionMiddleware(self.watcher, settings.session, settings.sso, self.store)
            self.sockets = SessionMiddleware(
                self.websocket, settings.session, settings.sso, self.store
            )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self.http(scope, receive, send)
        elif kind == "websocket":
            await self.sockets(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if self.store is not None:
                    await self.store.ping()  # create and migrate the store before traffic
                log.info("forwarding to %s", self.settings.upstream.url)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def aclose(self) -> None:
        await self.forwarder.aclose()
        if self.watcher is not None:
            await self.watcher.aclose()
        if self.store is not None:
            await self.store.aclose()


def create_app(settings: Settings | None = None) -> ConsentProxy:
    """The app for a settings object, or for the file named by CONSENT_PROXY_CONFIG."""
    return ConsentProxy(settings if settings is not None else load_settings())

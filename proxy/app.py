"""The ASGI application: an explicit, ordered composition of the proxy's parts.

Order of a request, outermost first (later issues add their middlewares here, and only
here):
    lifespan -> forwarder (HTTP) / websocket forwarder
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .config import Settings, load_settings
from .forward import Forwarder
from .headers import RequestHeaderRules
from .websocket import WebSocketForwarder

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

log = logging.getLogger("consent_proxy")


class ConsentProxy:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        rules = RequestHeaderRules(settings)
        self.http = Forwarder(settings, rules)
        self.websocket = WebSocketForwarder(settings, rules)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self.http(scope, receive, send)
        elif kind == "websocket":
            await self.websocket(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                log.info("forwarding to %s", self.settings.upstream.url)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.http.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return


def create_app(settings: Settings | None = None) -> ConsentProxy:
    """The app for a settings object, or for the file named by CONSENT_PROXY_CONFIG."""
    return ConsentProxy(settings if settings is not None else load_settings())

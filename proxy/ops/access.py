"""The access log: one line per request, at info, from a pure ASGI middleware.

Fields: method, path (never the query: it carries codes and states), status, bytes sent,
duration in milliseconds and, through the request id middleware around it, request_id.
It sits on every request, so it does little: it reads the status and counts body bytes
in the `send` it already wraps, and builds the line only when the logger is enabled.
"""

from __future__ import annotations

import logging
import time

from proxy.asgi import App, Message, Receive, Scope, Send

log = logging.getLogger("consent_proxy.access")


class AccessLog:
    def __init__(self, app: App) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not log.isEnabledFor(logging.INFO):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        sent = [0, 0]  # status, bytes

        async def counting_send(message: Message) -> None:
            kind = message["type"]
            if kind == "http.response.body":
                sent[1] += len(message.get("body", b""))
            elif kind == "http.response.start":
                sent[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            duration = (time.perf_counter() - started) * 1000
            method, path, status = scope["method"], _printable(scope["path"]), sent[0]
            log.info(
                "%s %s %d %d B %.1f ms",
                method,
                path,
                status,
                sent[1],
                duration,
                extra={
                    "method": method,
                    "path": path,
                    "status": status,
                    "bytes": sent[1],
                    "duration_ms": round(duration, 1),
                },
            )


def _printable(path: str) -> str:
    """The path as one line: a decoded %0A must not start a forged line in a text log."""
    return path if path.isprintable() else path.encode("unicode_escape").decode("ascii")

"""The apps and servers server_layers.py compares: `python layer_apps.py LAYER APP PORT [CAP]`.

LAYER is one of `LAYERS`; APP is `probe` (a tiny ASGI app: `/` answers 200, `/slow` after
half a second, `/ws` echoes WebSocket messages) or `proxy` (consent-proxy for the config
named by CONSENT_PROXY_CONFIG). Every layer is given the same limits where it has the
option: heads of at most HEAD_BYTES, HEAD_TIMEOUT seconds to send one, at most CAP
connections or requests at a time (or the CAP given: the CPU runs give 1000).
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

HEAD_BYTES = 64 * 1024
HEAD_TIMEOUT = 2.0
CAP = 8
LAYERS = ("uvicorn-httptools", "uvicorn-h11", "hypercorn", "granian", "consent-proxy-listener")


async def probe(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (message := await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
    elif scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        while (message := await receive())["type"] == "websocket.receive":
            await send({"type": "websocket.send", "text": message.get("text") or ""})
    else:
        while (await receive()).get("more_body"):
            pass
        if scope["path"] == "/slow":
            await asyncio.sleep(0.5)
        headers = [(b"content-type", b"text/plain"), (b"content-length", b"3")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok\n"})


def _proxy() -> Any:
    from proxy.app import create_app

    return create_app() if os.environ.get("CONSENT_PROXY_CONFIG") else None


proxy = _proxy()
LOOP = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"


def run(layer: str, app_name: str, port: int, cap: int) -> None:
    app = globals()[app_name]
    if layer == "granian":
        _granian(app_name, port, cap)
    elif layer == "hypercorn":
        _hypercorn(app, port)
    else:
        _uvicorn(layer, app, port, cap)


def _uvicorn(layer: str, app: Any, port: int, cap: int) -> None:
    import uvicorn

    from proxy.config import ServerSettings
    from proxy.server import public_options, uvicorn_options

    if layer == "consent-proxy-listener":
        limits = ServerSettings(
            max_head_bytes=HEAD_BYTES, head_timeout=HEAD_TIMEOUT, max_connections=cap
        )
        options = public_options("127.0.0.1", port, "warning", limits)
    else:
        options = uvicorn_options("127.0.0.1", port, "warning")
        options["limit_concurrency"] = cap + 1  # it counts the connection asking
        if layer == "uvicorn-h11":
            options.update(http="h11", h11_max_incomplete_event_size=HEAD_BYTES)
    uvicorn.run(app, **options)


def _hypercorn(app: Any, port: int) -> None:
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.h11_max_incomplete_size = HEAD_BYTES
    config.read_timeout = int(HEAD_TIMEOUT)  # per read: a byte now and then resets it
    config.accesslog = None
    config.loglevel = "WARNING"
    if LOOP == "uvloop":
        import uvloop

        uvloop.run(serve(app, config))
    else:
        asyncio.run(serve(app, config))


def _granian(app_name: str, port: int, cap: int) -> None:
    from granian.constants import Interfaces, Loops
    from granian.http import HTTP1Settings
    from granian.server import Server

    Server(
        f"layer_apps:{app_name}",
        address="127.0.0.1",
        port=port,
        interface=Interfaces.ASGI,
        loop=Loops.uvloop if LOOP == "uvloop" else Loops.asyncio,
        http1_settings=HTTP1Settings(
            header_read_timeout=int(HEAD_TIMEOUT * 1000), max_buffer_size=HEAD_BYTES
        ),
        backpressure=cap,
        log_enabled=False,
    ).serve()


if __name__ == "__main__":
    run(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]) if sys.argv[4:] else CAP)

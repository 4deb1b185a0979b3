"""`consent-proxy demo`: the proxy in front of the bundled example app, on one machine."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

import uvicorn

from ..app import create_app
from ..config import settings_from_data
from ..server import uvicorn_options
from .upstream import create_upstream


class _QuietServer(uvicorn.Server):
    """A server that leaves signal handling to the proxy's server."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def run_demo(port: int) -> None:
    upstream_port = free_port()
    settings = settings_from_data(
        {"upstream": {"url": f"http://127.0.0.1:{upstream_port}"}}, "demo"
    )
    upstream = _QuietServer(
        uvicorn.Config(create_upstream(), **uvicorn_options("127.0.0.1", upstream_port, "warning"))
    )
    proxy = uvicorn.Server(
        uvicorn.Config(create_app(settings), **uvicorn_options("127.0.0.1", port, "info"))
    )
    print(f"consent-proxy demo: open http://127.0.0.1:{port}/  (Ctrl-C to stop)", flush=True)

    async def both() -> None:
        upstream_task = asyncio.ensure_future(upstream.serve())
        try:
            await proxy.serve()
        finally:
            upstream.should_exit = True
            await upstream_task

    asyncio.run(both())

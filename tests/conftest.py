"""Shared servers for the forwarding tests.

One test upstream (uvicorn in a thread) and one raw-socket upstream serve the whole
session. Proxies are `consent-proxy run` processes, one per distinct config, started on
first use and shared: tests tell their requests apart with a unique `tag` query parameter.
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .servers import ProxyProcess, ThreadServer, free_port
from .upstream_app import RawUpstream, UpstreamApp


class Proxies:
    """`consent-proxy run` processes, one per config, kept for the session."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.running: dict[str, ProxyProcess] = {}

    def get(self, config: dict[str, Any], name: str = "") -> ProxyProcess:
        key = name + json.dumps(config, sort_keys=True)
        if key not in self.running:
            self.running[key] = ProxyProcess(config, self.workdir).start()
        return self.running[key]

    def stop(self) -> None:
        for proxy in self.running.values():
            proxy.stop()


@pytest.fixture(scope="session")
def upstream_app() -> UpstreamApp:
    return UpstreamApp()


@pytest.fixture(scope="session")
def upstream(upstream_app: UpstreamApp) -> Iterator[ThreadServer]:
    # proxy_headers off: uvicorn would otherwise replace the client address (and with it
    # the port that tells upstream connections apart) with the proxy's X-Forwarded-For.
    # A long keep-alive: connection counts must not depend on how fast the tests run.
    server = ThreadServer(upstream_app, proxy_headers=False, timeout_keep_alive=60).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def raw_upstream() -> Iterator[RawUpstream]:
    server = RawUpstream().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def proxies(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxies]:
    running = Proxies(tmp_path_factory.mktemp("proxies"))
    yield running
    running.stop()


@pytest.fixture(scope="session")
def proxy(proxies: Proxies, upstream: ThreadServer) -> ProxyProcess:
    """The proxy with defaults in front of the test upstream."""
    return proxies.get({"upstream": {"url": upstream.url}})


@pytest.fixture(scope="session")
def dead_port() -> int:
    """A port nothing listens on."""
    return free_port()


@pytest.fixture
def tag() -> str:
    return uuid.uuid4().hex[:12]


@pytest.fixture
def client(proxy: ProxyProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=proxy.url, timeout=30) as c:
        yield c


def echo(response: httpx.Response) -> dict[str, Any]:
    """What the upstream's /echo saw, from a response that must be a 200."""
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def received(data: dict[str, Any], name: str) -> list[str]:
    """The values of one header as the upstream's /echo received them."""
    return [value for key, value in data["headers"] if key == name]


def upstream_stats(upstream: ThreadServer, tag: str) -> dict[str, Any]:
    """The upstream's counters for `tag`, asked directly (not through the proxy)."""
    response = httpx.get(f"{upstream.url}/stats", params={"of": tag}, timeout=10)
    result: dict[str, Any] = response.json()
    return result


def eventually(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll until `check()` holds; for effects that travel between processes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return check()


def raw_exchange(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Send bytes on a fresh connection and read everything until the proxy closes it
    (b"" when it just hangs up; a reset counts as hanging up). Requests should say
    `Connection: close`; a half-close would make the server drop the request."""
    with socket.create_connection(("127.0.0.1", port), timeout) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def no_tracebacks(proxy: ProxyProcess) -> None:
    logs = proxy.logs()
    assert "Traceback" not in logs, logs

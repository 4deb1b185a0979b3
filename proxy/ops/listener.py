"""The operations listener: /healthz, /readyz, /metrics, and room for more.

A small pure-ASGI app served on its own port (`ops.host:ops.port`) next to the proxy, in
the same process and event loop (server.py). It is built from callables and knows nothing
of the proxy's internals, so it is tested on its own and the proxy composes it
(`server.ops_app_for`).

- `GET /healthz`: 200 `{"status": "ok"}` whenever the process answers at all (liveness:
  restart me only if this fails).
- `GET /readyz`: 200 when every readiness check passes, else 503; the JSON body names each
  check and its state, e.g. `{"status": "not ready", "failed": ["upstream"], "checks":
  {"serving": "ok", "store": "ok", "upstream": "failed: cannot connect (Connection
  refused)"}}`. Checks run concurrently, each within `timeout` seconds. A load balancer
  should send traffic only to a ready proxy; note that a proxy that is not ready still
  forwards what reaches it (users are never locked out by a failing store).
- `GET /metrics`: the Prometheus text format of the registry given.

Extension point: `routes` adds more endpoints (the token broker API, the JWKS) as
`Route(path, app)`, an exact path or, ending in "/", a subtree; they are plain ASGI apps
and see the full path.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from proxy.asgi import App, Receive, Scope, Send

__all__ = [
    "DEFAULT_CHECK_TIMEOUT",
    "Check",
    "OpsApp",
    "Route",
    "flag_check",
    "ping_check",
    "tcp_check",
]

log = logging.getLogger("consent_proxy.ops")

DEFAULT_CHECK_TIMEOUT = 1.0
BUILT_IN = ("/healthz", "/readyz", "/metrics")


class NotReady(Exception):
    """A readiness probe's answer: not ready, for the reason given."""


@dataclass(frozen=True, slots=True)
class Check:
    """One readiness condition: `probe` returns when ready and raises when not."""

    name: str
    probe: Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Route:
    """An extra endpoint: `path` exactly, or every path under it when it ends in "/"."""

    path: str
    app: App

    def matches(self, path: str) -> bool:
        return path.startswith(self.path) if self.path.endswith("/") else path == self.path


def ping_check(name: str, ping: Callable[[], Awaitable[object]]) -> Check:
    """Ready when `ping()` returns (the store's `ping` raises when it cannot answer)."""

    async def probe() -> None:
        await ping()

    return Check(name, probe)


def tcp_check(name: str, host: str, port: int) -> Check:
    """Ready when `host:port` accepts a TCP connection (closed again at once)."""

    async def probe() -> None:
        try:
            _, writer = await asyncio.open_connection(host, port)
        except OSError as exc:
            raise NotReady(f"cannot connect to {host}:{port} ({exc.strerror or exc})") from None
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass  # a reset on close still proved the port answers

    return Check(name, probe)


def flag_check(name: str, flag: Callable[[], bool], reason: str = "not yet") -> Check:
    """Ready while `flag()` is true (the policy is loaded, the proxy is serving...)."""

    async def probe() -> None:
        if not flag():
            raise NotReady(reason)

    return Check(name, probe)


class OpsApp:
    def __init__(
        self,
        registry: CollectorRegistry,
        checks: Iterable[Check] = (),
        routes: Sequence[Route] = (),
        timeout: float = DEFAULT_CHECK_TIMEOUT,
    ) -> None:
        self.registry = registry
        self.checks = tuple(checks)
        self.timeout = timeout
        names = [c.name for c in self.checks]
        if len(set(names)) != len(names):
            raise ValueError(f"readiness check names must be unique, got {names}")
        taken = [r.path for r in routes if any(r.matches(p) for p in BUILT_IN)]
        if taken:
            raise ValueError(f"ops routes {taken} would hide /healthz, /readyz or /metrics")
        self.routes = tuple(routes)
        self._failing: frozenset[str] = frozenset()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # no lifespan work, no websockets
        path: str = scope["path"]
        for route in self.routes:
            if route.matches(path):
                await route.app(scope, receive, send)
                return
        handler = {
            "/healthz": self._healthz,
            "/readyz": self._readyz,
            "/metrics": self._metrics,
        }.get(path)
        if handler is None:
            await _error(send, 404, "not_found", f"no ops endpoint here; try {', '.join(BUILT_IN)}")
        elif scope["method"] not in ("GET", "HEAD"):
            await _error(send, 405, "method_not_allowed", "use GET", [(b"allow", b"GET, HEAD")])
        else:
            status, content_type, body = await handler()
            await _respond(
                send, status, content_type, b"" if scope["method"] == "HEAD" else body, len(body)
            )

    async def _healthz(self) -> tuple[int, bytes, bytes]:
        return 200, b"application/json", _json({"status": "ok"})

    async def _readyz(self) -> tuple[int, bytes, bytes]:
        results = await asyncio.gather(*(self._run(check) for check in self.checks))
        states = dict(zip((c.name for c in self.checks), results, strict=True))
        failed = [name for name, state in states.items() if state != "ok"]
        self._note_change(failed, states)
        body = {"status": "not ready" if failed else "ready", "failed": failed, "checks": states}
        return (503 if failed else 200), b"application/json", _json(body)

    async def _run(self, check: Check) -> str:
        try:
            await asyncio.wait_for(check.probe(), self.timeout)
        except TimeoutError:
            return f"failed: no answer within {self.timeout:g} s"
        except NotReady as exc:
            return f"failed: {exc}"
        except Exception as exc:  # a probe must never turn into a 500
            return f"failed: {getattr(exc, 'description', None) or type(exc).__name__}"
        return "ok"

    def _note_change(self, failed: list[str], states: dict[str, str]) -> None:
        # Probes come every few seconds: log when readiness changes, not every time.
        now = frozenset(failed)
        if now == self._failing:
            return
        self._failing = now
        if failed:
            reasons = "; ".join(f"{name}: {states[name]}" for name in failed)
            log.warning("not ready: %s", reasons)
        else:
            log.info("ready again")

    async def _metrics(self) -> tuple[int, bytes, bytes]:
        return 200, CONTENT_TYPE_LATEST.encode(), generate_latest(self.registry)


def _json(data: object) -> bytes:
    return json.dumps(data).encode()


async def _respond(
    send: Send,
    status: int,
    content_type: bytes,
    body: bytes,
    length: int,
    extra: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(length).encode()),
        (b"cache-control", b"no-store"),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _error(
    send: Send, status: int, code: str, description: str, extra: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    body = _json({"error": code, "description": description})
    await _respond(send, status, b"application/json", body, len(body), extra)

"""Running the proxy under uvicorn, with the settings that keep it transparent and fast.

The listener browsers connect to runs uvicorn's httptools protocol with the limits of the
`server:` settings built in (head size, head timeout, connection cap: `public_options`,
proxy/forward/http_server.py); the ops listener, reached by probes and scrapers only, runs
uvicorn's plain protocol.

One process (`consent-proxy run`, the default `--workers 1`): the proxy and the ops
listener (`ops.host:ops.port`; port 0 turns it off) are two uvicorn servers in one event
loop. The proxy's server owns the signals. On SIGTERM it stops accepting, drains its
connections and runs the app's shutdown while /readyz answers 503 (`serving` fails), so a
load balancer stops sending traffic; then the ops listener stops too. When the ops port
cannot be bound the proxy starts all the same (the ops listener is no reason to lock
users out) and says so in an ERROR line; probes of that port then fail, visibly.

Several processes (`--workers N`, N > 1): uvicorn's supervisor starts N worker processes
that share the proxy's port, and there is no ops listener. Only one process can bind the
ops port, and per-worker listeners sharing it through SO_REUSEPORT would answer each
scrape or probe from a random worker: counters jumping between workers' values, readiness
of whichever worker happened to answer. So in production run one worker per container
and scale with replicas: each replica's ops listener then describes exactly the process
that serves. `--workers` remains for a single host without an orchestrator; a start-up
warning says that ops endpoints are off. Each worker sets up logging itself
(`worker_app`), so the same redacting handler runs there.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import socket
import sys
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE

from proxy.app import ConsentProxy, create_app
from proxy.config import CONFIG_ENV, ServerSettings, Settings, load_settings
from proxy.forward.http_server import HeadLimits, protocol_factory
from proxy.ops import metrics
from proxy.ops.listener import Check, OpsApp, Route, flag_check, ping_check, tcp_check
from proxy.ops.logs import setup_logging

log = logging.getLogger("consent_proxy.server")

# Internal: how `run --log-level` reaches worker processes, which read the config file anew.
LOG_LEVEL_ENV = "CONSENT_PROXY_LOG_LEVEL"
OPS_SHUTDOWN_GRACE = 5.0


def uvicorn_options(host: str, port: int, log_level: str) -> dict[str, Any]:
    return {
        "host": host,
        "port": port,
        "log_level": log_level,
        "loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        "http": "httptools",
        "ws": "websockets-sansio",
        "lifespan": "on",
        # The proxy decides itself whom to believe about X-Forwarded-* (headers.py).
        "proxy_headers": False,
        # The upstream's own Server and Date headers pass through; no second copies.
        "server_header": False,
        "date_header": False,
        "access_log": False,
        "log_config": None,
    }


def public_options(host: str, port: int, log_level: str, limits: ServerSettings) -> dict[str, Any]:
    """uvicorn's options for the listener that faces browsers: `uvicorn_options` plus the
    limits a client must not be able to exceed (proxy/forward/http_server.py)."""
    options = uvicorn_options(host, port, log_level)
    head = HeadLimits(max_bytes=limits.max_head_bytes, timeout=limits.head_timeout)
    options["http"] = protocol_factory(head)
    # uvicorn counts the connection asking among those open: one more lets exactly
    # max_connections be served.
    options["limit_concurrency"] = limits.max_connections + 1
    return options


def serve(settings: Settings, config_path: Path | None, host: str, port: int, workers: int) -> None:
    options = public_options(host, port, settings.logging.level, settings.server)
    if workers > 1:
        _serve_workers(settings, config_path, workers, options)
        return
    proxy = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(proxy, **options))
    ops = _ops_listener(proxy, server) if settings.ops.port else None
    with asyncio.Runner(loop_factory=_loop_factory(options["loop"])) as runner:
        runner.run(_serve_together(server, ops))
    if not server.started:
        sys.exit(STARTUP_FAILURE)


def ops_app_for(
    proxy: ConsentProxy,
    serving: Callable[[], bool] | None = None,
    routes: Sequence[Route] = (),
) -> OpsApp:
    """The ops listener's app for a proxy app: readiness checks on its parts, the metrics
    registry, and extra `routes` (the token broker API and the JWKS go here)."""
    checks: list[Check] = []
    if serving is not None:
        checks.append(flag_check("serving", serving, "the proxy is starting or stopping"))
    if proxy.store is not None:
        checks.append(ping_check("store", proxy.store.ping))
    pool = proxy.forwarder.pool
    checks.append(tcp_check("upstream", pool.host, pool.port))
    if proxy.settings.policy is not None:
        checks.append(flag_check("policy", lambda: proxy.journey is not None, "no policy loaded"))
    return OpsApp(metrics.REGISTRY, checks, routes)


def worker_app() -> ConsentProxy:
    """The app of each `--workers N` process (uvicorn calls this factory in the worker)."""
    settings = load_settings()
    level = os.environ.get(LOG_LEVEL_ENV, settings.logging.level)
    setup_logging(level, settings.logging.format, settings.logging.users)
    return create_app(settings)


def _serve_workers(
    settings: Settings, config_path: Path | None, workers: int, options: dict[str, Any]
) -> None:
    if config_path is None:
        raise ValueError("several workers need the config as a file")
    if settings.ops.port:
        log.warning(
            "no ops listener with --workers %d: /healthz, /readyz and /metrics are off. "
            "Run one worker per container and scale with replicas to have them "
            "(ops.port: 0 says you do not want them)",
            workers,
        )
    # Each worker process loads the (already validated) file itself.
    os.environ[CONFIG_ENV] = str(config_path.resolve())
    os.environ[LOG_LEVEL_ENV] = settings.logging.level
    uvicorn.run("proxy.server:worker_app", factory=True, workers=workers, **options)


@dataclass(frozen=True, slots=True)
class _OpsListener:
    server: uvicorn.Server
    socket: socket.socket


class _Companion(uvicorn.Server):
    """A server that leaves signals to the main one: it stops when told to."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _ops_listener(proxy: ConsentProxy, server: uvicorn.Server) -> _OpsListener | None:
    host, port = proxy.settings.ops.host, proxy.settings.ops.port
    try:
        # Bound here, before anything starts, so that a taken port is one clear line.
        sock = socket.create_server(
            (host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET
        )
    except OSError as exc:
        log.error(
            "no ops listener: cannot listen on %s:%d (%s); /healthz, /readyz and /metrics "
            "are unavailable. Choose a free ops.port, or 0 to turn the ops listener off",
            host,
            port,
            (exc.strerror or str(exc)).split(" (while attempting", 1)[0],
        )
        return None
    app = ops_app_for(
        proxy, serving=lambda: server.started and not server.should_exit, routes=proxy.ops_routes()
    )
    options = uvicorn_options(host, port, proxy.settings.logging.level)
    options.update(lifespan="off", timeout_graceful_shutdown=OPS_SHUTDOWN_GRACE)
    log.info("ops listener on http://%s:%d (/healthz /readyz /metrics)", host, port)
    return _OpsListener(_Companion(uvicorn.Config(app, **options)), sock)


async def _serve_together(proxy: uvicorn.Server, ops: _OpsListener | None) -> None:
    if ops is None:
        await proxy.serve()
        return
    companion = asyncio.create_task(ops.server.serve(sockets=[ops.socket]))
    companion.add_done_callback(_ops_ended)
    try:
        await proxy.serve()
    finally:
        ops.server.should_exit = True
        await asyncio.wait([companion])
        ops.socket.close()


def _ops_ended(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("the ops listener stopped: %r", task.exception())


def _loop_factory(loop: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if loop == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return None

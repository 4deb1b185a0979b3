"""The ops listener: /healthz, /readyz, /metrics and extra routes, first as an app on its own
under a real server, then beside a real proxy process (its upstream and its store failing)."""

from __future__ import annotations

import asyncio
import importlib.util
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families

from proxy.asgi import Receive, Scope, Send
from proxy.ops.listener import OpsApp, Route, flag_check, ping_check, tcp_check
from proxy.store import StoreError

from .servers import ProxyProcess, ThreadServer, eventually, free_port, running, wait_for_port
from .sso_app import SsoApp
from .upstream_app import UpstreamApp

METRIC_NAMES = [
    "consent_proxy_requests_total",
    "consent_proxy_upstream_seconds",
    "consent_proxy_sign_ins_total",
    "consent_proxy_prompts_total",
    "consent_proxy_consent_outcomes_total",
    "consent_proxy_token_refreshes_total",
    "consent_proxy_tenants_waiting_admin",
    "consent_proxy_policy_reloads_total",
    "consent_proxy_store_errors_total",
    "consent_proxy_sessions_ended_total",
    "consent_proxy_forward_auth_answers_total",
]
SECRET = "a-test-session-secret-that-is-long-enough-0001"
HEADER_ENDPOINT = {"type": "upstream", "path": "/login/password", "header": "X-Authenticated-User"}


def get(url: str, **kwargs: Any) -> httpx.Response:
    return httpx.get(url, timeout=10, **kwargs)


def sample(ops_url: str, name: str, **labels: str) -> float:
    """One sample's value from /metrics (0 when the series is absent)."""
    text = get(f"{ops_url}/metrics").text
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


# --- the app on its own ---------------------------------------------------------------------


async def _store_down() -> None:
    raise StoreError("SQLite store 'x.sqlite3': disk I/O error")


async def _hangs() -> None:
    await asyncio.sleep(30)


async def _fine() -> None:
    return None


def _named(text: bytes) -> Any:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        body = text + b" " + scope["path"].encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    return app


@pytest.fixture(scope="module")
def registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    Counter("consent_proxy_test_events_total", "Events in a test.", registry=registry).inc(3)
    return registry


def test_healthz_unknown_paths_and_methods(registry: CollectorRegistry) -> None:
    with running(ThreadServer(OpsApp(registry))) as server:
        health = get(f"{server.url}/healthz")
        assert health.status_code == 200
        assert health.json() == {"status": "ok"}
        assert health.headers["cache-control"] == "no-store"
        missing = get(f"{server.url}/nope")
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/json"
        assert missing.json()["error"] == "not_found"
        posted = httpx.post(f"{server.url}/readyz", timeout=10)
        assert posted.status_code == 405
        assert posted.headers["allow"] == "GET, HEAD"
        head = httpx.head(f"{server.url}/metrics", timeout=10)
        assert head.status_code == 200
        assert head.content == b""
        assert int(head.headers["content-length"]) > 0


def test_readyz_names_each_check_and_its_state(registry: CollectorRegistry) -> None:
    ready = [True]
    checks = [
        ping_check("fine", _fine),
        ping_check("store", _store_down),
        ping_check("slow", _hangs),
        flag_check("policy", lambda: ready[0], "no policy loaded"),
    ]
    with running(ThreadServer(OpsApp(registry, checks, timeout=0.3))) as server:
        started = time.monotonic()
        response = get(f"{server.url}/readyz")
        assert time.monotonic() - started < 3  # checks run side by side, each bounded
        assert response.status_code == 503
        assert response.json() == {
            "status": "not ready",
            "failed": ["store", "slow"],
            "checks": {
                "fine": "ok",
                "store": "failed: SQLite store 'x.sqlite3': disk I/O error",
                "slow": "failed: no answer within 0.3 s",
                "policy": "ok",
            },
        }
        ready[0] = False
        assert get(f"{server.url}/readyz").json()["checks"]["policy"] == "failed: no policy loaded"


def test_readyz_is_200_when_every_check_passes(registry: CollectorRegistry) -> None:
    with running(ThreadServer(UpstreamApp())) as upstream:
        checks = [tcp_check("upstream", "127.0.0.1", upstream.port), ping_check("store", _fine)]
        with running(ThreadServer(OpsApp(registry, checks))) as server:
            response = get(f"{server.url}/readyz")
            assert response.status_code == 200
            assert response.json() == {
                "status": "ready",
                "failed": [],
                "checks": {"upstream": "ok", "store": "ok"},
            }


def test_tcp_check_names_the_address_that_refused(registry: CollectorRegistry) -> None:
    port = free_port()
    with running(ThreadServer(OpsApp(registry, [tcp_check("upstream", "127.0.0.1", port)]))) as s:
        state = get(f"{s.url}/readyz").json()["checks"]["upstream"]
        assert state.startswith(f"failed: cannot connect to 127.0.0.1:{port} (")


def test_metrics_is_the_prometheus_text_format(registry: CollectorRegistry) -> None:
    with running(ThreadServer(OpsApp(registry))) as server:
        response = get(f"{server.url}/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain; version=")
        assert "# HELP consent_proxy_test_events_total Events in a test." in response.text
        assert "consent_proxy_test_events_total 3.0" in response.text


def test_extra_routes_are_served_and_may_not_hide_the_built_in_ones(
    registry: CollectorRegistry,
) -> None:
    routes = [
        Route("/v1/tokens/", _named(b"broker")),
        Route("/.well-known/jwks.json", _named(b"jwks")),
    ]
    with running(ThreadServer(OpsApp(registry, routes=routes))) as server:
        assert get(f"{server.url}/v1/tokens/alice").text == "broker /v1/tokens/alice"
        assert get(f"{server.url}/.well-known/jwks.json").text == "jwks /.well-known/jwks.json"
        assert get(f"{server.url}/.well-known/jwks.json.bak").status_code == 404
        assert get(f"{server.url}/healthz").json() == {"status": "ok"}
    with pytest.raises(ValueError, match="would hide"):
        OpsApp(registry, routes=[Route("/", _named(b"all"))])
    with pytest.raises(ValueError, match="unique"):
        OpsApp(registry, [ping_check("store", _fine), ping_check("store", _fine)])


# --- beside a real proxy -------------------------------------------------------------------


def start_with_ops(config: dict[str, Any], workdir: Path) -> tuple[ProxyProcess, str]:
    ops_port = free_port()
    proxy = ProxyProcess({**config, "ops": {"port": ops_port}}, workdir).start()
    try:
        wait_for_port(ops_port, proc=proxy.proc)
    except Exception:
        proxy.stop()
        raise
    return proxy, f"http://127.0.0.1:{ops_port}"


@pytest.fixture(scope="module")
def with_ops(
    tmp_path_factory: pytest.TempPathFactory, upstream: ThreadServer
) -> Iterator[tuple[ProxyProcess, str]]:
    proxy, ops = start_with_ops({"upstream": {"url": upstream.url}}, tmp_path_factory.mktemp("o"))
    yield proxy, ops
    proxy.stop()


def test_proxy_ops_listener_health_and_readiness(with_ops: tuple[ProxyProcess, str]) -> None:
    proxy, ops = with_ops
    assert get(f"{ops}/healthz").json() == {"status": "ok"}
    ready = get(f"{ops}/readyz")
    assert ready.status_code == 200, ready.text
    # A plain pass-through proxy has no store and no policy to wait for.
    assert ready.json()["checks"] == {"serving": "ok", "upstream": "ok"}
    assert get(f"{ops}/nothing-here").status_code == 404
    # The ops paths are the ops listener's only: on the proxy's port they go upstream.
    assert get(f"{proxy.url}/healthz").json()["path"] == "/healthz"


def test_proxy_metrics_count_forwarded_requests(with_ops: tuple[ProxyProcess, str]) -> None:
    proxy, ops = with_ops
    text = get(f"{ops}/metrics").text
    for name in METRIC_NAMES:
        assert f"# TYPE {name} " in text, name
    ok_before = sample(ops, "consent_proxy_requests_total", status="2xx")
    missing_before = sample(ops, "consent_proxy_requests_total", status="4xx")
    timed_before = sample(ops, "consent_proxy_upstream_seconds_count")
    with httpx.Client(base_url=proxy.url, timeout=10) as client:
        for _ in range(5):
            assert client.get("/echo").status_code == 200
        for _ in range(2):
            assert client.get("/status", params={"code": "404"}).status_code == 404
    assert sample(ops, "consent_proxy_requests_total", status="2xx") - ok_before == 5
    assert sample(ops, "consent_proxy_requests_total", status="4xx") - missing_before == 2
    assert sample(ops, "consent_proxy_upstream_seconds_count") - timed_before == 7
    assert sample(ops, "consent_proxy_upstream_seconds_bucket", le="30.0") - timed_before == 7


def test_readyz_names_the_upstream_when_it_stops(tmp_path: Path) -> None:
    upstream = ThreadServer(UpstreamApp()).start()
    proxy, ops = start_with_ops({"upstream": {"url": upstream.url}}, tmp_path)
    try:
        assert get(f"{ops}/readyz").status_code == 200
        upstream.stop()
        response = get(f"{ops}/readyz")
        assert response.status_code == 503
        body = response.json()
        assert body["failed"] == ["upstream"]
        assert body["checks"]["upstream"].startswith("failed: cannot connect to 127.0.0.1:")
        assert body["checks"]["serving"] == "ok"
        assert get(f"{ops}/healthz").status_code == 200  # alive: nothing to restart
        assert eventually(lambda: "not ready: upstream: failed: cannot connect" in proxy.logs())
    finally:
        upstream.stop()
        proxy.stop()
    assert "Traceback" not in proxy.logs()


def first_503(url: str, timeout: float) -> httpx.Response | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = get(url)
        if response.status_code == 503:
            return response
    return None


def sso_config(upstream: ThreadServer, store: dict[str, Any]) -> dict[str, Any]:
    return {
        "upstream": {"url": upstream.url},
        "session": {
            "secrets": [{"value": SECRET}],
            "upstream_cookie": "app_session",
            "cookie_secure": False,
        },
        "store": store,
        "sso": {"endpoints": [HEADER_ENDPOINT]},
    }


def test_readyz_names_the_store_when_it_stops_answering(tmp_path: Path) -> None:
    """SQLite cannot be made to fail under an open connection, but it can be made to stop
    answering: another process holds the write lock, a sign-in's write waits for it, and the
    store's ping waits behind that write."""
    path = tmp_path / "store.sqlite3"
    with running(ThreadServer(SsoApp().app())) as upstream:
        proxy, ops = start_with_ops(sso_config(upstream, {"path": str(path)}), tmp_path)
        try:
            ready = get(f"{ops}/readyz")
            assert ready.status_code == 200, ready.text
            assert ready.json()["checks"]["store"] == "ok"
            lock = sqlite3.connect(path, isolation_level=None)
            lock.execute("BEGIN EXCLUSIVE")
            sign_in = threading.Thread(
                target=get,
                args=(f"{proxy.url}/login/password",),
                kwargs={"params": {"user": "alice@contoso.example"}},
            )
            sign_in.start()
            try:
                not_ready = first_503(f"{ops}/readyz", timeout=4)
                assert not_ready is not None
                body = not_ready.json()
                assert body["failed"] == ["store"]
                assert body["checks"]["store"] == "failed: no answer within 1 s"
            finally:
                lock.execute("ROLLBACK")
                lock.close()
                sign_in.join(15)
            assert eventually(lambda: get(f"{ops}/readyz").status_code == 200)
        finally:
            proxy.stop()
    assert "Traceback" not in proxy.logs()


def _redis_store_available() -> bool:
    return shutil.which("redis-server") is not None and (
        importlib.util.find_spec("redis") is not None
        and importlib.util.find_spec("proxy.store.redis") is not None
    )


@pytest.mark.skipif(not _redis_store_available(), reason="needs redis-server and redis-py")
def test_readyz_names_the_store_when_redis_goes_away(tmp_path: Path) -> None:
    port = free_port()
    redis = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        with running(ThreadServer(SsoApp().app())) as upstream:
            store = {"type": "redis", "url": f"redis://127.0.0.1:{port}/0"}
            proxy, ops = start_with_ops(sso_config(upstream, store), tmp_path)
            try:
                assert get(f"{ops}/readyz").json()["checks"]["store"] == "ok"
                redis.terminate()
                redis.wait(10)
                assert eventually(lambda: get(f"{ops}/readyz").status_code == 503)
                body = get(f"{ops}/readyz").json()
                assert body["failed"] == ["store"]
                assert body["checks"]["store"].startswith("failed: ")
            finally:
                proxy.stop()
    finally:
        if redis.poll() is None:
            redis.kill()
            redis.wait()


def test_a_taken_ops_port_is_one_error_line_and_the_proxy_still_serves(
    tmp_path: Path, upstream: ThreadServer
) -> None:
    import socket

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        config = {"upstream": {"url": upstream.url}, "ops": {"port": port}}
        with running(ProxyProcess(config, tmp_path)) as proxy:
            assert get(f"{proxy.url}/echo").status_code == 200
            logs = proxy.logs()
    assert f"no ops listener: cannot listen on 127.0.0.1:{port}" in logs
    assert "Traceback" not in logs


def test_several_workers_run_without_an_ops_listener_and_say_so(
    tmp_path: Path, upstream: ThreadServer
) -> None:
    ops_port, port = free_port(), free_port()
    config = tmp_path / "workers.yaml"
    config.write_text(f"upstream: {{url: '{upstream.url}'}}\nops: {{port: {ops_port}}}\n")
    log_path = tmp_path / "workers.log"
    run = [sys.executable, "-m", "proxy.cli", "run", "--config", str(config)]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [*run, "--port", str(port), "--workers", "2"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_port(port, proc=proc, timeout=30)
        assert get(f"http://127.0.0.1:{port}/echo").status_code == 200
        with pytest.raises(httpx.ConnectError):
            get(f"http://127.0.0.1:{ops_port}/healthz")
    finally:
        proc.terminate()
        proc.wait(20)
    logs = log_path.read_text()
    assert "no ops listener with --workers 2" in logs
    # Each worker set up the same (JSON, redacting) logging as the parent.
    assert logs.count('"message": "forwarding to ') == 2, logs
    assert "one worker per container" in logs

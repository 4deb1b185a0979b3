"""Logs never carry a secret, in either format, whoever wrote the line; request ids follow
each request through the logs, to the upstream and back."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.asgi import Receive, Scope, Send
from proxy.ops.access import AccessLog
from proxy.ops.logs import (
    REDACTED,
    RequestId,
    StartUpOnce,
    current_request_id,
    make_handler,
    redact,
    rfc3339,
    set_user_display,
    shown_user,
)

from .fixtures.forwarding import received
from .servers import ProxyProcess, ThreadServer, free_port, running

JWT = (
    "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0"
    ".eyJzdWIiOiJhbGljZSIsImF1ZCI6ImFwcCJ9"
    ".c2lnbmF0dXJlLWJ5dGVzLWhlcmUtMDEyMzQ1Njc4OQ"
)
ID_TOKEN = "eyJ0eXAiOiJKV1QifQ.eyJlbWFpbCI6ImJvYkBleC5jb20ifQ.U0lHTkFUVVJFMg"
REFRESH = "0.AXoAq1w2e3r4t5y6u7i8o9p0AaSsDdFfGgHhJjKkLlZzXxCcVvBbNnMm-_qwerty"
ACCESS = "EwBwA8l6BAAUAOyDv0l6PcCVu89kmzvqZmkWABkAAbcdEF1234ghIJ"
CODE = "0.AUcAcode-value-1234"
STATE = "st4te-Value_98765"
COOKIE = "sEssIonCookieValue42"
PASSWORD = "hunter2-Pa55"
CLIENT_SECRET = "abc~DEF.ghi-123"
SAML = "PHNhbWxwOlJlc3BvbnNlIElEPSJfMSI+PC9zYW1scDpSZXNwb25zZT4="
BASIC = "YWxpY2U6czNjcjN0"

# (what is logged, the secrets in it)
SHAPES: dict[str, tuple[str, tuple[str, ...]]] = {
    "bearer header": (f"Authorization: Bearer {JWT}", (JWT,)),
    "basic header": (f"authorization: Basic {BASIC}", (BASIC,)),
    "bare bearer": (f"sent Bearer {ACCESS} upstream", (ACCESS,)),
    "bare jwt": (f"id token {ID_TOKEN} verified", (ID_TOKEN,)),
    "query": (f"GET /callback?code={CODE}&state={STATE}&next=/home", (CODE, STATE)),
    "form": (
        f"access_token={ACCESS}&refresh_token={REFRESH}&id_token={ID_TOKEN}"
        f"&client_secret={CLIENT_SECRET}&password={PASSWORD}",
        (ACCESS, REFRESH, ID_TOKEN, CLIENT_SECRET, PASSWORD),
    ),
    "saml form": (f"SAMLResponse={SAML}&RelayState=/home", (SAML,)),
    "cookie header": (f"Cookie: app_session={COOKIE}; theme=dark", (COOKIE,)),
    "set-cookie header": (f"Set-Cookie: app_session={COOKIE}; Path=/; HttpOnly", (COOKIE,)),
    "json body": (
        json.dumps({"access_token": ACCESS, "refresh_token": REFRESH, "expires_in": 3599}),
        (ACCESS, REFRESH),
    ),
    "asgi headers": (
        repr(
            [
                (b"cookie", f"app_session={COOKIE}".encode()),
                (b"authorization", b"Basic " + BASIC.encode()),
            ]
        ),
        (COOKIE, BASIC),
    ),
    "repr": (
        f"Pending(state='{STATE}', flow={{'code_verifier': 'v3r1f13r'}})",
        (STATE, "v3r1f13r"),
    ),
    "opaque token": (f"refresh with {REFRESH} failed", (REFRESH,)),
    "token header": (f"X-Consent-Proxy-Access-Token: {ACCESS}", (ACCESS,)),
}

# Lines ops need to read as they are.
ORDINARY = [
    "forwarding to http://api-gateway.production.internal:8080",
    "sign-in not recognised at /saml/acs (saml): assertion already used (replay)",
    "consent for sub.0123456789abcdef0123456789abcdef01234567 ended: declined "
    "(access_denied, AADSTS65004, correlation_id=2f1c7c39-4a5e-4b8e-9b1e-0c6f0d3c2a11)",
    "session started for user 72f988bf-86f1-41af-91ab-2d7cd011db47.0b6a2f5e-1c1d-4e59 (saml)",
    "upstream request failed: GET /reports/2024 -> 502 upstream_unavailable: connection refused",
    "Bearer keys the app presents",
    "use basic authentication",
    "refresh for user failed (transient): retry in 30s",
]


@pytest.fixture(params=["text", "json"])
def capture(request: pytest.FixtureRequest) -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    logger = logging.getLogger(f"test.logs.{uuid.uuid4().hex}")
    logger.handlers[:] = [make_handler(request.param, stream)]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    yield logger, stream
    logger.handlers[:] = []


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_each_secret_shape_is_redacted(
    capture: tuple[logging.Logger, io.StringIO], shape: str
) -> None:
    logger, stream = capture
    text, secrets = SHAPES[shape]
    logger.debug(text)
    logger.info("with arguments: %s (%r)", text, text)
    out = stream.getvalue()
    assert out.count(REDACTED) >= 2, out
    for secret in secrets:
        assert secret not in out, out


def test_exception_tracebacks_are_redacted(capture: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = capture
    try:
        raise ValueError(f"token endpoint said: refresh_token={REFRESH} code={CODE} {JWT}")
    except ValueError:
        logger.exception("refresh failed for %s", f"Bearer {ACCESS}")
    out = stream.getvalue()
    assert "Traceback" in out and "ValueError" in out
    for secret in (REFRESH, CODE, JWT, ACCESS):
        assert secret not in out, out


def test_json_extra_fields_are_redacted() -> None:
    stream = io.StringIO()
    logger = logging.getLogger("test.logs.extra")
    logger.handlers[:] = [make_handler("json", stream)]
    logger.propagate = False
    extra = {
        "headers": {"authorization": f"Bearer {JWT}", "accept": "text/html"},
        "access_token": ACCESS,
        "url": f"https://app.example/cb?code={CODE}&state={STATE}",
        "cookies": [f"app_session={COOKIE}"],
        "attempt": 2,
    }
    logger.warning("callback", extra=extra)
    entry = json.loads(stream.getvalue())
    assert entry["headers"] == {"authorization": REDACTED, "accept": "text/html"}
    assert entry["access_token"] == REDACTED
    assert entry["url"] == f"https://app.example/cb?code={REDACTED}&state={REDACTED}"
    assert entry["attempt"] == 2
    assert COOKIE not in stream.getvalue()


@pytest.mark.parametrize("line", ORDINARY)
def test_ordinary_lines_are_left_alone(line: str) -> None:
    assert redact(line) == line


def test_a_broken_log_call_shows_its_template_not_its_arguments(
    capture: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = capture
    logger.info("two values %s %s", f"Bearer {ACCESS}")
    out = stream.getvalue()
    assert "unformattable log message: two values %s %s" in out
    assert ACCESS not in out


def test_formats_carry_the_request_id() -> None:
    text, structured = io.StringIO(), io.StringIO()
    for fmt, stream in (("text", text), ("json", structured)):
        logger = logging.getLogger(f"test.logs.rid.{fmt}")
        logger.handlers[:] = [make_handler(fmt, stream)]
        logger.propagate = False
        token = current_request_id.set("rid-42")
        try:
            logger.warning("inside a request")
        finally:
            current_request_id.reset(token)
        logger.warning("outside")
    first, second = text.getvalue().splitlines()
    assert " WARNING test.logs.rid.text [rid-42]: inside a request" in first
    assert second.endswith(" WARNING test.logs.rid.text: outside")
    inside, outside = (json.loads(line) for line in structured.getvalue().splitlines())
    assert inside["request_id"] == "rid-42"
    assert "request_id" not in outside


def test_auto_format_is_text_on_a_terminal_and_json_elsewhere() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    for stream, starts in ((Terminal(), "20"), (io.StringIO(), "{")):
        logger = logging.getLogger(f"test.logs.auto.{starts}")
        logger.handlers[:] = [make_handler("auto", stream)]
        logger.propagate = False
        logger.warning("hello")
        assert stream.getvalue().startswith(starts)


def test_setup_logging_routes_uvicorn_through_the_same_handler() -> None:
    script = (
        "import logging; from proxy.ops.logs import setup_logging; setup_logging('info', 'auto'); "
        f"logging.getLogger('uvicorn.error').error('bad header: Authorization: Bearer {JWT}'); "
        f"logging.getLogger('httpx').info('GET https://x/cb?code={CODE}')"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=True
    )
    lines = [json.loads(line) for line in result.stderr.splitlines()]  # not a terminal: JSON
    assert [(e["logger"], e["level"]) for e in lines] == [
        ("uvicorn.error", "error"),
        ("httpx", "info"),
    ]
    assert JWT not in result.stderr and CODE not in result.stderr


# --- request ids -----------------------------------------------------------------------------


class SeenIds:
    """An app that reports the request id as it arrived: headers, scope, log context."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ids = [v.decode() for n, v in scope["headers"] if n == b"x-request-id"]
        body = json.dumps(
            {"headers": ids, "scope": scope.get("request_id"), "context": current_request_id.get()}
        ).encode()
        # An upstream that sets its own id: the client still gets exactly one, ours.
        headers = [(b"content-type", b"application/json"), (b"X-Request-ID", b"upstream-own")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def seen_ids() -> Iterator[ThreadServer]:
    with running(ThreadServer(RequestId(SeenIds()))) as server:
        yield server


def ids_for(server: ThreadServer, *inbound: str) -> tuple[dict[str, Any], list[str]]:
    headers = [("X-Request-ID", value) for value in inbound]
    response = httpx.get(server.url, headers=headers, timeout=10)
    data: dict[str, Any] = response.json()
    return data, response.headers.get_list("x-request-id")


def test_request_id_is_made_when_none_comes(seen_ids: ThreadServer) -> None:
    seen, returned = ids_for(seen_ids)
    assert len(returned) == 1 and len(returned[0]) == 32
    assert seen == {"headers": returned, "scope": returned[0], "context": returned[0]}
    assert ids_for(seen_ids)[1] != returned  # one per request


def test_a_sane_inbound_request_id_is_kept(seen_ids: ThreadServer) -> None:
    sane = "lb-2024.07_Abc-" + "x" * 113  # 128 characters
    seen, returned = ids_for(seen_ids, sane)
    assert returned == [sane]
    assert seen == {"headers": [sane], "scope": sane, "context": sane}


@pytest.mark.parametrize(
    "inbound",
    [("has spaces in it",), ("x" * 129,), ("a/b",), ("semi;colon",), ("one", "two"), ("",)],
)
def test_an_odd_inbound_request_id_is_replaced(
    seen_ids: ThreadServer, inbound: tuple[str, ...]
) -> None:
    seen, returned = ids_for(seen_ids, *inbound)
    assert len(returned) == 1 and returned[0] not in inbound and len(returned[0]) == 32
    assert seen["headers"] == returned  # the only copy upstream is ours


def test_request_id_through_the_proxy(proxy: ProxyProcess) -> None:
    response = httpx.get(f"{proxy.url}/echo", headers={"X-Request-ID": "lb-77"}, timeout=10)
    if "x-request-id" not in response.headers:
        pytest.skip("RequestId is not composed in proxy/app.py yet")
    assert response.headers.get_list("x-request-id") == ["lb-77"]
    assert received(response.json(), "x-request-id") == ["lb-77"]
    fresh = httpx.get(f"{proxy.url}/echo", headers={"X-Request-ID": "bad id"}, timeout=10)
    assert received(fresh.json(), "x-request-id") == fresh.headers.get_list("x-request-id")
    assert fresh.headers["x-request-id"] != "bad id"


# --- a real proxy's log ----------------------------------------------------------------------


def test_no_secret_reaches_the_proxy_log(tmp_path: Path, dead_port: int) -> None:
    """Requests full of secrets to a proxy whose upstream is down, so that the proxy logs
    each request's path; the log is at debug level and in JSON (not a terminal)."""
    config = {"upstream": {"url": f"http://127.0.0.1:{dead_port}"}}
    with running(ProxyProcess(config, tmp_path)) as proxy, httpx.Client(timeout=10) as client:
        for path in (f"/{JWT}/profile", f"/files/{REFRESH}"):
            response = client.get(
                f"{proxy.url}{path}",
                params={"code": CODE, "state": STATE},
                headers={"Authorization": f"Bearer {ACCESS}", "Cookie": f"app_session={COOKIE}"},
            )
            assert response.status_code == 502
        client.post(
            f"{proxy.url}/login",
            data={"password": PASSWORD, "SAMLResponse": SAML},
            headers={"Authorization": f"Basic {BASIC}"},
        )
    logs = proxy.logs()
    entries = [json.loads(line) for line in logs.splitlines()]
    failed = [e for e in entries if e["message"].startswith("upstream request failed: GET /")]
    assert len(failed) == 2, logs
    assert f"/{REDACTED}/profile" in failed[0]["message"]
    for secret in (JWT, REFRESH, ACCESS, CODE, STATE, COOKIE, PASSWORD, SAML, BASIC):
        assert secret not in logs, secret
    access = [e for e in entries if e["logger"] == "consent_proxy.access"]
    assert [(e["method"], e["status"]) for e in access] == [
        ("GET", 502),
        ("GET", 502),
        ("POST", 502),
    ]
    assert access[0]["path"] == f"/{REDACTED}/profile"  # the path, redacted; never the query
    assert access[2]["path"] == "/login"


# --- the access log, times, users ---------------------------------------------------------------

RFC3339_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def test_json_time_is_rfc3339_utc_with_milliseconds() -> None:
    assert rfc3339(0) == "1970-01-01T00:00:00.000Z"
    assert rfc3339(1764763200.1239) == "2025-12-03T12:00:00.123Z"
    stream = io.StringIO()
    logger = logging.getLogger(f"test.logs.{uuid.uuid4().hex}")
    logger.handlers[:] = [make_handler("json", stream)]
    logger.propagate = False
    logger.warning("x")
    assert RFC3339_MS.fullmatch(json.loads(stream.getvalue())["time"])


async def small_app(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 201, "headers": []})
    await send({"type": "http.response.body", "body": b"hello", "more_body": True})
    await send({"type": "http.response.body", "body": b" world"})


def access_lines(app: Any, path: str, query: bytes = b"") -> list[dict[str, Any]]:
    stream = io.StringIO()
    logger = logging.getLogger("consent_proxy.access")
    saved = logger.handlers[:], logger.propagate, logger.level
    logger.handlers[:] = [make_handler("json", stream)]
    logger.propagate, logger.level = False, logging.INFO
    try:
        scope = {"type": "http", "method": "GET", "path": path, "query_string": query,
                 "headers": []}  # fmt: skip

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b""}

        async def send(message: dict[str, Any]) -> None:
            pass

        asyncio.run(RequestId(app)(scope, receive, send))
    finally:
        logger.handlers[:], logger.propagate, logger.level = saved
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_one_access_line_per_request_with_its_fields() -> None:
    [line] = access_lines(AccessLog(small_app), "/calendar", b"code=" + CODE.encode())
    assert line["level"] == "info"
    assert {k: line[k] for k in ("method", "path", "status", "bytes")} == {
        "method": "GET",
        "path": "/calendar",
        "status": 201,
        "bytes": 11,
    }
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
    assert line["request_id"]
    assert line["message"].startswith("GET /calendar 201 11 B ")
    assert CODE not in json.dumps(line) and "code=" not in json.dumps(line)


def test_a_secret_in_the_path_is_redacted_in_the_access_log() -> None:
    [line] = access_lines(AccessLog(small_app), f"/files/{REFRESH}")
    assert line["path"].startswith("/files/") and REDACTED in line["path"]
    assert REFRESH not in json.dumps(line)


def test_a_failing_app_still_gets_its_access_line() -> None:
    async def broken(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        access_lines(AccessLog(broken), "/x")


@pytest.mark.parametrize(("enabled", "wrapped"), [(True, True), (False, False)])
def test_the_access_log_can_be_switched_off(enabled: bool, wrapped: bool) -> None:
    from proxy.app import ConsentProxy
    from proxy.config import settings_from_data

    settings = settings_from_data(
        {"upstream": {"url": "http://127.0.0.1:9"}, "logging": {"access_log": enabled}}
    )
    app = ConsentProxy(settings)
    assert isinstance(app.http.app, AccessLog) is wrapped  # type: ignore[attr-defined]


def test_users_appear_by_key_unless_ops_choose_emails() -> None:
    try:
        set_user_display("key")
        assert shown_user("k1", "alice@contoso.com") == "k1"
        set_user_display("email")
        assert shown_user("k1", "alice@contoso.com") == "alice@contoso.com"
        assert shown_user("k1", None) == "k1"
    finally:
        set_user_display("key")


def test_uvicorn_start_up_lines_are_said_once() -> None:
    once = StartUpOnce()
    lines = ["Started server process [%d]", "Waiting for application startup.",
             "Uvicorn running on %s://%s:%d (Press CTRL+C to quit)"]  # fmt: skip
    kept = [once.filter(logging.makeLogRecord({"msg": m})) for m in lines + lines]
    assert kept == [True, True, True, False, False, True]


def test_microsofts_ids_in_a_redirect_description_are_kept() -> None:
    from proxy.microsoft.errors import classify

    description = (
        "AADSTS65004: User declined to consent to access the app.\r\n"
        "Trace ID: 0e1f2a3b-1111-2222-3333-444455556666\r\n"
        "Correlation ID: 7f3e1c2d-aaaa-bbbb-cccc-ddddeeeeffff\r\nTimestamp: 2026-12-03 11:00:00Z"
    )
    error = classify("access_denied", description, None)
    assert error.correlation_id == "7f3e1c2d-aaaa-bbbb-cccc-ddddeeeeffff"
    assert error.trace_id == "0e1f2a3b-1111-2222-3333-444455556666"
    forged = classify("access_denied", "Correlation ID: <script>alert(1)</script>", None)
    assert forged.correlation_id is None


def test_the_demo_logs_json_when_stderr_is_not_a_terminal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import proxy.cli
    import proxy.demo.run

    formats: list[str] = []
    monkeypatch.setattr(proxy.cli, "setup_logging", lambda level, fmt: formats.append(fmt))
    monkeypatch.setattr(proxy.demo.run, "run_demo", lambda *args, **kwargs: None)
    assert proxy.cli.main(["demo"]) == 0
    assert formats == ["auto"]  # auto: JSON unless a terminal (make_handler, tested above)


def test_a_proxy_with_its_ops_listener_says_its_start_up_once(tmp_path: Path) -> None:
    config = {"upstream": {"url": "http://127.0.0.1:9"}, "ops": {"port": free_port()}}
    with running(ProxyProcess(config, tmp_path)) as proxy:
        assert httpx.get(f"{proxy.url}/", timeout=10).status_code == 502
    entries = [json.loads(line) for line in proxy.logs().splitlines()]
    messages = [e["message"] for e in entries if e["logger"] == "uvicorn.error"]
    started = [m for m in messages if m.startswith("Started server process")]
    assert len(started) == 1, messages
    assert len([m for m in messages if m.startswith("Application startup complete")]) == 1


@pytest.mark.parametrize("path", ["/a\nGET /forged 200", "/a\r\x1b[31mred", "/\x00\u2028x"])
def test_control_characters_in_a_path_stay_on_one_access_line(path: str) -> None:
    [line] = access_lines(AccessLog(small_app), path)
    assert line["path"].isprintable() and line["path"].startswith("/")
    assert "\n" not in line["message"] and "\r" not in line["message"]

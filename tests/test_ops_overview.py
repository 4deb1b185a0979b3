"""The admins' overview page on the ops listener: what it shows, escaping, its headers."""

from __future__ import annotations

import asyncio
from typing import Any

from proxy.ops.overview import CSP, OverviewPage, render
from proxy.ops.summary import FailureRow, Overview, TenantRow, UserRow
from proxy.store import StoreError

NOW = 1764763200.0
EVIL = "<script>alert(1)</script>"


def overview() -> Overview:
    tenant = TenantRow(
        EVIL,
        by_status={"connected": 2, "admin_approval_required": 1},
        waiting_for_admin=True,
        waiting_since=NOW - 7200,
        waiting_users=[f"{EVIL}@x.com"],
        last_error="AADSTS90094",
        action="consent for the organization",
    )
    user = UserRow(f"k.{EVIL}", f"{EVIL}@x.com", EVIL, "connected", NOW, NOW - 60, None, None, None)
    return Overview(
        generated=NOW,
        by_status={"connected": 2, "admin_approval_required": 1},
        tenants=[tenant],
        failures=[FailureRow("AADSTS90094", 1, NOW - 30, "consent for the organization")],
        users=[user],
        timeline=[(NOW - (23 - i) * 3600, i % 3, i % 2) for i in range(24)],
    )


def test_the_page_shows_counts_tenants_failures_and_a_chart() -> None:
    html = render(overview())
    assert '<div class="card" id="count-connected"><b>2</b>connected</div>' in html
    assert '<div class="card" id="count-admin_approval_required"><b>1</b>' in html
    assert "waits for an admin since 2025-12-03 10:00 UTC" in html
    assert '<td>AADSTS90094</td><td class="n">1</td>' in html
    assert html.count("<rect ") == 48 and '<svg id="chart"' in html


def test_everything_from_the_store_is_escaped() -> None:
    html = render(overview())
    assert "<script" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def call(page: OverviewPage, method: str = "GET") -> tuple[int, dict[bytes, bytes], bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": "/overview", "headers": []}
    asyncio.run(page(scope, receive, send))
    return sent[0]["status"], dict(sent[0]["headers"]), sent[1]["body"]


async def collected(now: float) -> Overview:
    return overview()


def test_strict_headers_and_methods() -> None:
    status, headers, body = call(OverviewPage(collected, clock=lambda: NOW))
    assert status == 200 and body.startswith(b"<!doctype html>")
    assert headers[b"content-security-policy"] == CSP.encode()
    assert CSP.startswith("default-src 'none'; style-src 'sha256-")
    assert "script-src" not in CSP and "unsafe" not in CSP
    assert headers[b"cache-control"] == b"no-store"
    assert headers[b"x-content-type-options"] == b"nosniff"
    assert call(OverviewPage(collected), "HEAD")[2] == b""
    assert call(OverviewPage(collected), "POST")[0] == 405


def test_a_store_that_does_not_answer_is_a_503_page() -> None:
    async def down(now: float) -> Overview:
        raise StoreError("Redis store 127.0.0.1:1: connection refused")

    status, headers, body = call(OverviewPage(down))
    assert status == 503
    assert b"The store did not answer" in body and b"connection refused" in body
    assert headers[b"content-security-policy"] == CSP.encode()


def test_the_ops_listener_routes_it_and_the_public_app_does_not() -> None:
    from proxy.app import ConsentProxy
    from proxy.config import settings_from_data

    settings = settings_from_data(
        {
            "upstream": {"url": "http://127.0.0.1:9"},
            "session": {"secrets": [{"value": "x" * 40}], "upstream_cookie": "app"},
            "sso": {"endpoints": [{"type": "upstream", "path": "/cb", "header": "X-User"}]},
        }
    )
    app = ConsentProxy(settings)
    assert "/overview" in [route.path for route in app.ops_routes()]
    plain = ConsentProxy(settings_from_data({"upstream": {"url": "http://127.0.0.1:9"}}))
    assert "/overview" not in [route.path for route in plain.ops_routes()]  # no store, no page

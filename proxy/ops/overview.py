"""`GET /overview` on the ops listener: a read-only page with what an admin asks first.

Users connected, declined, needing to reconnect and waiting for an admin's approval, per
tenant; recent failures by AADSTS code with the troubleshooting table's action; a chart of
connections and failures per hour over the last day. Everything comes from the store
(`proxy.consent.overview`, handed in by the app: ops does not import the journey); no other
database. Served only on the ops listener, which is
never the public one. Every value from the store is escaped (emails and tenant ids come
from sign-ins); the page has no script, and its Content-Security-Policy allows only its
own style block (by hash) and nothing else.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from html import escape

from proxy.asgi import Receive, Scope, Send
from proxy.errors import ConsentProxyError
from proxy.ops.summary import Overview, TenantRow

log = logging.getLogger("consent_proxy.ops")

PATH = "/overview"
COLUMNS = (
    ("connected", "connected"),
    ("declined", "declined"),
    ("reconsent_required", "need to reconnect"),
    ("admin_approval_required", "wait for admin approval"),
    ("failed", "failed"),
)
STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:2rem;color:#1b1f24;background:#fff}
h1{font-size:1.4rem;margin:0 0 .2rem}h2{font-size:1.1rem;margin:1.6rem 0 .5rem}
.meta{color:#57606a}.cards{display:flex;gap:.8rem;flex-wrap:wrap}
.card{border:1px solid #d0d7de;border-radius:6px;padding:.6rem 1rem;min-width:9rem}
.card b{display:block;font-size:1.6rem}table{border-collapse:collapse;width:100%}
th,td{border-bottom:1px solid #d0d7de;padding:.35rem .5rem;text-align:left;vertical-align:top}
th{background:#f6f8fa}td.n{text-align:right}.wait{color:#9a6700;font-weight:600}
.legend span{display:inline-block;width:.8rem;height:.8rem;margin:0 .3rem 0 1rem}
.c{background:#1f883d}.f{background:#cf222e}
"""
_STYLE_HASH = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
CSP = (
    f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; img-src 'none'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


class OverviewPage:
    """The page, as a plain ASGI app for the ops listener's routes."""

    def __init__(
        self,
        collect: Callable[[float], Awaitable[Overview]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.collect = collect  # reads the store (proxy.consent.overview.collect)
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] not in ("GET", "HEAD"):
            await _send(send, 405, b"text/plain; charset=utf-8", b"use GET\n")
            return
        try:
            page = render(await self.collect(self.clock()))
        except ConsentProxyError as exc:  # the store's StoreError, for one
            log.warning("overview: the store did not answer: %s", exc.description)
            page = _frame("The store did not answer", f"<p>{escape(exc.description)}</p>")
            await _send(send, 503, b"text/html; charset=utf-8", page.encode())
            return
        body = b"" if scope["method"] == "HEAD" else page.encode()
        await _send(send, 200, b"text/html; charset=utf-8", body)


async def _send(send: Send, status: int, content_type: bytes, body: bytes) -> None:
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        (b"content-security-policy", CSP.encode()),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def render(overview: Overview) -> str:
    total = sum(overview.by_status.values())
    cards = "".join(
        f'<div class="card" id="count-{state}"><b>{overview.by_status.get(state, 0)}</b>'
        f"{escape(label)}</div>"
        for state, label in COLUMNS
    )
    sections = [
        f'<p class="meta">{total} users known to the store · '
        f"{_when(overview.generated)} · refreshes every 60 s</p>",
        f'<div class="cards">{cards}</div>',
        "<h2>Per tenant</h2>",
        _tenants(overview.tenants),
        "<h2>Recent failures</h2>",
        _failures(overview),
        "<h2>Connections and failures, per hour (last 24 h)</h2>",
        _chart(overview.timeline),
    ]
    return _frame("consent-proxy overview", "\n".join(sections))


def _frame(title: str, content: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta http-equiv="refresh" content="60">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head>"
        f"<body><h1>{escape(title)}</h1>\n{content}\n</body></html>"
    )


def _table(head: Iterable[str], rows: list[str], empty: str) -> str:
    if not rows:
        return f'<p class="meta">{escape(empty)}</p>'
    header = "".join(f"<th>{escape(h)}</th>" for h in head)
    return f"<table><tr>{header}</tr>{''.join(rows)}</table>"


def _tenants(tenants: list[TenantRow]) -> str:
    rows = []
    for tenant in tenants:
        counts = "".join(f'<td class="n">{tenant.by_status.get(s, 0)}</td>' for s, _ in COLUMNS)
        note = ""
        if tenant.waiting_for_admin:
            since = _when(tenant.waiting_since) if tenant.waiting_since else "now"
            note = f'<span class="wait">waits for an admin since {escape(since)}</span>'
            if tenant.last_error:
                note += f"<br>{escape(tenant.last_error)}: {escape(tenant.action or '')}"
        elif tenant.admin_consented:
            note = "an admin consented for the organization"
        rows.append(f"<tr><td>{escape(tenant.tenant_id)}</td>{counts}<td>{note}</td></tr>")
    head = ["tenant", *(label for _, label in COLUMNS), "admin approval"]
    return _table(head, rows, "No tenant yet: nobody has signed in.")


def _failures(overview: Overview) -> str:
    rows = [
        f'<tr><td>{escape(f.error)}</td><td class="n">{f.users}</td>'
        f"<td>{escape(_when(f.last_seen))}</td><td>{escape(f.action)}</td></tr>"
        for f in overview.failures
    ]
    head = ["error", "users", "last seen", "what to do"]
    return _table(head, rows, "No failures recorded.")


def _chart(timeline: list[tuple[float, int, int]]) -> str:
    """Inline SVG, two bars per hour: connections (green) and failures (red)."""
    width, height, bar = 720, 140, 12
    peak = max([1, *(c for _, c, _ in timeline), *(f for _, _, f in timeline)])
    step = width / max(len(timeline), 1)
    parts = []
    for i, (start, connections, failures) in enumerate(timeline):
        x = i * step + 4
        for offset, value, colour in ((0, connections, "#1f883d"), (bar, failures, "#cf222e")):
            h = round((height - 20) * value / peak)
            parts.append(
                f'<rect x="{x + offset:.0f}" y="{height - 20 - h}" width="{bar - 1}" '
                f'height="{h}" fill="{colour}"><title>{_hour(start)}: {value}</title></rect>'
            )
        if i % 6 == 0:
            parts.append(
                f'<text x="{x:.0f}" y="{height - 4}" font-size="11" fill="#57606a">'
                f"{_hour(start)}</text>"
            )
    svg = (
        f'<svg id="chart" role="img" aria-label="connections and failures per hour" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}">{"".join(parts)}</svg>'
    )
    legend = (
        '<p class="legend"><span class="c"></span>connections<span class="f"></span>failures</p>'
    )
    return svg + legend


def _hour(start: float) -> str:
    return time.strftime("%H:00", time.gmtime(start))


def _when(value: float | None) -> str:
    if not value:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(value))

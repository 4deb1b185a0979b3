"""The cost of identity: pass-through for a signed-in browser vs an anonymous one vs the
upstream direct, with the session store on SQLite and on Redis — side by side, one run.

A signed-in request goes through the whole pipeline: the proxy's cookie, the session
(from memory after the first request), the identity headers and the signed assertion
(cached), the inbound-copy stripping. The sign-in uses the upstream-asserted identity
method (nginx sets the app's cookie and the identity header on /login), so no IdP is
needed.

Usage: python bench/authenticated.py [--duration 5] [--quick]
Needs wrk and nginx; the Redis row needs a Redis on 127.0.0.1:6379 (skipped otherwise).
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from passthrough import BROWSER_HEADERS, Cell, cpu_seconds, wrk
from servers import SMALL_BODY, ConsentProxy, Nginx, Server, start_report

SECRET = "bench-session-secret-that-is-long-enough-000001"
USER = "bench@contoso.example"
CONCURRENCY = (1, 50)


class LoginUpstream(Nginx):
    """`/` a small fixed body; `/login` signs the browser in the way an app would."""

    name = "upstream"

    def server_blocks(self) -> str:
        body = SMALL_BODY.decode().replace("\n", "\\n")
        return f"""    server {{
        listen 127.0.0.1:{self.port} reuseport backlog=4096;
        location = / {{ default_type text/plain; return 200 "{body}"; }}
        location = /login {{
            add_header Set-Cookie "app_session=bench-app-session; Path=/; HttpOnly";
            add_header X-Authenticated-User "{USER}";
            return 302 /;
        }}
    }}"""


class SignedInProxy(ConsentProxy):
    """consent-proxy with a session store and an SSO endpoint to sign in through."""

    def __init__(self, upstream_url: str, store: dict[str, object]) -> None:
        super().__init__(upstream_url)
        config = json.loads(self.config.read_text())
        config.update(
            session={"secrets": [{"value": SECRET}], "upstream_cookie": "app_session",
                     "cookie_secure": False},
            sso={"endpoints": [{"type": "upstream", "path": "/login",
                                "header": "X-Authenticated-User"}]},
            store=store,
        )  # fmt: skip
        self.config.write_text(json.dumps(config))

    def sign_in(self) -> str:
        response = httpx.get(f"{self.url}/login")
        cookie = response.cookies.get("consent_proxy")
        assert cookie, f"no session cookie from /login: {response.status_code} {self.logs()}"
        return f"Cookie: app_session=bench-app-session; consent_proxy={cookie}"


def redis_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.5):
            return True
    except OSError:
        return False


def measure(server: Server, headers: Sequence[str], duration: int) -> dict[int, Cell]:
    wrk(server.url, 50, 1, headers)  # warm-up: connections, pools, caches
    cells = {}
    for c in CONCURRENCY:
        before = cpu_seconds(server)
        cells[c] = cell = wrk(server.url, c, duration, headers)
        cell.cpu_us = (cpu_seconds(server) - before) / (cell.rps * duration) * 1e6
    return cells


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk cell")
    parser.add_argument("--quick", action="store_true", help="1 s cells")
    args = parser.parse_args(argv)
    duration = 1 if args.quick else args.duration
    start_report(
        ["consent-proxy", "uvicorn", "redis"], "consent-proxy: signed-in vs anonymous pass-through"
    )
    browser = [h for h in BROWSER_HEADERS if not h.startswith("Cookie:")]
    print(f"\nGET / ({len(browser) + 1} browser headers), wrk --latency, {duration} s per cell\n")
    rows: list[tuple[str, dict[int, Cell]]] = []
    with LoginUpstream() as upstream:
        rows.append(("upstream direct (nginx)", measure(upstream, browser, duration)))
        with ConsentProxy(upstream.url) as anonymous:
            plain = [*browser, "Cookie: app_session=bench-app-session"]
            rows.append(("consent-proxy, anonymous", measure(anonymous, plain, duration)))
        sqlite = {"type": "sqlite", "path": "store.sqlite3"}
        with SignedInProxy(upstream.url, sqlite) as proxy:
            signed = [*browser, proxy.sign_in()]
            rows.append(("consent-proxy, signed in, SQLite", measure(proxy, signed, duration)))
        if redis_up():
            prefix = f"bench:{uuid.uuid4().hex}:"
            redis = {"type": "redis", "url": "redis://127.0.0.1:6379/0", "key_prefix": prefix}
            with SignedInProxy(upstream.url, redis) as proxy:
                signed = [*browser, proxy.sign_in()]
                rows.append(("consent-proxy, signed in, Redis", measure(proxy, signed, duration)))
        else:
            print("(no Redis on 127.0.0.1:6379: the Redis row is skipped)")
    heading = ("target", "c=1 req/s", "p50 ms", "c=50 req/s", "p99 ms", "CPU us/req")
    print("{:<34}{:>10}{:>8}{:>12}{:>8}{:>12}".format(*heading))
    for name, cells in rows:
        one, fifty = cells[1], cells[50]
        print(f"{name:<34}{one.rps:>10,.0f}{one.p50_ms:>8.3f}{fifty.rps:>12,.0f}{fifty.p99_ms:>8.2f}"
              f"{fifty.cpu_us:>12.1f}")  # fmt: skip
    direct, anonymous_cells = rows[0][1], rows[1][1]
    print("\nratio (c=50 req/s)                       vs direct   vs anonymous")
    for name, cells in rows[1:]:
        print(f"{name:<40}{cells[50].rps / direct[50].rps:>10.0%}"
              f"{cells[50].rps / anonymous_cells[50].rps:>14.0%}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

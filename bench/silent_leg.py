"""What the silent leg adds to a code-flow sign-in, against the Microsoft stand-in.

A code-flow app behind `consent-proxy run` (one worker, SQLite store), the stand-in over
HTTPS as the Entra SSO IdP (multi-tenant issuer), a browser (httpx) that signed in at the
stand-in once. Each of COUNT sign-ins is timed in its parts:

- app: the app's callback reached directly (the baseline, what the user waits for anyway);
- hop: the same callback through the proxy, which answers with the redirect to the IdP;
- idp: the browser at the IdP's authorize endpoint (`prompt=none`: a redirect back);
- answer: the proxy's callback (code redeemed, id_token verified, session started).

"extra" = hop - app + idp + answer: what the user waits longer than without the proxy.
Everything is on 127.0.0.1: against Entra, add two round trips to login.microsoftonline.com
(the browser's, and the proxy's token request).

Usage: python bench/silent_leg.py [--count 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlencode

import httpx
import trustme
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.servers import ConsentProxy, exit_on_sigterm, free_port
from proxy.demo.microsoft import DEMO_APP_ID, DEMO_APP_SECRET, MicrosoftStandIn, demo_app
from proxy.demo.users import CONTOSO_TENANT_ID, DEMO_USERS

CALLBACK = "/.consent-proxy-sso/callback"
ALICE = DEMO_USERS[0]
SESSION_SECRET = secrets.token_urlsafe(32)


def code_flow_app() -> Starlette:
    async def callback(request: Request) -> Response:
        response = RedirectResponse("/home", 302)
        response.set_cookie("app_session", secrets.token_urlsafe(16), httponly=True)
        return response

    async def home(request: Request) -> Response:
        return PlainTextResponse("home")

    return Starlette(routes=[Route("/auth/callback", callback), Route("/home", home)])


@contextmanager
def thread_server(app: Starlette, port: int, **tls: str) -> Iterator[None]:
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **tls)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(10)


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def run(count: int) -> dict[str, list[float]]:
    work = Path(tempfile.mkdtemp(prefix="bench-silent-"))
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(work / "server.pem")
    ca.cert_pem.write_to_path(work / "ca.pem")
    app_port, idp_port = free_port(), free_port()
    idp = f"https://127.0.0.1:{idp_port}"
    proxy = ConsentProxy(f"http://127.0.0.1:{app_port}")
    standin = MicrosoftStandIn(idp, apps=[demo_app(proxy.url + CALLBACK)])
    standin.grant_user_consent(DEMO_APP_ID, ALICE.email, ["openid", "profile", "email"])
    config = json.loads(proxy.config.read_text())
    config.update(
        public_url=proxy.url,
        session={"secrets": [{"value": SESSION_SECRET}], "upstream_cookie": "app_session",
                 "cookie_secure": False},
        store={"path": str(proxy.dir / "store.sqlite3")},
        sso={"endpoints": [{
            "type": "oidc", "path": "/auth/callback", "issuer": f"{idp}/{{tenantid}}/v2.0",
            "discovery_url": f"{idp}/organizations/v2.0/.well-known/openid-configuration",
            "ca_file": str(work / "ca.pem"), "tenants": [CONTOSO_TENANT_ID],
            "silent": {"client_id": DEMO_APP_ID, "client_secret": {"value": DEMO_APP_SECRET}},
        }]},
    )  # fmt: skip
    proxy.config.write_text(json.dumps(config))
    times: dict[str, list[float]] = {"app": [], "hop": [], "idp": [], "answer": [], "extra": []}
    tls = {"ssl_certfile": str(work / "server.pem")}
    with thread_server(code_flow_app(), app_port), thread_server(standin.app(), idp_port, **tls):
        with proxy, httpx.Client(verify=str(work / "ca.pem"), timeout=15) as browser:
            query = urlencode({
                "client_id": DEMO_APP_ID, "response_type": "code", "scope": "openid",
                "redirect_uri": proxy.url + CALLBACK, "login_hint": ALICE.email,
                "code_challenge": "x" * 43, "code_challenge_method": "S256",
            })  # fmt: skip
            browser.get(f"{idp}/organizations/oauth2/v2.0/authorize?{query}")  # signed in
            for i in range(count + 10):  # the first 10 warm up
                t0 = time.perf_counter()
                browser.get(f"http://127.0.0.1:{app_port}/auth/callback?code=x")
                t1 = time.perf_counter()
                first = browser.get(f"{proxy.url}/auth/callback?code=x")
                t2 = time.perf_counter()
                back = browser.get(first.headers["location"])
                t3 = time.perf_counter()
                done = browser.get(back.headers["location"])
                t4 = time.perf_counter()
                if done.status_code != 303 or "consent_proxy=" not in done.headers.get(
                    "set-cookie", ""
                ):
                    raise SystemExit(f"sign-in {i} was not verified: {done.status_code}")
                if i >= 10:
                    parts = {"app": t1 - t0, "hop": t2 - t1, "idp": t3 - t2, "answer": t4 - t3}
                    parts["extra"] = parts["hop"] - parts["app"] + parts["idp"] + parts["answer"]
                    for name, value in parts.items():
                        times[name].append(value * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    args = parser.parse_args()
    exit_on_sigterm()
    times = run(max(20, min(args.count, 10_000)))
    print(f"silent leg, {len(times['extra'])} sign-ins (ms)   p50     p95")
    for name, values in times.items():
        print(f"  {name:<8} {percentile(values, 50):>22.1f} {percentile(values, 95):>7.1f}")


if __name__ == "__main__":
    main()

"""A sign-in storm, and connected users' requests while Microsoft is slow.

Part 1, sign-ins: SAML sign-ins (POST of a signed SAMLResponse to the app's ACS, each
assertion used once) at concurrency 1, 20 and 100, to the app directly (nginx, which
answers the POST with its session cookie and a redirect) and through consent-proxy with
the store on SQLite and on Redis (a redis-server of the bench's own). Per cell: sign-ins/s,
p50/p99 latency, the latency the proxy adds over direct at the same concurrency (p50), and
the proxy's CPU per sign-in (user+system of its process / sign-ins; the SAML signature
check dominates). The responses are signed before the clock starts.

Part 2, Microsoft slow: consent-proxy with a policy and the Microsoft stand-in behind a
forwarder. `--connected` users connect (hour-long tokens) and `--storm` users consent on
Microsoft's pages while it is fast; then every chunk to and from Microsoft is delayed by
`--delay` seconds (a token call takes several delays) and the storm users all come back
to the callback at once (a Monday-morning sign-in storm: that many code redemptions).
A second later each connected user makes `--requests` requests. The table shows the
connected users' p50/p99/max (the first request of each reads the store and, before
this change, went through msal's shared pool behind the redemptions), and the
callbacks' own times. `--before DIR` runs the same scenario first with the proxy from
another source tree (e.g. `git archive <commit> | tar -x -C DIR`).

Usage: python bench/signins.py [--quick] [--before DIR] [--skip-signins] [--skip-slow]
Needs nginx and redis-server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import httpx
import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # the test suite's servers, TLS and faulty forwarder

from servers import ConsentProxy, Nginx, free_port, start_report  # noqa: E402

from proxy.demo.idp import (  # noqa: E402
    EMAIL_ATTRIBUTE,
    GROUPS_ATTRIBUTE,
    OBJECT_ID_ATTRIBUTE,
    TENANT_ATTRIBUTE,
    DemoIdentityProvider,
)
from proxy.demo.microsoft import DEMO_APP_ID, DEMO_APP_SECRET, MicrosoftStandIn, demo_app  # noqa: E402
from proxy.demo.microsoft.directory import account  # noqa: E402
from proxy.demo.users import CONTOSO_TENANT_ID, DemoUser  # noqa: E402
from proxy.store.vault import new_key  # noqa: E402
from tests.fixtures.faulty import faulty  # noqa: E402
from tests.fixtures.redis_server import RedisServer  # noqa: E402
from tests.servers import ThreadServer, running  # noqa: E402
from tests.test_consent import submit  # noqa: E402
from tests.tls import client_context, https_server  # noqa: E402

IDP_ENTITY = "https://idp.bench.example/metadata"
AUDIENCE = "https://app.bench.example/saml/metadata"
SECRET = "bench-session-secret-that-is-long-enough-000001"
CONCURRENCY = (1, 20, 100)
POLICY = """
version: 1
defaults:
  prompt: every_sign_in
  authorization: {type: graph, scopes: [Calendars.Read]}
  user_consent: allowed
"""


def people(count: int, tag: str) -> list[DemoUser]:
    return [
        DemoUser(
            id=f"{tag}{n}",
            email=f"{tag}{n}@contoso.example",
            name=f"{tag} {n}",
            groups=("bench",),
            tenant_id=CONTOSO_TENANT_ID,
            object_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{tag}{n}")),
        )
        for n in range(count)
    ]


class AcsUpstream(Nginx):
    """The app: `/saml/acs` signs the browser in (a fresh session cookie, a redirect),
    `/echo` answers every other request with a small body."""

    name = "upstream"

    def server_blocks(self) -> str:
        return f"""    server {{
        listen 127.0.0.1:{self.port} reuseport backlog=4096;
        location = /saml/acs {{
            add_header Set-Cookie "app_session=$request_id; Path=/; HttpOnly";
            return 303 /home;
        }}
        location / {{ default_type text/plain; return 200 "ok\\n"; }}
    }}"""


class SamlProxy(ConsentProxy):
    def __init__(self, upstream: str, idp_pem: Path, store: dict[str, object]) -> None:
        super().__init__(upstream)
        config = json.loads(self.config.read_text())
        config.update(
            session={"secrets": [{"value": SECRET}], "upstream_cookie": "app_session",
                     "cookie_secure": False},
            sso={"endpoints": [{"type": "saml", "path": "/saml/acs", "audience": AUDIENCE,
                                "idp_certificates": [str(idp_pem)],
                                "email_attribute": EMAIL_ATTRIBUTE}]},
            store=store,
        )  # fmt: skip
        self.config.write_text(json.dumps(config))


@dataclass
class Cell:
    rate: float
    p50_ms: float
    p99_ms: float
    cpu_ms: float | None
    failed: int


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def storm(
    url: str, responses: Sequence[str], concurrency: int
) -> tuple[float, list[float], int]:
    """Post every response at `concurrency` keep-alive connections: wall time, latencies,
    failed sign-ins. A raw HTTP/1.1 client, so that the client's own cost stays small."""
    host, port = url.removeprefix("http://").split(":")
    queue = [_request(host, int(port), r) for r in responses]
    latencies: list[float] = []
    failed = 0

    async def worker() -> None:
        nonlocal failed
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while queue:
                request = queue.pop()
                started = time.perf_counter()
                writer.write(request)
                status = await _answer(reader)
                latencies.append(time.perf_counter() - started)
                failed += status != 303
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started, latencies, failed


def _request(host: str, port: int, saml: str) -> bytes:
    body = urlencode({"SAMLResponse": saml}).encode()
    head = (
        f"POST /saml/acs HTTP/1.1\r\nHost: {host}:{port}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _answer(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = next(
        (int(v) for n, _, v in (x.partition(":") for x in lines) if n.lower() == "content-length"),
        0,
    )
    if length:
        await reader.readexactly(length)
    return int(lines[0].split()[1])


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def measure(
    url: str, pid: int | None, responses: list[str], counts: dict[int, int]
) -> dict[int, Cell]:
    cells = {}
    for c in CONCURRENCY:
        batch, responses[:] = responses[: counts[c]], responses[counts[c] :]
        before = cpu_seconds(pid) if pid else 0.0
        wall, latencies, failed = asyncio.run(storm(url, batch, c))
        cpu = (cpu_seconds(pid) - before) / len(batch) * 1e3 if pid else None
        cells[c] = Cell(len(batch) / wall, percentile(latencies, 0.5) * 1e3,
                        percentile(latencies, 0.99) * 1e3, cpu, failed)  # fmt: skip
    return cells


def sign_ins(quick: bool) -> None:
    counts = {1: 50, 20: 200, 100: 300} if quick else {1: 200, 20: 1000, 100: 2000}
    total = sum(counts.values())
    users = people(50, "storm")
    with tempfile.TemporaryDirectory(prefix="bench-signins-") as folder:
        work = Path(folder)
        print(f"\nPart 1: SAML sign-ins; signing {total} assertions first ...", flush=True)
        with AcsUpstream() as upstream:
            acs = f"{upstream.url}/saml/acs"
            idp = DemoIdentityProvider(IDP_ENTITY, users, allowed_acs_urls=[acs])
            signed = [idp.response(users[n % len(users)].id, audience=AUDIENCE, acs_url=acs)
                      for n in range(total)]  # fmt: skip
            rows = {"direct (nginx)": measure(upstream.url, None, list(signed), counts)}
            pem = idp.write_certificate(work / "idp.pem")
            with SamlProxy(upstream.url, pem, {"type": "sqlite", "path": "store.sqlite3"}) as proxy:
                rows["consent-proxy, SQLite"] = measure(proxy.url, proxy.pid, list(signed), counts)
            redis = RedisServer()
            redis.start()
            try:
                store = {"type": "redis", "url": redis.url}
                with SamlProxy(upstream.url, pem, store) as proxy:
                    rows["consent-proxy, Redis"] = measure(
                        proxy.url, proxy.pid, list(signed), counts
                    )
            finally:
                redis.stop()
    direct = rows["direct (nginx)"]
    print(f"{'target':<24}{'c':>5}{'sign-ins/s':>12}{'p50 ms':>9}{'p99 ms':>9}"
          f"{'+p50 ms':>9}{'CPU ms/sign-in':>16}{'failed':>8}")  # fmt: skip
    for name, cells in rows.items():
        for c, cell in cells.items():
            added = cell.p50_ms - direct[c].p50_ms
            cpu = f"{cell.cpu_ms:.2f}" if cell.cpu_ms is not None else "-"
            print(f"{name:<24}{c:>5}{cell.rate:>12,.0f}{cell.p50_ms:>9.2f}{cell.p99_ms:>9.2f}"
                  f"{added:>9.2f}{cpu:>16}{cell.failed:>8}")  # fmt: skip


# --- part 2: Microsoft slow ------------------------------------------------------------------


class Browser:
    def __init__(self, ca_file: Path) -> None:
        self.http = httpx.Client(verify=client_context(ca_file), timeout=120)

    def consent(self, proxy: str, idp: DemoIdentityProvider, user: DemoUser) -> str:
        """Sign in, consent on Microsoft's pages: the callback URL, not yet visited."""
        acs = f"{proxy}/saml/acs"
        saml = idp.response(user.id, audience=AUDIENCE, acs_url=acs)
        first = self.http.post(acs, data={"SAMLResponse": saml})
        assert first.status_code == 303, first.status_code
        page = self.http.get(first.headers["location"])
        for _ in range(3):
            if page.status_code != 200:
                break
            page = submit(self.http, page, decision="accept", user=user.email)
        return str(page.headers["location"])

    def get(self, url: str) -> float:
        started = time.perf_counter()
        answer = self.http.get(url)
        assert answer.status_code in (200, 303), answer.status_code
        return time.perf_counter() - started


class SlowEnv:
    def __init__(self, work: Path, source: Path | None, args: argparse.Namespace) -> None:
        self.work, self.source, self.args = work, source, args
        self.connected = people(args.connected, "connected")
        self.stormers = people(args.storm, "signing-in")

    @contextlib.contextmanager
    def running(self) -> Iterator[tuple[str, MicrosoftStandIn, DemoIdentityProvider, Path, object]]:
        work, users = self.work, [*self.connected, *self.stormers]
        standin_port, proxy_port = free_port(), free_port()
        proxy_url = f"http://127.0.0.1:{proxy_port}"
        with faulty(standin_port) as link, running(ThreadServer(_app())) as upstream:
            base = f"https://127.0.0.1:{link.port}"
            callback = f"{proxy_url}/.consent-proxy/callback"
            accounts = [account(u) for u in users]
            standin = MicrosoftStandIn(base, users=accounts, apps=[demo_app(callback)])
            server, ca_file = https_server(standin.app(), work, port=standin_port)
            acs = f"{proxy_url}/saml/acs"
            idp = DemoIdentityProvider(IDP_ENTITY, users, allowed_acs_urls=[acs])
            (work / "policy.yaml").write_text(POLICY)
            config = {
                "upstream": {"url": upstream.url},
                "public_url": proxy_url,
                "logging": {"level": "warning"},
                "ops": {"port": 0},
                "session": {"secrets": [{"value": SECRET}], "upstream_cookie": "app_session",
                            "cookie_secure": False},
                "store": {"path": str(work / "store.sqlite3")},
                "sso": {"endpoints": [{
                    "type": "saml", "path": "/saml/acs", "audience": AUDIENCE,
                    "idp_certificates": [str(idp.write_certificate(work / "idp.pem"))],
                    "email_attribute": EMAIL_ATTRIBUTE, "tenant_attribute": TENANT_ATTRIBUTE,
                    "object_id_attribute": OBJECT_ID_ATTRIBUTE,
                    "groups_attribute": GROUPS_ATTRIBUTE}]},
                "policy": str(work / "policy.yaml"),
                "microsoft_apps": {"default": {
                    "client_id": DEMO_APP_ID, "client_secret": {"value": DEMO_APP_SECRET},
                    "authority_host": base, "ca_file": str(ca_file)}},
                "tokens": {"encryption_keys": [{"value": new_key()}]},
            }  # fmt: skip
            (work / "config.json").write_text(json.dumps(config))
            env = {**os.environ}
            if self.source is not None:  # the proxy from that tree, not the installed one
                env["PYTHONPATH"] = str(self.source)
            command = [sys.executable, "-m", "proxy.cli", "run", "--config",
                       str(work / "config.json"), "--port", str(proxy_port)]  # fmt: skip
            with running(server), _process(command, env, proxy_port, work):
                yield proxy_url, standin, idp, ca_file, link

    def run(self) -> dict[str, list[float]]:
        with self.running() as (proxy, _, idp, ca_file, link):
            calm = [Browser(ca_file) for _ in self.connected]
            for browser, user in zip(calm, self.connected, strict=True):
                browser.get(browser.consent(proxy, idp, user))  # connected, hour-long tokens
            hurried = [Browser(ca_file) for _ in self.stormers]
            callbacks = [  # consent given at Microsoft: the code is on its way back
                browser.consent(proxy, idp, user)
                for browser, user in zip(hurried, self.stormers, strict=True)
            ]
            link.slow(self.args.delay)  # type: ignore[attr-defined]
            return asyncio.run(
                self._measure(proxy, calm, list(zip(hurried, callbacks, strict=True)))
            )

    async def _measure(
        self, proxy: str, calm: list[Browser], storm: list[tuple[Browser, str]]
    ) -> dict[str, list[float]]:
        # A thread per browser: asyncio's default pool would queue them in the bench.
        threads = ThreadPoolExecutor(max_workers=len(calm) + len(storm))
        loop = asyncio.get_running_loop()

        async def redeem(browser: Browser, callback: str) -> float:
            return await loop.run_in_executor(threads, browser.get, callback)

        async def user(browser: Browser) -> list[float]:
            return [
                await loop.run_in_executor(threads, browser.get, f"{proxy}/echo")
                for _ in range(self.args.requests)
            ]

        redemptions = [asyncio.ensure_future(redeem(*pair)) for pair in storm]
        await asyncio.sleep(1.0)  # the redemptions are waiting on Microsoft
        connected = await asyncio.gather(*(user(b) for b in calm))
        redeemed = await asyncio.gather(*redemptions)
        threads.shutdown()
        return {"connected": [x for each in connected for x in each], "redeeming": redeemed}


def _app() -> object:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse, RedirectResponse, Response
    from starlette.routing import Route

    async def acs(request: Request) -> Response:
        response = RedirectResponse("/home", status_code=303)
        response.set_cookie("app_session", uuid.uuid4().hex, httponly=True)
        return response

    async def echo(request: Request) -> Response:
        return PlainTextResponse("ok")

    return Starlette(routes=[Route("/saml/acs", acs, methods=["POST"]),
                             Route("/{rest:path}", echo)])  # fmt: skip


@contextlib.contextmanager
def _process(command: list[str], env: dict[str, str], port: int, work: Path) -> Iterator[None]:
    import subprocess

    from servers import stop_process, wait_http

    with (work / "proxy.log").open("wb") as log:
        proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=work)
    try:
        wait_http(port, proc)
        yield
    finally:
        stop_process(proc)


def slow_microsoft(args: argparse.Namespace) -> None:
    print(f"\nPart 2: Microsoft slow ({args.delay:g} s per chunk), {args.storm} code redemptions, "
          f"{args.connected} connected users x {args.requests} requests")  # fmt: skip
    trees = ([("before", Path(args.before).resolve())] if args.before else []) + [("after", None)]
    print(f"{'proxy':<8}{'who':<11}{'requests':>9}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}")
    for label, source in trees:
        with tempfile.TemporaryDirectory(prefix="bench-slow-") as folder:
            seen = SlowEnv(Path(folder), source, args).run()
        for who, values in seen.items():
            ms = [v * 1e3 for v in values]
            print(f"{label:<8}{who:<11}{len(ms):>9}{statistics.median(ms):>10.1f}"
                  f"{percentile(ms, 0.99):>10.1f}{max(ms):>10.1f}", flush=True)  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer sign-ins and users")
    parser.add_argument("--before", help="a source tree to run part 2 with first")
    parser.add_argument("--delay", type=float, default=2.5, help="seconds per chunk to Microsoft")
    parser.add_argument("--connected", type=int, default=20)
    parser.add_argument("--storm", type=int, default=40)
    parser.add_argument("--requests", type=int, default=10)
    parser.add_argument("--skip-signins", action="store_true")
    parser.add_argument("--skip-slow", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.connected, args.storm, args.requests = 5, 12, 5
    start_report(["consent-proxy", "uvicorn", "redis"], "consent-proxy: sign-ins, Microsoft slow")
    if not args.skip_signins:
        sign_ins(args.quick)
    if not args.skip_slow:
        slow_microsoft(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

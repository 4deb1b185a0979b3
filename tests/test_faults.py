"""Fault isolation over real servers: the proxy (a `consent-proxy run` process), the app, the
demo IdP, the Microsoft stand-in behind a forwarder that hangs or refuses on demand, and a
Redis of its own behind another (never the shared one).

What is asserted are the design's bounds, with a wide margin, never the machine's speed:
a connected user's request never waits on Microsoft (it completes well within
`tokens.expired_wait`, the longest any request may wait for a token), one whose token
expired waits at most that long and goes on without a token; a redemption that cannot
start within `consent.redeem_wait` gets the "Microsoft is slow" page at once; and a Redis
outage longer than every in-process cache loses and mixes no identity."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from proxy.demo.idp import DemoIdentityProvider
from proxy.demo.microsoft import MicrosoftStandIn, demo_app
from proxy.microsoft import MicrosoftError
from proxy.microsoft.lanes import BUSY, BoundedLane

from .fixtures.faulty import FaultyForwarder, faulty
from .fixtures.redis_server import RedisServer
from .servers import ProxyProcess, ThreadServer, free_port, running, wait_for_port
from .sso_app import SsoApp
from .test_consent import (
    ALICE,
    AUDIENCE,
    BOB,
    IDP_ENTITY,
    IDP_USERS,
    POLICY,
    PREFIX,
    Env,
    Person,
    consent_config,
    title,
    user_id,
)
from .tls import https_server

# The bounds under test (seconds). The in-process caches are short so that the store and
# Microsoft are consulted during every fault window.
EXPIRED_WAIT = 2.0
REDEEM_WAIT = 1.0
CACHE_SECONDS = 1.0
# What "well within the bound" means: a fraction of it, far above any request's own time.
MARGIN = 0.5
KEY_PREFIX = "faults:"
NAMES = {
    "user": "x-consent-proxy-user",
    "integration": "x-consent-proxy-integration",
    "token": "x-consent-proxy-access-token",
}


@dataclass
class Faults:
    env: Env
    microsoft: FaultyForwarder
    redis_link: FaultyForwarder
    redis: RedisServer
    ops: str

    def record(self, namespace: str, key: str) -> dict[str, Any] | None:
        with redis.Redis(port=self.redis.port) as client:
            raw = client.get(f"{KEY_PREFIX}{namespace}:{key}")
        return json.loads(raw) if raw else None

    def count(self, namespace: str) -> int:
        with redis.Redis(port=self.redis.port) as client:
            return len(list(client.scan_iter(match=f"{KEY_PREFIX}{namespace}:*")))

    def metric(self, name: str) -> float:
        text = httpx.get(f"{self.ops}/metrics", timeout=10).text
        found = [line.split()[-1] for line in text.splitlines() if line.startswith(name)]
        return float(found[0]) if found else 0.0


@contextlib.contextmanager
def fault_env(work: Path) -> Iterator[Faults]:
    app = SsoApp()
    proxy = ProxyProcess({}, work)
    standin_port, ops_port = free_port(), free_port()
    redis_server = RedisServer()
    redis_server.start()
    with faulty(standin_port) as microsoft, faulty(redis_server.port) as redis_link:
        # The stand-in names the forwarder as its own address: every call msal makes
        # (discovery, token endpoint) goes through it, as does the browser.
        base = f"https://127.0.0.1:{microsoft.port}"
        standin = MicrosoftStandIn(base, apps=[demo_app(f"{proxy.url}{PREFIX}callback")])
        standin.set_user_consent("fabrikam", True)  # bob may consent for himself here
        standin_server, ca_file = https_server(standin.app(), work, port=standin_port)
        acs = f"{proxy.url}/saml/acs"
        idp = DemoIdentityProvider(IDP_ENTITY, IDP_USERS, allowed_acs_urls=[acs])
        (work / "policy.yaml").write_text(POLICY)
        with running(ThreadServer(app.app())) as upstream, running(standin_server):
            config = consent_config(work, upstream.url, proxy.url, idp, base, ca_file)
            config["tokens"].update(expired_wait=EXPIRED_WAIT, cache_seconds=CACHE_SECONDS)
            config["session"]["cache_seconds"] = CACHE_SECONDS
            config["consent"] = {
                "redeem_threads": 1,
                "redeem_queue": 1,
                "redeem_wait": REDEEM_WAIT,
            }
            config["ops"] = {"port": ops_port}
            config["store"] = {
                "type": "redis",
                "url": f"redis://127.0.0.1:{redis_link.port}/0",
                "key_prefix": KEY_PREFIX,
                "timeout": 0.5,
            }
            proxy.config_path.write_text(json.dumps(config))
            try:
                with running(proxy):
                    wait_for_port(ops_port)
                    env = Env(app, proxy, idp, standin, ca_file, acs)
                    ops = f"http://127.0.0.1:{ops_port}"
                    yield Faults(env, microsoft, redis_link, redis_server, ops)
            finally:
                redis_server.stop()


@pytest.fixture
def faults(tmp_path: Path) -> Iterator[Faults]:
    with fault_env(tmp_path) as running_env:
        yield running_env


def connect(person: Person, user: Any, lifetime: int = 3600) -> None:
    person.env.standin.access_token_lifetime = lifetime
    first = person.sign_in(user_id(user, "mode-every_sign_in"))
    assert person.at_microsoft(first)
    assert person.get(person.answer(first)).status_code == 303


def timed(person: Person) -> tuple[float, dict[str, str]]:
    started = time.monotonic()
    response = person.get("/echo")
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    headers: dict[str, str] = response.json()["headers"]
    return elapsed, headers


def requests_through(person: Person, seconds: float) -> list[tuple[float, dict[str, str]]]:
    """The person's requests for `seconds` (longer than every in-process cache)."""
    seen = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        seen.append(timed(person))
        time.sleep(0.1)
    return seen


@pytest.mark.parametrize("fault", ["hang", "refuse"])
def test_connected_users_never_wait_for_microsoft(faults: Faults, fault: str) -> None:
    env = faults.env
    valid, expired = Person(env), Person(env)
    try:
        connect(valid, ALICE)
        connect(expired, BOB, lifetime=20)  # under the 30 s a token must have left to be sent
        faults.microsoft.hang() if fault == "hang" else faults.microsoft.refuse()
        for elapsed, headers in requests_through(valid, 3 * CACHE_SECONDS):
            assert elapsed < MARGIN * EXPIRED_WAIT, elapsed  # never waited on Microsoft
            assert headers[NAMES["user"]] == ALICE.email
            assert headers[NAMES["integration"]] == "connected"
            assert headers.get(NAMES["token"])
        for elapsed, headers in requests_through(expired, 3 * CACHE_SECONDS):
            assert elapsed < EXPIRED_WAIT + MARGIN * EXPIRED_WAIT, elapsed
            assert headers[NAMES["user"]] == BOB.email
            assert NAMES["token"] not in headers  # forwarded, without a token it lacks
        # A sign-in that the policy sends to Microsoft (a rule now asks for more scopes):
        # the authorize URL needs no call to it.
        newcomer = Person(env)
        try:
            started = time.monotonic()
            assert newcomer.at_microsoft(newcomer.sign_in(user_id(ALICE, "drift")))
            assert time.monotonic() - started < MARGIN * EXPIRED_WAIT
        finally:
            newcomer.close()
        if fault == "hang":
            assert "forwarded without one" in env.proxy.logs()
            assert faults.metric("consent_proxy_tokens_not_ready_total") >= 1
    finally:
        valid.close()
        expired.close()


def test_redemptions_beyond_the_queue_get_the_transient_outcome(faults: Faults) -> None:
    env = faults.env
    people = [Person(env) for _ in range(3)]
    try:
        callbacks = []
        for person, user in zip(people, (ALICE, BOB, BOB), strict=True):
            first = person.sign_in(user_id(user, "mode-every_sign_in"))
            assert person.at_microsoft(first)
            callbacks.append(person.answer(first))
        faults.microsoft.hang()  # the first redemption takes the one thread, and hangs

        def back(pair: tuple[Person, str]) -> tuple[float, httpx.Response]:
            started = time.monotonic()
            response = pair[0].get(pair[1], timeout=60)
            return time.monotonic() - started, response

        with ThreadPoolExecutor(max_workers=3) as pool:
            hung = pool.submit(back, (people[0], callbacks[0]))
            time.sleep(0.5)  # the first one holds the thread now
            refused = list(pool.map(back, zip(people[1:], callbacks[1:], strict=True)))
            for elapsed, response in refused:
                assert elapsed < REDEEM_WAIT + 5 * MARGIN, elapsed
                assert response.status_code == 200
                assert title(response) == "Microsoft is slow"
                assert "try again" in response.text
            faults.microsoft.pass_through()  # what was held flows on: the first completes
            _, first = hung.result(timeout=60)
        assert first.status_code == 303
        connected = faults.record("integration", f"{ALICE.tenant_id}.{ALICE.object_id}")
        assert connected is not None and connected["status"] == "connected"
        record = faults.record("integration", f"{BOB.tenant_id}.{BOB.object_id}")
        assert record is not None
        assert record["status"] == "failed" and record["last_error_class"] == "transient"
        # The policy treats it as transient: every_sign_in asks again at the next sign-in.
        again = Person(env)
        assert again.at_microsoft(again.sign_in(user_id(BOB, "mode-every_sign_in")))
        again.close()
    finally:
        for person in people:
            person.close()


def test_redis_outage_longer_than_every_cache_loses_and_mixes_no_identity(faults: Faults) -> None:
    env = faults.env
    alice, bob, replayer = Person(env), Person(env), Person(env)
    try:
        connect(alice, ALICE)
        assert timed(alice)[1].get(NAMES["token"])  # what this replica knows before the outage
        faults.redis_link.refuse()
        outage = 6 * CACHE_SECONDS
        # A sign-in during the outage: a session all the same, held in process.
        saml = env.idp.response(user_id(BOB, "mode-never"), audience=AUDIENCE, acs_url=env.acs)
        signed_in = bob.http.post(env.acs, params={"to": "/home"}, data={"SAMLResponse": saml})
        assert signed_in.status_code == 303
        assert "consent_proxy=" in signed_in.headers.get("set-cookie", "")
        # The same assertion again, during the outage: never accepted twice.
        replayed = replayer.http.post(env.acs, data={"SAMLResponse": saml})
        assert "consent_proxy=" not in ",".join(replayed.headers.get_list("set-cookie"))
        for _, headers in requests_through(alice, outage / 2):
            assert headers[NAMES["user"]] == ALICE.email
            assert headers.get(NAMES["token"])
        for _, headers in requests_through(bob, outage / 2):
            assert headers[NAMES["user"]] == BOB.email
            assert NAMES["token"] not in headers
        faults.redis_link.pass_through()
        for _ in range(3):
            assert timed(alice)[1][NAMES["user"]] == ALICE.email
            assert timed(bob)[1][NAMES["user"]] == BOB.email
            time.sleep(CACHE_SECONDS)
        assert faults.count("session") == 2  # bob's held session was written, nothing lost
        assert faults.count("sso-replay") == 2  # with its replay key
        late = Person(env)  # and the assertion stays spent once the store is back
        again = late.http.post(env.acs, data={"SAMLResponse": saml})
        assert "consent_proxy=" not in ",".join(again.headers.get_list("set-cookie"))
        late.close()
        assert faults.metric('consent_proxy_store_outage_sign_ins_total{outcome="settled"}') == 1
    finally:
        for person in (alice, bob, replayer):
            person.close()


# --- the redemption lane on its own ------------------------------------------------------------


def test_lane_refuses_beyond_its_queue_at_once_and_after_its_wait() -> None:
    async def scenario() -> None:
        lane = BoundedLane("code redemption", threads=1, queue=1, wait=0.3)
        release = threading.Event()
        try:
            busy = asyncio.ensure_future(lane.run(lambda: release.wait(10)))
            await asyncio.sleep(0.05)
            waiting = asyncio.ensure_future(lane.run(lambda: "second"))
            await asyncio.sleep(0.05)
            with pytest.raises(MicrosoftError) as full:  # the queue is full: at once
                await asyncio.wait_for(lane.run(lambda: "third"), 0.2)
            assert full.value.error.kind == "transient" and full.value.error.error == BUSY
            with pytest.raises(MicrosoftError):  # the one waiting ran out of time
                await waiting
            release.set()
            assert await busy is True
            assert await lane.run(lambda: "free again") == "free again"
        finally:
            release.set()
            lane.close()

    asyncio.run(scenario())

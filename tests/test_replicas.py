"""Several replicas, one truth: two proxy processes share one Redis. A sign-in through one
is a session on both; a due token is refreshed once for both; Redis going away leaves
both serving the app, and both recover by themselves when it returns."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from uuid import uuid4

import httpx
import pytest
import redis
import yaml

from .fixtures.redis_server import RedisServer
from .servers import ProxyProcess, eventually, free_port, running, wait_for_port
from .test_consent import ALICE, AUDIENCE, Env, Person, consent_env, user_id

TOKEN = "x-consent-proxy-access-token"
INTEGRATION = "x-consent-proxy-integration"


@dataclass
class Replicas:
    env: Env  # replica A is env.proxy, in front of the shared app and stand-in
    b: ProxyProcess
    redis: RedisServer
    prefix: str
    ops_a: str
    ops_b: str


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[Replicas]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    data = tmp_path / "redis"
    for folder in (data, tmp_path / "a", tmp_path / "b"):
        folder.mkdir()
    server = RedisServer("--appendonly", "yes", "--appendfsync", "always", "--dir", str(data))
    server.start()
    prefix = f"test:{uuid4().hex}:"
    store = {"type": "redis", "url": server.url, "key_prefix": prefix, "timeout": 0.5}
    ops_a, ops_b = free_port(), free_port()
    try:
        with consent_env(tmp_path / "a", store=store, ops={"port": ops_a}) as env:
            config = yaml.safe_load(env.proxy.config_path.read_text())
            config["ops"] = {"port": ops_b}  # the very same config: only the ops port differs
            with running(ProxyProcess(config, tmp_path / "b")) as b:
                wait_for_port(ops_a)
                wait_for_port(ops_b)
                yield Replicas(
                    env, b, server, prefix, f"http://127.0.0.1:{ops_a}", f"http://127.0.0.1:{ops_b}"
                )
    finally:
        server.stop()


def connect(person: Person, lifetime: int = 3600) -> None:
    person.env.standin.access_token_lifetime = lifetime
    first = person.sign_in(user_id(ALICE, "mode-every_sign_in"))
    assert person.get(person.answer(first)).status_code == 303


def through(proxy: ProxyProcess, cookies: dict[str, str]) -> dict[str, str]:
    response = httpx.get(f"{proxy.url}/echo", cookies=cookies, timeout=30)
    assert response.status_code == 200
    headers: dict[str, str] = response.json()["headers"]
    return headers


def test_a_sign_in_through_a_is_a_session_on_b(replicas: Replicas) -> None:
    person = Person(replicas.env)
    connect(person)
    cookies = dict(person.http.cookies)
    on_a = through(replicas.env.proxy, cookies)
    on_b = through(replicas.b, cookies)
    assert on_b[INTEGRATION] == "connected"
    assert on_b[TOKEN] == on_a[TOKEN]
    person.close()


def test_one_refresh_for_both_replicas_at_expiry(replicas: Replicas) -> None:
    person = Person(replicas.env)
    connect(person, lifetime=200)  # due for refresh at once
    standin = replicas.env.standin
    standin.access_token_lifetime = 3600
    before = standin.refresh_redemptions[ALICE.email]
    cookies = dict(person.http.cookies)
    targets = [replicas.env.proxy, replicas.b] * 50
    with ThreadPoolExecutor(max_workers=40) as pool:
        tokens = list(pool.map(lambda proxy: through(proxy, cookies).get(TOKEN), targets))
    assert all(tokens)
    assert standin.refresh_redemptions[ALICE.email] - before == 1
    assert len(set(tokens)) == 1
    person.close()


def ready(ops: str) -> tuple[int, str]:
    response = httpx.get(f"{ops}/readyz", timeout=10)
    return response.status_code, response.text


def test_redis_outage_keeps_both_serving_and_both_recover(replicas: Replicas) -> None:
    person = Person(replicas.env)
    connect(person)
    cookies = dict(person.http.cookies)
    raw = redis.Redis.from_url(replicas.redis.url)
    kept = sorted(raw.scan_iter(match=f"{replicas.prefix}*"))
    raw.close()
    assert kept

    replicas.redis.stop()
    try:
        for proxy in (replicas.env.proxy, replicas.b):
            assert httpx.get(f"{proxy.url}/echo", timeout=10).status_code == 200  # anonymous
            # A browser that signs in meanwhile still reaches the app.
            saml = replicas.env.idp.response(
                user_id(ALICE, "mode-never"), audience=AUDIENCE, acs_url=replicas.env.acs
            )
            signed_in = httpx.post(f"{proxy.url}/saml/acs", data={"SAMLResponse": saml}, timeout=10)
            assert signed_in.status_code == 303
        for ops in (replicas.ops_a, replicas.ops_b):
            status, text = ready(ops)
            assert status == 503 and "store" in text
    finally:
        replicas.redis.start()  # same port, same data directory

    for ops in (replicas.ops_a, replicas.ops_b):
        assert eventually(lambda ops=ops: ready(ops)[0] == 200, 15.0, interval=0.1)
    raw = redis.Redis.from_url(replicas.redis.url)
    assert set(kept) <= set(raw.scan_iter(match=f"{replicas.prefix}*"))  # nothing lost
    raw.close()
    for proxy in (replicas.env.proxy, replicas.b):
        assert eventually(
            lambda proxy=proxy: through(proxy, cookies).get(INTEGRATION) == "connected",
            15.0,
            interval=0.1,
        )
    logs = replicas.env.proxy.logs() + replicas.b.logs()
    assert "Redis store" in logs and "Traceback" not in logs
    person.close()

"""What only the Redis engine has to prove: real expiries, its key scheme, its failures.

The shared contract is in test_store.py. Tests that break or stop a server run their own
throwaway `redis-server` on a free port, never the shared one.
"""

from __future__ import annotations

import asyncio
import gc
import shutil
import signal
import subprocess
import time
import traceback
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from proxy.config import RedisStore as RedisSettings
from proxy.config import Secret, settings_from_data
from proxy.errors import ConfigError
from proxy.store import StoreError, open_store
from proxy.store.redis import RedisStore

from .fixtures.redis_server import RedisServer, raw_redis, redis_prefix, redis_settings
from .servers import free_port, wait_for_port

PASSWORD = "correct-horse-battery-staple-7"  # the throwaway server's
WRONG_PASSWORD = "wrong-password-must-never-show-3141"
# A hang guard, not a performance assertion: failures are bounded by `timeout` (0.5 s here).
HANG_GUARD = 10.0


def run(store: RedisStore, body: Callable[[RedisStore], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        try:
            return await body(store)
        finally:
            await store.aclose()

    return asyncio.run(main())


@pytest.fixture
def prefix() -> Iterator[str]:
    with redis_prefix() as prefix:
        yield prefix


@pytest.fixture
def server() -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer("--requirepass", PASSWORD)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def on(server: RedisServer, password: str = PASSWORD, **options: Any) -> RedisStore:
    return RedisStore(
        RedisSettings(type="redis", url=server.url, password=Secret(value=password), **options)
    )


def store_error(store: RedisStore, body: Callable[[RedisStore], Awaitable[Any]]) -> StoreError:
    started = time.monotonic()
    with pytest.raises(StoreError) as error:
        run(store, body)
    assert time.monotonic() - started < HANG_GUARD
    return error.value


# --- expiry and keys ------------------------------------------------------------------------


def test_ttls_are_redis_expiries(prefix: str) -> None:
    async def body(store: RedisStore) -> None:
        await store.put("ns", "put", b"v", ttl=60)
        await store.add("ns", "add", b"v", ttl=30)
        await store.put("ns", "cas", b"v", ttl=60)
        await store.replace_if("ns", "cas", b"v", b"w", ttl=20)
        await store.put("ns", "forever", b"v")
        await store.put("ns", "again", b"v", ttl=60)
        await store.put("ns", "again", b"w")  # a write without ttl makes it persistent
        await store.put("ns", "cas-forever", b"v", ttl=60)
        await store.replace_if("ns", "cas-forever", b"v", b"w")

    run(RedisStore(redis_settings(key_prefix=prefix)), body)
    with raw_redis() as raw:
        assert 59_000 < raw.pttl(f"{prefix}ns:put") <= 60_000
        assert 29_000 < raw.pttl(f"{prefix}ns:add") <= 30_000
        assert 19_000 < raw.pttl(f"{prefix}ns:cas") <= 20_000
        assert raw.pttl(f"{prefix}ns:forever") == -1
        assert raw.pttl(f"{prefix}ns:again") == -1
        assert raw.pttl(f"{prefix}ns:cas-forever") == -1


def test_a_tiny_ttl_is_still_an_expiry(prefix: str) -> None:
    async def body(store: RedisStore) -> bytes | None:
        await store.put("ns", "k", b"v", ttl=0.0001)  # Redis refuses PX 0: 1 ms at least
        await asyncio.sleep(0.05)
        return await store.get("ns", "k")

    assert run(RedisStore(redis_settings(key_prefix=prefix)), body) is None


def test_keys_live_under_the_prefix_and_prefixes_are_isolated() -> None:
    with redis_prefix() as one, redis_prefix() as two:

        async def body(_: RedisStore) -> tuple[Any, ...]:
            a = RedisStore(redis_settings(key_prefix=one))
            b = RedisStore(redis_settings(key_prefix=two))
            try:
                await a.put("session", "k", b"from-a")
                await b.put("session", "k", b"from-b")
                await b.put("session", "only-b", b"x")
                return (
                    await a.get("session", "k"),
                    await b.get("session", "k"),
                    await a.keys("session"),
                    await b.keys("session"),
                )
            finally:
                await a.aclose()
                await b.aclose()

        got = run(RedisStore(redis_settings(key_prefix=one)), body)
        assert got == (b"from-a", b"from-b", ["k"], ["k", "only-b"])
        with raw_redis() as raw:
            assert set(raw.scan_iter(match=f"{one}*")) == {f"{one}session:k".encode()}


def test_a_colon_in_namespace_or_key_cannot_collide(prefix: str) -> None:
    async def body(store: RedisStore) -> tuple[Any, ...]:
        await store.put("a:b", "c", b"1")
        await store.put("a", "b:c", b"2")
        return (
            await store.get("a:b", "c"),
            await store.get("a", "b:c"),
            await store.keys("a:b"),
            await store.keys("a"),
        )

    got = run(RedisStore(redis_settings(key_prefix=prefix)), body)
    assert got == (b"1", b"2", ["c"], ["b:c"])
    with raw_redis() as raw:
        assert set(raw.scan_iter(match=f"{prefix}*")) == {
            f"{prefix}a%3Ab:c".encode(),
            f"{prefix}a:b:c".encode(),
        }


def test_glob_characters_in_the_prefix_match_only_themselves(prefix: str) -> None:
    # Unescaped, SCAN MATCH "<p>[ab]*:ns:*" would also list the other store's "<p>ax:ns:k".
    async def body(_: RedisStore) -> list[str]:
        globby = RedisStore(redis_settings(key_prefix=f"{prefix}[ab]*:"))
        other = RedisStore(redis_settings(key_prefix=f"{prefix}ax:"))
        try:
            await globby.put("ns", "mine", b"1")
            await other.put("ns", "theirs", b"2")
            return await globby.keys("ns")
        finally:
            await globby.aclose()
            await other.aclose()

    assert run(RedisStore(redis_settings(key_prefix=prefix)), body) == ["mine"]


def test_purge_has_nothing_to_do(prefix: str) -> None:
    async def body(store: RedisStore) -> int:
        await store.put("ns", "k", b"v", ttl=0.01)
        await asyncio.sleep(0.05)
        return await store.purge_expired()

    assert run(RedisStore(redis_settings(key_prefix=prefix)), body) == 0


# --- failures -------------------------------------------------------------------------------


def test_a_wrong_password_is_a_store_error_that_never_shows_it(server: RedisServer) -> None:
    error = store_error(on(server, WRONG_PASSWORD, timeout=0.5), lambda s: s.get("ns", "k"))
    shown = "".join(traceback.format_exception(error)) + repr(error) + error.description
    assert WRONG_PASSWORD not in shown
    assert PASSWORD not in shown
    assert f"127.0.0.1:{server.port}" in str(error)
    assert "AuthenticationError" in str(error)
    assert error.code == "store_unavailable"


def test_the_right_password_works(server: RedisServer) -> None:
    async def body(store: RedisStore) -> bytes | None:
        await store.put("ns", "k", b"v")
        return await store.get("ns", "k")

    assert run(on(server), body) == b"v"


def test_nothing_listening_is_a_quick_store_error() -> None:
    settings = RedisSettings(type="redis", url=f"redis://127.0.0.1:{free_port()}/0", timeout=0.5)
    error = store_error(RedisStore(settings), lambda s: s.put("ns", "k", b"v"))
    assert "ConnectionError" in str(error)


def test_a_server_error_is_a_store_error(prefix: str) -> None:
    with raw_redis() as raw:
        raw.lpush(f"{prefix}ns:list", b"x")  # GET on a list: WRONGTYPE
    error = store_error(
        RedisStore(redis_settings(key_prefix=prefix)), lambda s: s.get("ns", "list")
    )
    assert "ResponseError: WRONGTYPE" in str(error)


def test_killed_connections_are_replaced_without_an_error(server: RedisServer) -> None:
    async def body(store: RedisStore) -> list[bytes | None]:
        await store.put("ns", "k", b"v")
        await asyncio.gather(*(store.get("ns", "k") for _ in range(5)))  # a few pooled
        with redis.Redis(port=server.port, password=PASSWORD) as admin:
            assert admin.client_kill_filter(_type="normal", skipme=True) >= 1
        return list(await asyncio.gather(*(store.get("ns", "k") for _ in range(5))))

    assert run(on(server), body) == [b"v"] * 5


def test_an_outage_is_a_store_error_and_the_same_store_recovers(server: RedisServer) -> None:
    async def body(store: RedisStore) -> bytes | None:
        await store.put("ns", "k", b"before")
        server.stop()
        started = time.monotonic()
        with pytest.raises(StoreError, match="ConnectionError"):
            await store.get("ns", "k")
        with pytest.raises(StoreError):
            await store.ping()
        assert time.monotonic() - started < HANG_GUARD
        server.start()  # same port, empty (no persistence)
        await store.ping()
        await store.put("ns", "k", b"after")
        return await store.get("ns", "k")

    assert run(on(server, timeout=0.5), body) == b"after"


@pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="needs SIGSTOP")
def test_a_server_that_stops_answering_is_a_store_error_within_the_timeout(
    server: RedisServer,
) -> None:
    assert server.process is not None
    process = server.process

    async def body(store: RedisStore) -> bytes | None:
        await store.put("ns", "k", b"v")
        process.send_signal(signal.SIGSTOP)  # connections still open, nobody answers
        try:
            started = time.monotonic()
            results = await asyncio.gather(
                *(store.get("ns", "k") for _ in range(20)), return_exceptions=True
            )
            assert time.monotonic() - started < HANG_GUARD
            assert all(isinstance(r, StoreError) for r in results)
            assert "TimeoutError" in str(results[0])
        finally:
            process.send_signal(signal.SIGCONT)
        return await store.get("ns", "k")

    assert run(on(server, timeout=0.5), body) == b"v"


def test_cluster_mode_against_a_plain_server_is_a_store_error(prefix: str) -> None:
    store = RedisStore(redis_settings(key_prefix=prefix, cluster=True, timeout=0.5))
    error = store_error(store, lambda s: s.get("ns", "k"))
    assert str(error).startswith("Redis store (cluster via 127.0.0.1:6379): ")


def test_no_sentinel_answering_is_a_quick_store_error() -> None:
    sentinels = [f"127.0.0.1:{free_port()}", f"[::1]:{free_port()}"]
    sentinel = {"master_name": "mymaster", "sentinels": sentinels}
    store = RedisStore(redis_settings(sentinel=sentinel, timeout=0.5))
    error = store_error(store, lambda s: s.get("ns", "k"))
    assert str(error) == (
        "Redis store (sentinel master 'mymaster'): MasterNotFoundError: "
        f"no healthy primary known to the sentinels ({', '.join(sentinels)})"
    )


def test_a_sentinel_managed_primary_is_found_and_used(server: RedisServer, tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "sentinel.conf"  # Sentinel rewrites its file: it must be writable
    config.write_text(
        f"port {port}\nbind 127.0.0.1\n"
        f"sentinel monitor mymaster 127.0.0.1 {server.port} 1\n"
        f"sentinel auth-pass mymaster {PASSWORD}\n"
    )
    binary = shutil.which("redis-server")
    assert binary is not None
    sentinel = subprocess.Popen([binary, str(config), "--sentinel"], stdout=subprocess.DEVNULL)
    try:
        wait_for_port(port, HANG_GUARD, proc=sentinel)
        topology = {"master_name": "mymaster", "sentinels": [f"127.0.0.1:{port}"]}
        store = RedisStore(
            redis_settings(sentinel=topology, password=Secret(value=PASSWORD), timeout=0.5)
        )

        async def body(store: RedisStore) -> tuple[Any, ...]:
            await store.put("ns", "k", b"v", ttl=30)
            return await store.get("ns", "k"), await store.pop("ns", "k"), await store.keys("ns")

        assert run(store, body) == (b"v", b"v", [])
    finally:
        sentinel.terminate()
        sentinel.wait(timeout=HANG_GUARD)


# --- lifecycle and factory ------------------------------------------------------------------


def test_the_client_is_made_on_first_use_in_the_loop_that_uses_it(prefix: str) -> None:
    store = RedisStore(redis_settings(key_prefix=prefix))  # no loop, no connection yet

    async def write() -> None:
        await store.put("ns", "k", b"v")
        await store.aclose()

    async def read() -> bytes | None:
        try:
            return await store.get("ns", "k")
        finally:
            await store.aclose()

    asyncio.run(write())
    assert asyncio.run(read()) == b"v"  # closed, then used again: a new client, a new loop


# The client left open in the first loop cannot be closed from the second: Python warns
# about its sockets when it is collected, which is the point of this test, not a fault.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_client_left_open_in_another_loop_is_not_reused(prefix: str) -> None:
    store = RedisStore(redis_settings(key_prefix=prefix))

    async def write() -> None:
        await store.put("ns", "k", b"v")

    async def read() -> bytes | None:
        try:
            return await store.get("ns", "k")
        finally:
            await store.aclose()

    asyncio.run(write())  # the loop ends with the client still open
    assert asyncio.run(read()) == b"v"
    gc.collect()


def test_open_store_makes_a_redis_store_without_connecting() -> None:
    settings = RedisSettings(type="redis", url=f"redis://127.0.0.1:{free_port()}/0")
    store = open_store(settings)
    assert isinstance(store, RedisStore)
    asyncio.run(store.aclose())


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        (
            "http://redis.internal:6379/0",
            "store.url: must be redis://host:port/db (rediss:// for TLS), "
            "got 'http://redis.internal:6379/0'",
        ),
        (
            "redis:///0",
            "store.url: must be redis://host:port/db (rediss:// for TLS), got 'redis:///0'",
        ),
        (
            "redis://user:hunter2@redis.internal:6379/0",
            "store.url: must not contain credentials: give them in username and password",
        ),
    ],
)
def test_bad_urls_are_config_errors(url: str, problem: str) -> None:
    data = {"upstream": {"url": "http://127.0.0.1:8000"}, "store": {"type": "redis", "url": url}}
    with pytest.raises(ConfigError) as error:
        settings_from_data(data)
    assert error.value.problems == [problem]
    assert "hunter2" not in str(error.value)

"""One contract, every store engine: what the rest of the proxy relies on."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest

from proxy.config import SqliteStore as SqliteSettings
from proxy.errors import ConfigError
from proxy.store import Store, StoreError, open_store
from proxy.store.redis import RedisStore
from proxy.store.sqlite import MIGRATIONS, SqliteStore

from .fixtures.redis_server import redis_prefix, redis_settings


@contextmanager
def sqlite_engine(tmp_path: Path) -> Iterator[Callable[[], Store]]:
    yield lambda: SqliteStore(tmp_path / "store.sqlite3")


@contextmanager
def redis_engine(tmp_path: Path) -> Iterator[Callable[[], Store]]:
    with redis_prefix() as prefix:
        yield lambda: RedisStore(redis_settings(key_prefix=prefix))


# Each engine: a context that yields a maker of stores sharing one place, and cleans it up.
ENGINES: dict[str, Callable[[Path], AbstractContextManager[Callable[[], Store]]]] = {
    "sqlite": sqlite_engine,
    "redis": redis_engine,
}


@pytest.fixture(params=sorted(ENGINES))
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Store]]:
    with ENGINES[request.param](tmp_path) as make:
        yield make


def run(make: Callable[[], Store], body: Callable[[Store], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        store = make()
        try:
            return await body(store)
        finally:
            await store.aclose()

    return asyncio.run(main())


def test_put_get_delete(make_store: Callable[[], Store]) -> None:
    async def body(store: Store) -> None:
        assert await store.get("ns", "k") is None
        await store.put("ns", "k", b"v1")
        assert await store.get("ns", "k") == b"v1"
        await store.put("ns", "k", b"v2")
        assert await store.get("ns", "k") == b"v2"
        assert await store.get("other", "k") is None
        assert await store.delete("ns", "k") is True
        assert await store.delete("ns", "k") is False
        assert await store.get("ns", "k") is None

    run(make_store, body)


def test_values_are_bytes_exactly(make_store: Callable[[], Store]) -> None:
    blob = bytes(range(256)) * 64

    async def body(store: Store) -> None:
        await store.put("ns", "bin", blob)
        assert await store.get("ns", "bin") == blob
        await store.put("ns", "empty", b"")
        assert await store.get("ns", "empty") == b""

    run(make_store, body)


def test_expiry_hides_and_purges(make_store: Callable[[], Store]) -> None:
    async def body(store: Store) -> None:
        await store.put("ns", "short", b"x", ttl=0.05)
        await store.put("ns", "long", b"y", ttl=60)
        await store.put("ns", "forever", b"z")
        await asyncio.sleep(0.1)
        assert await store.get("ns", "short") is None
        assert await store.keys("ns") == ["forever", "long"]
        await store.purge_expired()
        assert await store.get("ns", "long") == b"y"

    run(make_store, body)


def test_add_is_insert_if_absent(make_store: Callable[[], Store]) -> None:
    async def body(store: Store) -> None:
        assert await store.add("replay", "id1", b"1", ttl=60) is True
        assert await store.add("replay", "id1", b"2", ttl=60) is False
        assert await store.get("replay", "id1") == b"1"
        await store.put("replay", "old", b"1", ttl=0.05)
        await asyncio.sleep(0.1)
        assert await store.add("replay", "old", b"again", ttl=60) is True  # expired = absent
        assert await store.get("replay", "old") == b"again"

    run(make_store, body)


def test_concurrent_add_has_one_winner(make_store: Callable[[], Store]) -> None:
    async def body(store: Store) -> list[bool]:
        return await asyncio.gather(*(store.add("lock", "user", b"x", ttl=30) for _ in range(50)))

    assert sorted(run(make_store, body)) == [False] * 49 + [True]


def test_pop_is_one_time(make_store: Callable[[], Store]) -> None:
    async def body(store: Store) -> list[bytes | None]:
        await store.put("state", "s1", b"payload", ttl=60)
        return await asyncio.gather(*(store.pop("state", "s1") for _ in range(20)))

    results = run(make_store, body)
    assert results.count(b"payload") == 1
    assert results.count(None) == 19


def test_pop_of_expired_is_none(make_store: Callable[[], Store]) -> None:
    async def body(store: Store) -> bytes | None:
        await store.put("state", "s", b"x", ttl=0.05)
        await asyncio.sleep(0.1)
        return await store.pop("state", "s")

    assert run(make_store, body) is None


def test_replace_if_is_compare_and_set(make_store: Callable[[], Store]) -> None:
    async def body(store: Store) -> None:
        assert await store.replace_if("lock", "u", b"mine", b"new") is False  # absent
        await store.put("lock", "u", b"mine", ttl=30)
        assert await store.replace_if("lock", "u", b"theirs", b"new") is False
        assert await store.get("lock", "u") == b"mine"
        assert await store.replace_if("lock", "u", b"mine", b"new", ttl=30) is True
        assert await store.get("lock", "u") == b"new"
        await store.put("lock", "old", b"v", ttl=0.05)
        await asyncio.sleep(0.1)
        assert await store.replace_if("lock", "old", b"v", b"w") is False  # expired = absent

    run(make_store, body)


def test_concurrent_replace_if_has_one_winner(make_store: Callable[[], Store]) -> None:
    async def body(store: Store) -> list[bool]:
        await store.put("fence", "u", b"v1", ttl=30)
        return await asyncio.gather(
            *(store.replace_if("fence", "u", b"v1", f"v2-{i}".encode(), ttl=30) for i in range(30))
        )

    assert sorted(run(make_store, body)) == [False] * 29 + [True]


def test_delete_if_releases_only_ones_own(make_store: Callable[[], Store]) -> None:
    async def body(store: Store) -> None:
        await store.put("lock", "u", b"holder-a", ttl=30)
        assert await store.delete_if("lock", "u", b"holder-b") is False
        assert await store.get("lock", "u") == b"holder-a"
        assert await store.delete_if("lock", "u", b"holder-a") is True
        assert await store.get("lock", "u") is None
        assert await store.delete_if("lock", "u", b"holder-a") is False

    run(make_store, body)


def test_keys_with_odd_characters(make_store: Callable[[], Store]) -> None:
    odd = ["a:b", "tenant/with/slash", "ünïcode", "with space", "%00", "*", "?"]

    async def body(store: Store) -> list[str]:
        for key in odd:
            await store.put("odd", key, key.encode())
        for key in odd:
            assert await store.get("odd", key) == key.encode()
        return await store.keys("odd")

    assert sorted(run(make_store, body)) == sorted(odd)


def test_ping(make_store: Callable[[], Store]) -> None:
    async def body(store: Store) -> None:
        await store.ping()

    run(make_store, body)


# --- SQLite specifics ---------------------------------------------------------------------


def test_sqlite_created_on_first_use_with_wal_and_schema(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "store.sqlite3"
    run(lambda: SqliteStore(path), lambda s: s.put("ns", "k", b"v"))
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    conn.close()
    # Reopening keeps the data and does not migrate again.
    assert run(lambda: SqliteStore(path), lambda s: s.get("ns", "k")) == b"v"


def test_sqlite_refuses_a_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer than this consent-proxy knows"):
        run(lambda: SqliteStore(path), lambda s: s.ping())


def test_sqlite_garbage_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match=r"store\.sqlite3"):
        run(lambda: SqliteStore(path), lambda s: s.get("ns", "k"))


def test_sqlite_unwritable_location_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises((StoreError, OSError)):
        run(lambda: SqliteStore(blocker / "store.sqlite3"), lambda s: s.ping())


def test_two_stores_on_one_file_share_state(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite3"

    async def body() -> tuple[bool, bool, bytes | None]:
        a, b = SqliteStore(path), SqliteStore(path)
        try:
            first = await a.add("lock", "k", b"a", ttl=30)
            second = await b.add("lock", "k", b"b", ttl=30)
            return first, second, await b.get("lock", "k")
        finally:
            await a.aclose()
            await b.aclose()

    assert asyncio.run(body()) == (True, False, b"a")


def test_open_store_factory(tmp_path: Path) -> None:
    store = open_store(SqliteSettings(path=tmp_path / "x.sqlite3"))
    assert isinstance(store, SqliteStore)
    with pytest.raises(ConfigError, match="unknown store type"):
        open_store(type("Fake", (), {"type": "etcd"})())  # type: ignore[arg-type]

"""The store for several replicas: one Redis (plain, Sentinel-managed, or a Cluster).

Keys are `{key_prefix}{namespace}:{key}` with the namespace percent-encoded, so a `:` in a
namespace or a key can never make two entries collide: namespace "a:b", key "c" is
`a%3Ab:c`; namespace "a", key "b:c" is `a:b:c`. Namespaces the proxy uses are plain words,
so they read as themselves in `redis-cli`. A TTL is a Redis expiry (PX), so Redis forgets
expired entries by itself and `purge_expired` has nothing to do.

Every atomic operation is one command (SET NX PX, GETDEL) or a short Lua script (compare,
then SET or DEL) on a single key, which is also why Redis Cluster needs no hash tags.

The client is built on first use, inside the event loop and process that use it (uvicorn
workers fork or spawn after the settings are read), and rebuilt if either changes. Every
redis-py error becomes a StoreError naming the server and the failure, never a password:
the proxy then forwards without identity, so failures are bounded by `timeout`, and the
client reconnects by itself once Redis is back.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel
from redis.backoff import EqualJitterBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError, RedisClusterException, RedisError, ResponseError

from proxy.config import RedisStore as RedisSettings
from proxy.config import Secret, SentinelSettings
from proxy.ops import metrics
from proxy.store import StoreError

T = TypeVar("T")

# A command that fails on a dropped connection is retried this often, after a short jittered
# pause; a timeout is not retried (it has already cost `timeout`).
RETRIES = 2
BACKOFF_BASE = 0.01
BACKOFF_CAP = 0.1
# A pooled connection idle this long is PINGed before use, so a dead one is replaced first.
HEALTH_CHECK_INTERVAL = 30
SCAN_COUNT = 500
MAX_REASON = 200

# KEYS[1]; ARGV: expected, new value, PX milliseconds or "" (no expiry, as SET without PX).
REPLACE_IF = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[3] == '' then
  redis.call('SET', KEYS[1], ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
return 1
"""
DELETE_IF = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
"""
# GETDEL for servers older than 6.2.
POP = """
local value = redis.call('GET', KEYS[1])
if value then redis.call('DEL', KEYS[1]) end
return value
"""

Client = Redis | RedisCluster


@dataclass(frozen=True)
class _Connection:
    client: Client
    replace_if: AsyncScript
    delete_if: AsyncScript
    pop: AsyncScript
    sentinel: Sentinel | None = None

    @classmethod
    def of(cls, client: Client, sentinel: Sentinel | None = None) -> _Connection:
        script = client.register_script
        return cls(client, script(REPLACE_IF), script(DELETE_IF), script(POP), sentinel)

    async def aclose(self) -> None:
        await self.client.aclose()
        for node in self.sentinel.sentinels if self.sentinel else ():
            await node.aclose()


class RedisStore:
    def __init__(self, settings: RedisSettings) -> None:
        self.settings = settings
        self._prefix = settings.key_prefix
        self._where = _describe(settings)
        secrets = (settings.password, _sentinel_password(settings))
        self._secrets = [text for text in (s.reveal() for s in secrets if s) if text]
        self._conn: _Connection | None = None
        self._owner: tuple[int, asyncio.AbstractEventLoop] | None = None
        self._getdel = True  # until the server says it does not know GETDEL (< 6.2)

    # --- plumbing -------------------------------------------------------------------------

    def _key(self, namespace: str, key: str) -> str:
        return f"{self._head(namespace)}{key}"

    def _head(self, namespace: str) -> str:
        return f"{self._prefix}{quote(namespace, safe='')}:"

    def _connection(self) -> _Connection:
        owner = (os.getpid(), asyncio.get_running_loop())
        if self._conn is None or self._owner != owner:
            # A client made in another process or loop cannot be used (nor closed) here.
            self._conn, self._owner = _connect(self.settings), owner
        return self._conn

    async def _run(self, op: Callable[[_Connection], Awaitable[T]]) -> T:
        try:
            return await op(self._connection())
        # ValueError: settings redis-py refuses when it builds the client (a bad port...).
        except (RedisError, RedisClusterException, OSError, ValueError) as exc:
            metrics.STORE_ERRORS.inc()
            raise StoreError(self._reason(exc)) from None

    def _reason(self, exc: BaseException) -> str:
        detail = str(exc).strip() or "no detail"
        if isinstance(exc, MasterNotFoundError) and self.settings.sentinel is not None:
            # redis-py's text is a repr of every sentinel client: name the sentinels instead.
            sentinels = ", ".join(self.settings.sentinel.sentinels)
            detail = f"no healthy primary known to the sentinels ({sentinels})"
        for secret in self._secrets:
            detail = detail.replace(secret, "***")
        if len(detail) > MAX_REASON:
            detail = detail[:MAX_REASON] + "..."
        return f"Redis store {self._where}: {type(exc).__name__}: {detail}"

    # --- Store ------------------------------------------------------------------------------

    async def get(self, namespace: str, key: str) -> bytes | None:
        name = self._key(namespace, key)
        return await self._run(lambda c: _bytes(c.client.get(name)))

    async def put(self, namespace: str, key: str, value: bytes, ttl: float | None = None) -> None:
        name = self._key(namespace, key)
        await self._run(lambda c: c.client.set(name, value, px=_px(ttl)))

    async def add(self, namespace: str, key: str, value: bytes, ttl: float | None = None) -> bool:
        name = self._key(namespace, key)

        async def op(c: _Connection) -> bool:
            return bool(await c.client.set(name, value, px=_px(ttl), nx=True))

        return await self._run(op)

    async def pop(self, namespace: str, key: str) -> bytes | None:
        name = self._key(namespace, key)

        async def op(c: _Connection) -> bytes | None:
            if self._getdel:
                try:
                    return await _bytes(c.client.getdel(name))
                except ResponseError as exc:
                    if "unknown command" not in str(exc).lower():
                        raise
                    self._getdel = False
            return await _bytes(c.pop(keys=[name]))

        return await self._run(op)

    async def delete(self, namespace: str, key: str) -> bool:
        name = self._key(namespace, key)

        async def op(c: _Connection) -> bool:
            return bool(await c.client.delete(name))

        return await self._run(op)

    async def replace_if(
        self, namespace: str, key: str, expected: bytes, value: bytes, ttl: float | None = None
    ) -> bool:
        name, px = self._key(namespace, key), _px(ttl)

        async def op(c: _Connection) -> bool:
            args = [expected, value, b"" if px is None else px]
            return bool(await c.replace_if(keys=[name], args=args))

        return await self._run(op)

    async def delete_if(self, namespace: str, key: str, expected: bytes) -> bool:
        name = self._key(namespace, key)

        async def op(c: _Connection) -> bool:
            return bool(await c.delete_if(keys=[name], args=[expected]))

        return await self._run(op)

    async def keys(self, namespace: str) -> list[str]:
        head = self._head(namespace).encode()
        pattern = re.sub(rb"([\\*?\[\]])", rb"\\\1", head) + b"*"

        async def op(c: _Connection) -> list[str]:
            found = {
                raw[len(head) :].decode(errors="replace")
                async for raw in c.client.scan_iter(match=pattern, count=SCAN_COUNT)
            }
            return sorted(found)

        return await self._run(op)

    async def purge_expired(self) -> int:
        return 0  # Redis expires keys by itself

    async def ping(self) -> None:
        async def op(c: _Connection) -> None:
            await c.client.ping()

        await self._run(op)

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None or self._owner != (os.getpid(), asyncio.get_running_loop()):
            return
        try:
            await conn.aclose()
        except (RedisError, OSError) as exc:
            raise StoreError(self._reason(exc)) from None


# --- building the client ----------------------------------------------------------------------


def _connect(settings: RedisSettings) -> _Connection:
    options = _options(settings)
    if settings.cluster:
        return _Connection.of(
            RedisCluster.from_url(settings.url, max_connections=settings.max_connections, **options)
        )
    if settings.sentinel is not None:
        return _sentinel_connection(settings, settings.sentinel, options)
    # Blocking: under load a caller waits up to `timeout` for a pooled connection.
    pool = BlockingConnectionPool.from_url(
        settings.url,
        max_connections=settings.max_connections,
        timeout=settings.timeout,
        **options,
    )
    return _Connection.of(Redis.from_pool(pool))


def _options(settings: RedisSettings) -> dict[str, Any]:
    options: dict[str, Any] = {
        "username": settings.username,
        "password": settings.password.reveal() if settings.password else None,
        "socket_timeout": settings.timeout,
        "socket_connect_timeout": settings.timeout,
        "health_check_interval": HEALTH_CHECK_INTERVAL,
        "retry": _retry(),
        "retry_on_error": [ConnectionError],  # redis-py < 6 retries only what is listed here
    }
    if _tls(settings) and settings.ca_file is not None:
        options["ssl_ca_certs"] = str(settings.ca_file)
    return options


def _retry() -> Retry:
    backoff = EqualJitterBackoff(cap=BACKOFF_CAP, base=BACKOFF_BASE)
    return Retry(backoff, RETRIES, supported_errors=(ConnectionError,))


def _sentinel_connection(
    settings: RedisSettings, topology: SentinelSettings, options: dict[str, Any]
) -> _Connection:
    password = topology.password
    tls = {"ssl": True, "ssl_ca_certs": options.get("ssl_ca_certs")} if _tls(settings) else {}
    sentinel = Sentinel(  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
        [_address(entry) for entry in topology.sentinels],
        sentinel_kwargs={
            "password": password.reveal() if password else None,
            "socket_timeout": settings.timeout,
            "socket_connect_timeout": settings.timeout,
            "retry": _retry(),
            **tls,
        },
    )
    client = sentinel.master_for(
        topology.master_name,
        db=parse_url(settings.url).get("db", 0),
        ssl=_tls(settings),
        max_connections=settings.max_connections,
        **options,
    )
    return _Connection.of(client, sentinel)


def _address(entry: str) -> tuple[str, int]:
    host, _, port = entry.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"sentinel {entry!r} must be host:port")
    return host.strip("[]"), int(port)


def _tls(settings: RedisSettings) -> bool:
    return settings.url.startswith("rediss://")


def _sentinel_password(settings: RedisSettings) -> Secret | None:
    return settings.sentinel.password if settings.sentinel else None


def _describe(settings: RedisSettings) -> str:
    if settings.sentinel is not None:
        return f"(sentinel master {settings.sentinel.master_name!r})"
    where = urlsplit(settings.url).netloc  # settings refuse credentials in the URL
    return f"(cluster via {where})" if settings.cluster else where


def _px(ttl: float | None) -> int | None:
    """Seconds as whole milliseconds, at least 1 (Redis refuses PX 0; SQLite would store an
    entry that is already expired, which is as good as absent)."""
    return None if ttl is None else max(1, math.ceil(ttl * 1000))


async def _bytes(reply: Awaitable[Any]) -> bytes | None:
    value = await reply
    return None if value is None else bytes(value)

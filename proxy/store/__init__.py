"""Where the proxy keeps its state: one small protocol, one implementation per engine.

The protocol is a namespaced key-value store with expiry, plus the atomic operations the
proxy's rules need: `add` (insert only if absent: replay protection, locks), `pop` (read
and delete at once: one-time `state` values), and `replace_if` / `delete_if`
(compare-and-set: fencing, releasing only one's own lock). Values are bytes; typed records are
encoded by their owners (session.py, ...). Nothing here knows about HTTP.

Engines: `sqlite` (embedded default, one file, several worker processes on one host) and
`redis` (several replicas). `open_store(settings)` picks one and fails loudly on an
unknown kind. `outage` holds sign-ins in process while the store is down; `vault` seals
what is stored encrypted.
"""

from __future__ import annotations

from typing import Protocol

# The submodule, not the package: while proxy.config loads, its token key check imports the
# vault, and with it this package.
from proxy.config.store import StoreSettings
from proxy.errors import ConfigError, ConsentProxyError


class StoreError(ConsentProxyError):
    """The store cannot be reached or used right now."""

    code = "store_unavailable"
    status = 503
    title = "State store unavailable"


class StoreSchemaError(StoreError):
    """The store's data is of a kind this version cannot use (a newer schema, not a
    database): a configuration error that stops the start-up, unlike a passing fault."""

    code = "store_schema"


class Store(Protocol):
    async def get(self, namespace: str, key: str) -> bytes | None:
        """The value, or None when absent or expired."""

    async def put(self, namespace: str, key: str, value: bytes, ttl: float | None = None) -> None:
        """Insert or replace; `ttl` seconds from now, or no expiry."""

    async def add(self, namespace: str, key: str, value: bytes, ttl: float | None = None) -> bool:
        """Insert only if absent (or expired); True when this call inserted it."""

    async def pop(self, namespace: str, key: str) -> bytes | None:
        """Read and delete in one step: of two concurrent callers, one gets the value."""

    async def delete(self, namespace: str, key: str) -> bool:
        """Remove; True when something was there."""

    async def replace_if(
        self, namespace: str, key: str, expected: bytes, value: bytes, ttl: float | None = None
    ) -> bool:
        """Write `value` only if the live value is `expected` (compare-and-set); True if so.
        What locks and fencing are built on: a writer that lost its lock writes nothing."""

    async def delete_if(self, namespace: str, key: str, expected: bytes) -> bool:
        """Delete only if the live value is `expected` (releasing one's own lock)."""

    async def keys(self, namespace: str) -> list[str]:
        """The live keys of a namespace (for status views; not for the request path)."""

    async def purge_expired(self) -> int:
        """Drop expired entries now; returns how many. Engines also expire on their own."""

    async def ping(self) -> None:
        """Raise StoreError unless the store answers."""

    async def aclose(self) -> None: ...


def open_store(settings: StoreSettings) -> Store:
    """The store the settings name; an unknown kind is a loud error, never a fallback."""
    if settings.type == "sqlite":
        from proxy.config.state import SQLITE_FILE, state_dir_for
        from proxy.store.sqlite import SqliteStore

        path = settings.path or state_dir_for(None, None) / SQLITE_FILE
        return SqliteStore(path, settings.purge_interval)
    if settings.type == "redis":
        from proxy.store.redis import RedisStore

        return RedisStore(settings)
    raise ConfigError([f"store.type: unknown store type {settings.type!r}"])

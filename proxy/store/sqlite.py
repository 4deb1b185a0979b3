"""The embedded default store: one SQLite file, WAL mode, versioned schema.

sqlite3 blocks, so every call runs on one dedicated thread (which also serialises writes
within the process); several worker processes share the file through WAL and a busy
timeout. Expired rows are invisible at once and deleted by `purge_expired`, which the
store also runs by itself every `purge_interval` seconds of use (counted in
`consent_proxy_store_purged_total`).

Disk faults are errors of the moment, not of the configuration: a directory that cannot
be written, a full filesystem. Each call then raises a StoreError that says so, the proxy
keeps forwarding (without identity where it needs the store), and `ping` (readiness)
fails with the reason until a write succeeds again; the file is opened again on the next
call, so the store recovers by itself once the disk is fixed. Only data this version
cannot use (a newer schema, a file that is not a database) is a `StoreSchemaError`, which
stops the start-up.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from proxy.ops import metrics
from proxy.store import StoreError, StoreSchemaError

T = TypeVar("T")

# Each entry moves the schema one version up; never edit one that has shipped.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE kv (
        namespace TEXT NOT NULL,
        key TEXT NOT NULL,
        value BLOB NOT NULL,
        expires REAL,
        PRIMARY KEY (namespace, key)
    ) WITHOUT ROWID;
    CREATE INDEX kv_expires ON kv (expires) WHERE expires IS NOT NULL;
    """,
)
BUSY_TIMEOUT_MS = 5000
PROBE = ("ops", "write-probe")  # the row readiness rewrites while writes are failing


class SqliteStore:
    def __init__(self, path: Path | str, purge_interval: float = 300.0) -> None:
        self.path = Path(path)
        self.purge_interval = purge_interval
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-store")
        self._conn: sqlite3.Connection | None = None
        self._next_purge = 0.0
        self._write_failure: str | None = None  # why the last write failed, until one works

    # --- plumbing -------------------------------------------------------------------------

    async def _run(self, fn: Callable[[sqlite3.Connection], T], write: bool = True) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._call, fn, write)

    def _call(self, fn: Callable[[sqlite3.Connection], T], write: bool) -> T:
        try:
            conn = self._conn or self._open()
            now = time.time()
            if now >= self._next_purge:
                self._next_purge = now + self.purge_interval
                metrics.STORE_PURGED.inc(self._purge(conn))
            result = fn(conn)
        except sqlite3.OperationalError as exc:
            metrics.STORE_ERRORS.inc()
            reason = _explain(exc)
            if write or self._conn is None:
                self._write_failure = reason
            raise StoreError(f"SQLite store {str(self.path)!r}: {reason}") from None
        except sqlite3.Error as exc:
            metrics.STORE_ERRORS.inc()
            raise StoreSchemaError(f"SQLite store {str(self.path)!r}: {exc}") from None
        except OSError as exc:  # the directory could not be created
            metrics.STORE_ERRORS.inc()
            self._write_failure = f"cannot create {str(self.path.parent)!r} ({exc.strerror})"
            raise StoreError(f"SQLite store: {self._write_failure}") from None
        if write:
            self._write_failure = None
        return result

    def _open(self) -> sqlite3.Connection:
        if self.path.parent and not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            self._migrate(conn)
        except BaseException:
            conn.close()  # opened again on the next call: the disk may be fixed by then
            raise
        self._conn = conn
        return conn

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > len(MIGRATIONS):
                raise sqlite3.DatabaseError(
                    f"schema version {version} is newer than this consent-proxy knows "
                    f"({len(MIGRATIONS)}): upgrade consent-proxy"
                )
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in filter(str.strip, script.split(";")):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {number}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    @staticmethod
    def _purge(conn: sqlite3.Connection) -> int:
        cur = conn.execute(
            "DELETE FROM kv WHERE expires IS NOT NULL AND expires <= ?", (time.time(),)
        )
        return cur.rowcount

    # --- Store ------------------------------------------------------------------------------

    async def get(self, namespace: str, key: str) -> bytes | None:
        def op(conn: sqlite3.Connection) -> bytes | None:
            row = conn.execute(
                "SELECT value FROM kv WHERE namespace = ? AND key = ? "
                "AND (expires IS NULL OR expires > ?)",
                (namespace, key, time.time()),
            ).fetchone()
            return bytes(row[0]) if row else None

        return await self._run(op, write=False)

    async def put(self, namespace: str, key: str, value: bytes, ttl: float | None = None) -> None:
        expires = time.time() + ttl if ttl is not None else None

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO kv (namespace, key, value, expires) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value, "
                "expires = excluded.expires",
                (namespace, key, value, expires),
            )

        await self._run(op)

    async def add(self, namespace: str, key: str, value: bytes, ttl: float | None = None) -> bool:
        now = time.time()
        expires = now + ttl if ttl is not None else None

        def op(conn: sqlite3.Connection) -> bool:
            # An expired row counts as absent: replace it in the same statement.
            cur = conn.execute(
                "INSERT INTO kv (namespace, key, value, expires) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value, "
                "expires = excluded.expires WHERE kv.expires IS NOT NULL AND kv.expires <= ?",
                (namespace, key, value, expires, now),
            )
            return cur.rowcount == 1

        return await self._run(op)

    async def pop(self, namespace: str, key: str) -> bytes | None:
        def op(conn: sqlite3.Connection) -> bytes | None:
            row = conn.execute(
                "DELETE FROM kv WHERE namespace = ? AND key = ? RETURNING value, expires",
                (namespace, key),
            ).fetchone()
            if row is None or (row[1] is not None and row[1] <= time.time()):
                return None
            return bytes(row[0])

        return await self._run(op)

    async def delete(self, namespace: str, key: str) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            cur = conn.execute("DELETE FROM kv WHERE namespace = ? AND key = ?", (namespace, key))
            return cur.rowcount == 1

        return await self._run(op)

    async def replace_if(
        self, namespace: str, key: str, expected: bytes, value: bytes, ttl: float | None = None
    ) -> bool:
        now = time.time()
        expires = now + ttl if ttl is not None else None

        def op(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE kv SET value = ?, expires = ? WHERE namespace = ? AND key = ? "
                "AND value = ? AND (expires IS NULL OR expires > ?)",
                (value, expires, namespace, key, expected, now),
            )
            return cur.rowcount == 1

        return await self._run(op)

    async def delete_if(self, namespace: str, key: str, expected: bytes) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "DELETE FROM kv WHERE namespace = ? AND key = ? AND value = ? "
                "AND (expires IS NULL OR expires > ?)",
                (namespace, key, expected, time.time()),
            )
            return cur.rowcount == 1

        return await self._run(op)

    async def keys(self, namespace: str) -> list[str]:
        def op(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute(
                "SELECT key FROM kv WHERE namespace = ? AND (expires IS NULL OR expires > ?) "
                "ORDER BY key",
                (namespace, time.time()),
            ).fetchall()
            return [row[0] for row in rows]

        return await self._run(op, write=False)

    async def purge_expired(self) -> int:
        return await self._run(self._purge)

    async def ping(self) -> None:
        """Raise StoreError unless the store answers and, when the last write failed, a
        write works again (the reason stays in readiness until then)."""
        await self._run(lambda conn: conn.execute("SELECT 1").fetchone(), write=False)
        if self._write_failure is not None:
            try:
                await self.put(*PROBE, b"1", ttl=60)
            except StoreError as exc:
                raise StoreError(f"{exc.description} (writes are failing)") from None

    async def aclose(self) -> None:
        def close(_: sqlite3.Connection) -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        if self._conn is not None:
            await self._run(close, write=False)
        self._executor.shutdown(wait=True)


def _explain(exc: sqlite3.OperationalError) -> str:
    """SQLite's message, with what an operator should check for the usual disk faults."""
    text = str(exc)
    if "unable to open" in text or "readonly" in text:
        return f"{text}: check that the file's directory exists and is writable by this user"
    if "disk is full" in text or "disk I/O" in text:
        return f"{text}: the filesystem is full or failing"
    return text

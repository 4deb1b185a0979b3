"""The store under faults: the SQLite file on a full filesystem or in a directory that
cannot be written (clear errors, the app still reached, readiness says why), the periodic
purge, and the in-process ledger that carries sign-ins through a store outage."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.demo.idp import DemoIdentityProvider
from proxy.ops import metrics
from proxy.store import StoreError
from proxy.store.outage import OutageLedger
from proxy.store.sqlite import SqliteStore

from .servers import ProxyProcess, ThreadServer, eventually, free_port, running, wait_for_port
from .sso_app import SsoApp
from .stored import session_settings
from .test_consent import AUDIENCE, IDP_ENTITY, saml_endpoint

FILLER = "filler"


@contextlib.contextmanager
def mounted(where: Path, *options: str) -> Iterator[Path]:
    """A small tmpfs of the test's own at `where` (root only: skipped otherwise)."""
    where.mkdir(parents=True, exist_ok=True)
    mount = shutil.which("mount")
    if mount is None:
        pytest.skip("no mount command")
    done = subprocess.run(
        [mount, "-t", "tmpfs", "-o", ",".join(options), "tmpfs", str(where)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(disk: Path) -> None:
    """Take every free byte of `disk` with one file (removed again to free the disk)."""
    with contextlib.suppress(OSError), (disk / FILLER).open("wb") as out:
        while True:
            out.write(b"\0" * 4096)
            out.flush()


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


# --- SQLite on a full disk, in the store itself ------------------------------------------


def test_full_disk_is_a_clear_error_and_readiness_fails_until_writes_work(tmp_path: Path) -> None:
    with mounted(tmp_path / "disk", "size=1m") as disk:

        async def scenario() -> None:
            store = SqliteStore(disk / "store.sqlite3")
            try:
                await store.put("session", "before", b"x")
                fill(disk)
                with pytest.raises(StoreError, match="full"):
                    for n in range(200):
                        await store.put("session", f"s{n}", b"y" * 8192)
                assert await store.get("session", "before") == b"x"  # reads still work
                with pytest.raises(StoreError, match="writes are failing"):
                    await store.ping()
                (disk / FILLER).unlink()
                await store.ping()  # the probe write works again: ready
                await store.put("session", "after", b"z")
            finally:
                await store.aclose()

        run(scenario())


def test_unwritable_directory_is_a_clear_error_then_recovers(tmp_path: Path) -> None:
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the store's directory should be")

    async def scenario() -> None:
        store = SqliteStore(blocked / "store.sqlite3")
        try:
            with pytest.raises(StoreError, match=r"unable to open.*writable"):
                await store.ping()
            blocked.unlink()
            blocked.mkdir()
            await store.ping()  # opened again on the next call: recovered by itself
            await store.put("session", "k", b"v")
        finally:
            await store.aclose()

    run(scenario())


# --- the periodic purge ------------------------------------------------------------------


def test_periodic_purge_runs_every_purge_interval(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"

    def rows() -> int:
        with contextlib.closing(sqlite3.connect(path)) as conn:
            return int(conn.execute("SELECT count(*) FROM kv").fetchone()[0])

    async def scenario() -> None:
        store = SqliteStore(path, purge_interval=0.2)
        before = metrics.STORE_PURGED._value.get()
        try:
            for n in range(5):
                await store.put("consent-state", f"k{n}", b"v", ttl=0.05)
            await store.put("session", "kept", b"v")
            assert rows() == 6  # expired rows are invisible, but still there
            await asyncio.sleep(0.3)
            assert await store.get("session", "kept") == b"v"  # any use runs the purge
            assert rows() == 1
            assert metrics.STORE_PURGED._value.get() - before == 5
        finally:
            await store.aclose()

    run(scenario())


# --- the proxy on a broken disk ----------------------------------------------------------


@contextlib.contextmanager
def proxy_on(store_path: Path, work: Path) -> Iterator[tuple[ProxyProcess, str, str, Any]]:
    app = SsoApp()
    ops_port = free_port()
    with running(ThreadServer(app.app())) as upstream:
        proxy = ProxyProcess({}, work)
        acs = f"{proxy.url}/saml/acs"
        idp = DemoIdentityProvider(IDP_ENTITY, allowed_acs_urls=[acs])
        config = {
            "upstream": {"url": upstream.url},
            "session": session_settings(),
            "store": {"path": str(store_path)},
            "ops": {"port": ops_port},
            "sso": {"endpoints": [saml_endpoint(idp, work)]},
        }
        proxy.config_path.write_text(json.dumps(config))
        with running(proxy):
            wait_for_port(ops_port)
            yield proxy, f"http://127.0.0.1:{ops_port}", acs, idp


def readiness(ops: str) -> tuple[int, dict[str, Any]]:
    response = httpx.get(f"{ops}/readyz", timeout=10)
    return response.status_code, response.json()


def test_proxy_on_a_full_disk_serves_and_says_why(tmp_path: Path) -> None:
    with mounted(tmp_path / "disk", "size=1m") as disk:
        with proxy_on(disk / "store.sqlite3", tmp_path) as (proxy, ops, acs, idp):
            assert readiness(ops)[0] == 200
            fill(disk)
            saml = idp.response("alice", audience=AUDIENCE, acs_url=acs)
            signed_in = httpx.post(acs, data={"SAMLResponse": saml})
            assert signed_in.status_code == 303  # the app is reached
            cookies = dict(signed_in.cookies)
            assert "consent_proxy" in cookies  # and the sign-in held in process
            echo = httpx.get(f"{proxy.url}/echo", cookies=cookies, timeout=10)
            assert echo.json()["headers"]["x-consent-proxy-user"] == "alice@contoso.example"
            status, body = readiness(ops)
            assert status == 503 and "full" in body["checks"]["store"]
            (disk / FILLER).unlink()
            assert eventually(lambda: readiness(ops)[0] == 200)

            def written() -> bool:  # the held session, once the disk has room again
                echo = httpx.get(f"{proxy.url}/echo", cookies=cookies, timeout=10)
                assert echo.json()["headers"]["x-consent-proxy-user"] == "alice@contoso.example"
                return stored_sessions(disk / "store.sqlite3") == 1

            assert eventually(written, interval=0.3)


def stored_sessions(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        query = "SELECT count(*) FROM kv WHERE namespace = 'session'"
        return int(conn.execute(query).fetchone()[0])


def test_proxy_with_a_read_only_store_directory_starts_serves_and_says_why(tmp_path: Path) -> None:
    with mounted(tmp_path / "ro", "size=1m", "ro") as read_only:
        with proxy_on(read_only / "store.sqlite3", tmp_path) as (proxy, ops, _, _):
            assert httpx.get(f"{proxy.url}/echo", timeout=10).status_code == 200
            status, body = readiness(ops)
            assert status == 503
            assert "unable to open" in body["checks"]["store"]
            assert "writable" in body["checks"]["store"]
            assert "store unavailable at start-up" in proxy.logs()


# --- the outage ledger -------------------------------------------------------------------


class FlakyStore(SqliteStore):
    """A store that is down while `down` is set."""

    down = True

    async def _guard(self) -> None:
        if self.down:
            raise StoreError("down")

    async def add(self, namespace: str, key: str, value: bytes, ttl: float | None = None) -> bool:
        await self._guard()
        return await super().add(namespace, key, value, ttl)

    async def put(self, namespace: str, key: str, value: bytes, ttl: float | None = None) -> None:
        await self._guard()
        await super().put(namespace, key, value, ttl)


def test_ledger_accepts_once_and_refuses_when_full() -> None:
    ledger = OutageLedger(capacity=2)
    assert ledger.accept("a", "sso-replay", "a", 60)
    assert not ledger.accept("a", "sso-replay", "a", 60)  # a replay, outage or not
    assert ledger.accept("b", "sso-replay", "b", 60)
    assert not ledger.accept("c", "sso-replay", "c", 60)  # full: refused, never waved through
    assert ledger.accept("x" * 100_000, "sso-replay", "\0\n;'", 60) is False  # still full


def test_ledger_settles_and_drops_a_session_replayed_elsewhere(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = FlakyStore(tmp_path / "store.sqlite3")
        ledger = OutageLedger()
        try:
            for rid in ("mine", "theirs"):
                assert ledger.accept(rid, "sso-replay", rid, 60)
                assert ledger.hold("session", f"s-{rid}", rid.encode(), 60, rid)
            assert ledger.held("session", "s-mine") == b"mine"
            assert ledger.held("other", "s-mine") is None
            with pytest.raises(StoreError):
                await ledger.settle(store)
            assert ledger.pending  # nothing lost while still down
            store.down = False
            await store.add("sso-replay", "theirs", b"1", ttl=60)  # another replica took it
            assert await ledger.settle(store) == {"s-theirs"}
            assert not ledger.pending
            assert await store.get("session", "s-mine") == b"mine"
            assert await store.get("session", "s-theirs") is None
            assert not await store.add("sso-replay", "mine", b"1", ttl=60)  # spent for good
        finally:
            await store.aclose()

    run(scenario())

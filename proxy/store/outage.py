"""Sign-ins while the store cannot be reached: fail open, never accept a replay.

A sign-in needs two writes: its replay key (`add`, so that an assertion is used once) and
its session record. When the store is down, both go to this process's ledger instead:
- the replay key is checked and kept in an in-process guard (bounded: when it is full,
  further sign-ins are refused, never waved through), so that within this process an
  assertion is accepted once, outage or not;
- the session record is held in memory and served from here while the store is down.
Requests call `settle_soon` while anything is held: at most once a second, in the
background (a request never waits for a store that may still be down), `settle` writes
what was held: each
replay key with `add` and, only when that succeeds, the session bound to it. A replay key
some other replica accepted meanwhile (an assertion replayed at another replica during
the outage) is found there, and the session that carried it here is dropped. The window
that remains is said in the README: during the outage itself, replicas cannot see each
other's guards.

One ledger per store object (`ledger_for`), so the sign-in watcher and the session
middleware share it without being wired together.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass

from proxy.ops import metrics
from proxy.store import Store, StoreError

__all__ = ["MAX_HELD", "OutageLedger", "ledger_for"]

log = logging.getLogger("consent_proxy.store")

MAX_HELD = 10_000  # replay keys (and sessions) one process holds through an outage
SETTLE_EVERY = 1.0  # seconds between attempts to write what is held


@dataclass(slots=True)
class _Replay:
    namespace: str
    key: str
    expires: float


@dataclass(slots=True)
class _Held:
    namespace: str
    value: bytes
    expires: float
    replay: str | None


class OutageLedger:
    def __init__(self, capacity: int = MAX_HELD) -> None:
        self.capacity = capacity
        self._replays: dict[str, _Replay] = {}  # replay id -> where it goes in the store
        self._held: dict[str, _Held] = {}  # record key (a session id) -> the record
        self._settling = asyncio.Lock()
        self._task: asyncio.Future[None] | None = None
        self._next_try = 0.0

    @property
    def pending(self) -> bool:
        """Whether anything waits to be written once the store is back."""
        return bool(self._replays or self._held)

    def accept(self, replay_id: str, namespace: str, key: str, ttl: float) -> bool:
        """The store's `add`, in process: True the first time `replay_id` is seen here."""
        now = time.time()
        self._expire(now)
        if replay_id in self._replays:
            return False
        if len(self._replays) >= self.capacity:
            log.error("store down and %d sign-ins held: refusing more", len(self._replays))
            metrics.STORE_OUTAGE_SIGN_INS.labels("refused").inc()
            return False
        self._replays[replay_id] = _Replay(namespace, key, now + ttl)
        metrics.STORE_OUTAGE_SIGN_INS.labels("held").inc()
        return True

    def hold(
        self, namespace: str, key: str, value: bytes, ttl: float, replay_id: str | None
    ) -> bool:
        """Keep a record the store could not take; False when the ledger is full."""
        self._expire(time.time())
        if len(self._held) >= self.capacity:
            return False
        self._held[key] = _Held(namespace, value, time.time() + ttl, replay_id)
        return True

    def held(self, namespace: str, key: str) -> bytes | None:
        found = self._held.get(key)
        if found is None or found.namespace != namespace or found.expires <= time.time():
            return None
        return found.value

    def drop(self, key: str) -> None:
        self._held.pop(key, None)

    def settle_soon(self, store: Store, dropped: Callable[[str], None]) -> None:
        """Try `settle` in the background, unless tried within the last SETTLE_EVERY s;
        `dropped` is told each held record found to be a replay."""
        now = time.monotonic()
        if now < self._next_try or (self._task is not None and not self._task.done()):
            return
        self._next_try = now + SETTLE_EVERY
        self._task = asyncio.ensure_future(self._settle_quietly(store, dropped))

    async def _settle_quietly(self, store: Store, dropped: Callable[[str], None]) -> None:
        try:
            replays = await self.settle(store)
        except StoreError as exc:
            log.debug("store still unavailable, sign-ins stay held: %s", exc.description)
            return
        for key in replays:
            dropped(key)

    async def settle(self, store: Store) -> set[str]:
        """Write what was held; the keys of held records dropped as replays. Raises
        StoreError when the store is still down (what is left stays held)."""
        if self._settling.locked():
            return set()
        async with self._settling:
            now = time.time()
            self._expire(now)
            dropped: set[str] = set()
            for key, record in list(self._held.items()):
                replay = self._replays.get(record.replay) if record.replay else None
                if replay is not None and not await self._write_replay(store, replay, now):
                    log.warning("a sign-in held through the outage was a replay: session dropped")
                    metrics.STORE_OUTAGE_SIGN_INS.labels("replayed").inc()
                    dropped.add(key)
                else:
                    await store.put(record.namespace, key, record.value, ttl=record.expires - now)
                    metrics.STORE_OUTAGE_SIGN_INS.labels("settled").inc()
                self._held.pop(key, None)
                if record.replay:
                    self._replays.pop(record.replay, None)
            for replay_id, replay in list(self._replays.items()):
                await self._write_replay(store, replay, now)
                self._replays.pop(replay_id, None)
            log.info("store back: sign-ins held through the outage written")
            return dropped

    @staticmethod
    async def _write_replay(store: Store, replay: _Replay, now: float) -> bool:
        return await store.add(replay.namespace, replay.key, b"1", ttl=replay.expires - now)

    def _expire(self, now: float) -> None:
        for replay_id in [r for r, v in self._replays.items() if v.expires <= now]:
            del self._replays[replay_id]
        for key in [k for k, v in self._held.items() if v.expires <= now]:
            del self._held[key]


_LEDGERS: weakref.WeakKeyDictionary[object, OutageLedger] = weakref.WeakKeyDictionary()


def ledger_for(store: Store) -> OutageLedger:
    """The ledger of this store object (created on first use)."""
    ledger = _LEDGERS.get(store)
    if ledger is None:
        ledger = _LEDGERS[store] = OutageLedger()
    return ledger

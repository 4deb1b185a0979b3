"""The thread lanes msal's blocking calls run in, so that one kind of call never queues
behind another.

Refreshes run in one pool; code redemptions (a person waiting on the callback page) in a
lane of their own with a bounded queue and a wait limit: a redemption that cannot start
within `wait` seconds, or finds `queue` others already waiting, is refused at once with a
transient `busy` error instead of hanging the page behind everyone else's token calls.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from proxy.microsoft.errors import ErrorKind, MicrosoftError

__all__ = ["BUSY", "BoundedLane"]

log = logging.getLogger(__name__)

R = TypeVar("R")
BUSY = "busy"  # the error a refused redemption carries: Microsoft is too slow right now


class BoundedLane:
    """`threads` workers; at most `queue` callers waiting, each for at most `wait` seconds."""

    def __init__(self, name: str, threads: int, queue: int, wait: float) -> None:
        self.name = name
        self.threads = threads
        self.queue = queue
        self.wait = wait
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=name)
        self._slots: asyncio.Semaphore | None = None
        self._waiting = 0

    async def run(self, work: Callable[[], R]) -> R:
        slots = self._slots = self._slots or asyncio.Semaphore(self.threads)
        if slots.locked() and self._waiting >= self.queue:
            self._refuse(f"{self._waiting} already waiting")
        self._waiting += 1
        try:
            await asyncio.wait_for(slots.acquire(), self.wait)
        except TimeoutError:
            self._refuse(f"no worker free within {self.wait:g} s")
        finally:
            self._waiting -= 1
        try:
            # A worker is free (the semaphore counts them): this starts at once.
            return await asyncio.get_running_loop().run_in_executor(self._executor, work)
        finally:
            slots.release()

    def _refuse(self, why: str) -> None:
        log.warning("%s refused: Microsoft is slow (%s)", self.name, why)
        raise MicrosoftError.of(ErrorKind.TRANSIENT, BUSY)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

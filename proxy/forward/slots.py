"""The upstream pool's connection slots: a counting semaphore for the path every request
takes, where asyncio.Semaphore costs a coroutine even when a slot is free."""

from __future__ import annotations

import asyncio
import collections
import contextlib

from proxy.errors import UpstreamTimeout


class Slots:
    """A counting semaphore for the pool's connections, cheaper than asyncio.Semaphore on
    the path every request takes: a free slot is a counter decrement, no coroutine."""

    def __init__(self, size: int) -> None:
        self.free = size
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def take(self) -> bool:
        if self.free and not self._waiters:
            self.free -= 1
            return True
        return False

    async def wait(self, timeout: float) -> None:
        """Wait for a slot, handed over by `give` (first come, first served)."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                self.give()  # handed a slot just as it gave up: pass it on
            else:
                with contextlib.suppress(ValueError):  # give() may have dropped it already
                    self._waiters.remove(waiter)
            if isinstance(exc, TimeoutError):
                raise UpstreamTimeout("all upstream connections are busy") from None
            raise

    def give(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.free += 1

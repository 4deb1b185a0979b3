"""The policy in force, reloaded from its file while the proxy runs.

An edit takes effect on its own (the file is checked every few seconds) or at once on
SIGHUP. A valid new policy replaces the old one between two requests — nothing is
dropped; an invalid one is refused with the path of each error, the old policy stays in
force, and a log line says so. A bad edit never takes the proxy down. Each reload's
outcome, "ok" or "failed", goes to the `on_reload` callback (the proxy counts it in a
metric; this package knows nothing of metrics).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Iterable
from pathlib import Path

from proxy.errors import ConfigError
from proxy.policy.model import Policy, load_checked_policy

log = logging.getLogger("consent_proxy.policy")

CHECK_EVERY = 2.0


class PolicyFile:
    def __init__(
        self, path: Path, app_names: Iterable[str], *, on_reload: Callable[[str], None]
    ) -> None:
        self.path = path
        self.app_names = tuple(app_names)
        self.on_reload = on_reload
        self.current: Policy = load_checked_policy(path, self.app_names)  # start-up: loud
        self._stamp = self._read_stamp()
        self._task: asyncio.Task[None] | None = None

    def __call__(self) -> Policy:
        return self.current

    def _read_stamp(self) -> tuple[float, int] | None:
        try:
            stat = self.path.stat()
        except OSError:
            return None
        return stat.st_mtime, stat.st_size

    def reload(self, reason: str = "changed") -> bool:
        """Load the file again; True when a new policy is in force."""
        self._stamp = self._read_stamp()
        try:
            policy = load_checked_policy(self.path, self.app_names)
        except ConfigError as exc:
            self.on_reload("failed")
            log.error(
                "policy %s (%s) refused, the previous one stays in force: %s",
                self.path,
                reason,
                "; ".join(exc.problems),
            )
            return False
        self.current = policy
        self.on_reload("ok")
        log.info("policy %s reloaded (%s)", self.path, reason)
        return True

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(CHECK_EVERY)
            if self._read_stamp() != self._stamp:
                self.reload("file changed")

    def start(self) -> None:
        """Watch the file, and reload on SIGHUP (called in the serving event loop)."""
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._watch())
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGHUP, self.reload, "SIGHUP")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)

"""The policy in force, reloaded from its file while the proxy runs.

An edit takes effect on its own (the file is checked every few seconds) or at once on
SIGHUP. A valid new policy replaces the old one between two requests — nothing is
dropped; an invalid one is refused with the path of each error, the old policy stays in
force, and a log line says so. A bad edit never takes the proxy down, nor holds it up:
the file is read and checked in a worker thread, within the YAML reader's size and alias
limits, and a reload that takes longer than RELOAD_SECONDS is refused as well. Each
reload's outcome, "ok" or "failed", goes to the `on_reload` callback (the proxy counts
it in a metric; this package knows nothing of metrics).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from proxy.errors import ConfigError
from proxy.policy.findings import load_checked_policy
from proxy.policy.model import Policy

log = logging.getLogger("consent_proxy.policy")

CHECK_EVERY = 2.0
# Far above what a valid policy of the largest readable size takes on a busy machine.
RELOAD_SECONDS = 30.0


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
        self._signalled: set[asyncio.Task[bool]] = set()
        self._loading: concurrent.futures.Future[Policy] | None = None

    def __call__(self) -> Policy:
        return self.current

    def _read_stamp(self) -> tuple[float, int] | None:
        try:
            stat = self.path.stat()
        except OSError:
            return None
        return stat.st_mtime, stat.st_size

    async def reload(self, reason: str = "changed") -> bool:
        """Load the file again, off the event loop; True when a new policy is in force."""
        if self._loading is not None and not self._loading.done():
            log.warning("policy %s (%s): the previous reload is still running", self.path, reason)
            return False
        self._stamp = self._read_stamp()
        self._loading = self._load_in_thread()
        try:
            policy = await asyncio.wait_for(asyncio.wrap_future(self._loading), RELOAD_SECONDS)
        except ConfigError as exc:
            return self._refused(reason, "; ".join(exc.problems))
        except TimeoutError:
            return self._refused(reason, f"reading it took longer than {RELOAD_SECONDS:g} s")
        except Exception as exc:  # whatever the file holds, the watcher carries on
            return self._refused(reason, f"unexpected {type(exc).__name__}: {exc}")
        self.current = policy
        self.on_reload("ok")
        log.info("policy %s reloaded (%s)", self.path, reason)
        return True

    def _load_in_thread(self) -> concurrent.futures.Future[Policy]:
        # A daemon thread rather than an executor: one that overran its time is left to
        # finish on its own, and cannot hold up the process's exit.
        future: concurrent.futures.Future[Policy] = concurrent.futures.Future()

        def load() -> None:
            try:
                future.set_result(load_checked_policy(self.path, self.app_names))
            except BaseException as exc:  # handed to the waiting reload
                future.set_exception(exc)

        future.set_running_or_notify_cancel()  # a reload that gives up cannot cancel it
        threading.Thread(target=load, name="policy-reload", daemon=True).start()
        return future

    def _refused(self, reason: str, why: str) -> bool:
        self.on_reload("failed")
        log.error(
            "policy %s (%s) refused, the previous one stays in force: %s", self.path, reason, why
        )
        return False

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(CHECK_EVERY)
            if self._read_stamp() != self._stamp:
                await self.reload("file changed")

    def _on_sighup(self) -> None:
        task = asyncio.get_running_loop().create_task(self.reload("SIGHUP"))
        self._signalled.add(task)
        task.add_done_callback(self._signalled.discard)

    def start(self) -> None:
        """Watch the file, and reload on SIGHUP (called in the serving event loop)."""
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._watch())
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGHUP, self._on_sighup)

    async def stop(self) -> None:
        for task in [*([self._task] if self._task is not None else []), *self._signalled]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)

"""Policy hot reload on a running proxy: SIGHUP and file watch; a bad edit is refused and
the old policy stays in force; no request is dropped meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from proxy.policy import file as policy_file
from proxy.policy.file import PolicyFile

from .servers import free_port, wait_for_port
from .test_consent import ALICE, POLICY, Person, consent_env, user_id
from .test_yaml_reader import ALIASES_REFUSED, alias_bomb


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[Person, str]]:
    port = free_port()
    with consent_env(tmp_path, ops={"port": port}) as env:
        wait_for_port(port)
        person = Person(env)
        yield person, f"http://127.0.0.1:{port}"
        person.close()


def eventually(check: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def prompts(person: Person) -> bool:
    fresh = Person(person.env)
    try:
        return fresh.at_microsoft(fresh.sign_in(user_id(ALICE, "mode-never")))
    finally:
        fresh.close()


def reloads(ops: str, outcome: str) -> float:
    for line in httpx.get(f"{ops}/metrics").text.splitlines():
        if line.startswith(f'consent_proxy_policy_reloads_total{{outcome="{outcome}"}}'):
            return float(line.split()[-1])
    return 0.0


@contextlib.contextmanager
def traffic(url: str) -> Iterator[list[int]]:
    """Requests one after another while the block runs: the status of each, 0 for one not
    answered within the client's timeout (far above what a request takes here)."""
    answered: list[int] = []
    stop = threading.Event()

    def run() -> None:
        with httpx.Client(timeout=5) as client:
            while not stop.is_set():
                try:
                    answered.append(client.get(url).status_code)
                except httpx.HTTPError:
                    answered.append(0)

    worker = threading.Thread(target=run)
    worker.start()
    try:
        yield answered
    finally:
        stop.set()
        worker.join()


def test_sighup_applies_a_valid_policy_without_dropping_requests(
    running: tuple[Person, str],
) -> None:
    person, ops = running
    env = person.env
    policy = env.proxy.config_path.parent / "policy.yaml"
    assert not prompts(person)  # defaults: never
    with traffic(f"{env.proxy.url}/during-reload") as answered:
        policy.write_text(POLICY.replace("  prompt: never\n", "  prompt: every_sign_in\n", 1))
        assert env.proxy.proc is not None
        env.proxy.proc.send_signal(signal.SIGHUP)
        eventually(lambda: reloads(ops, "ok") >= 1)
    assert [status for status in answered if status != 200] == []
    assert prompts(person)  # the new defaults are in force
    assert "reloaded (SIGHUP)" in env.proxy.logs()


def test_a_broken_policy_is_refused_and_the_old_one_stays(running: tuple[Person, str]) -> None:
    person, ops = running
    env = person.env
    policy = env.proxy.config_path.parent / "policy.yaml"
    policy.write_text(POLICY.replace("prompt: first_sign_in", "prompt: sometimes", 1))
    assert env.proxy.proc is not None
    env.proxy.proc.send_signal(signal.SIGHUP)
    eventually(lambda: reloads(ops, "failed") >= 1)
    logs = env.proxy.logs()
    assert "refused, the previous one stays in force" in logs
    assert "rules[1].prompt" in logs
    assert env.proxy.proc.poll() is None  # still serving
    assert not prompts(person)  # still the old policy
    assert httpx.get(f"{ops}/readyz").status_code == 200


def test_an_edited_file_is_picked_up_without_a_signal(running: tuple[Person, str]) -> None:
    person, ops = running
    policy = person.env.proxy.config_path.parent / "policy.yaml"
    policy.write_text(POLICY.replace("  prompt: never\n", "  prompt: every_sign_in\n", 1))
    eventually(lambda: reloads(ops, "ok") >= 1)
    assert prompts(person)


def test_an_alias_bomb_is_refused_while_requests_keep_being_answered(
    running: tuple[Person, str],
) -> None:
    person, ops = running
    env = person.env
    policy = env.proxy.config_path.parent / "policy.yaml"
    logged_before = env.proxy.log_path.stat().st_size
    with traffic(f"{env.proxy.url}/during-reload") as answered:
        # ~400 bytes that stand for 9**7 values, where an error message would repeat them.
        bomb = alias_bomb(7) + POLICY.replace("  prompt: never\n", "  prompt: *a6\n", 1)
        policy.write_text(bomb)
        assert env.proxy.proc is not None
        env.proxy.proc.send_signal(signal.SIGHUP)
        eventually(lambda: reloads(ops, "failed") >= 1)
        settled = len(answered)
        eventually(lambda: len(answered) > settled + 5)  # still serving after the refusal
    assert set(answered) == {200}
    logs = env.proxy.logs()
    assert f"refused, the previous one stays in force: line 5, column 10: {ALIASES_REFUSED}" in logs
    assert env.proxy.log_path.stat().st_size - logged_before < 64 * 1024  # one line, not 9**7
    assert not prompts(person)  # the old policy is in force
    assert httpx.get(f"{ops}/readyz").status_code == 200


# --- the reload itself: off the event loop, one at a time, within its time ----------------


def blocked_policy_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[PolicyFile, list[str], threading.Event]:
    """A policy file whose reloads wait in their thread until the event is set."""
    path = tmp_path / "policy.yaml"
    path.write_text("version: 1\n")
    outcomes: list[str] = []
    file = PolicyFile(path, [], on_reload=outcomes.append)
    release = threading.Event()
    load = policy_file.load_checked_policy

    def held(*args: object) -> object:
        release.wait(30)
        return load(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(policy_file, "load_checked_policy", held)
    return file, outcomes, release


def test_a_reload_leaves_the_event_loop_free(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    file, outcomes, release = blocked_policy_file(tmp_path, monkeypatch)

    async def scenario() -> None:
        first = asyncio.create_task(file.reload("edit"))
        for _ in range(20):
            await asyncio.sleep(0)  # the loop runs other work while the file is read
        assert not first.done()
        assert await file.reload("another edit") is False  # one reload at a time
        release.set()
        assert await first is True

    asyncio.run(scenario())
    assert outcomes == ["ok"]


def test_a_reload_that_overruns_its_time_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    file, outcomes, release = blocked_policy_file(tmp_path, monkeypatch)
    monkeypatch.setattr(policy_file, "RELOAD_SECONDS", 0.05)
    old = file.current
    try:
        assert asyncio.run(file.reload("edit")) is False
    finally:
        release.set()
    assert outcomes == ["failed"]
    assert file.current is old
    assert "refused, the previous one stays in force: reading it took longer than 0.05 s" in (
        caplog.text
    )

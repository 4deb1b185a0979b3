"""Policy hot reload on a running proxy: SIGHUP and file watch; a bad edit is refused and
the old policy stays in force; no request is dropped meanwhile."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .servers import free_port, wait_for_port
from .test_consent import ALICE, POLICY, Person, consent_env, user_id


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


def test_sighup_applies_a_valid_policy_without_dropping_requests(
    running: tuple[Person, str],
) -> None:
    person, ops = running
    env = person.env
    policy = env.proxy.config_path.parent / "policy.yaml"
    assert not prompts(person)  # defaults: never
    failures: list[int] = []
    stop = threading.Event()

    def traffic() -> None:
        with httpx.Client() as client:
            while not stop.is_set():
                status = client.get(f"{env.proxy.url}/during-reload").status_code
                if status != 200:
                    failures.append(status)

    worker = threading.Thread(target=traffic)
    worker.start()
    try:
        policy.write_text(POLICY.replace("  prompt: never\n", "  prompt: every_sign_in\n", 1))
        assert env.proxy.proc is not None
        env.proxy.proc.send_signal(signal.SIGHUP)
        eventually(lambda: reloads(ops, "ok") >= 1)
    finally:
        stop.set()
        worker.join()
    assert failures == []
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

"""examples/compose.yaml: its wiring checked, and its services run as processes here.

The compose file itself is not run by these tests: no image registry answers here for its
`redis` image (the consent-proxy image is built and run by tests/test_container.py). What
runs instead is what each service runs: the demo side (examples/compose_demo.py) and
`consent-proxy run` with the config the demo side writes, against the Redis on
127.0.0.1:6379 under a key prefix of its own; alice then connects through them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from tests.servers import eventually

from .servers import ProxyProcess, free_port, running
from .test_demo import browser, microsoft, sign_in

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "examples" / "compose.yaml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]


def option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_the_proxy_and_the_demo_side_share_one_image_and_the_state_volume() -> None:
    demo, proxy = SERVICES["demo"], SERVICES["proxy"]
    assert demo["image"] == proxy["image"] == "consent-proxy"
    assert (
        demo["build"]
        == proxy["build"]
        == {
            "context": "..",
            "args": {
                "BASE": "${BASE:-python:3.11-slim-bookworm}",
                "PIP_NO_INDEX": "${PIP_NO_INDEX:-0}",
            },
        }
    )
    assert "state:/var/lib/consent-proxy" in demo["volumes"]
    assert "state:/var/lib/consent-proxy" in proxy["volumes"]
    script = demo["entrypoint"][-1]
    assert f"./compose_demo.py:{script}:ro" in demo["volumes"]


def test_the_proxy_reads_the_config_the_demo_side_writes_once_ready() -> None:
    demo, proxy = SERVICES["demo"], SERVICES["proxy"]
    config = demo["environment"]["DEMO_FOLDER"] + "/config.yaml"
    assert proxy["environment"]["CONSENT_PROXY_CONFIG"] == config
    assert demo["healthcheck"]["test"] == ["CMD", "test", "-s", config]
    assert proxy["depends_on"]["demo"] == {"condition": "service_healthy"}


def test_ports_agree_between_services() -> None:
    demo, proxy, store = SERVICES["demo"], SERVICES["proxy"], SERVICES["redis"]
    assert option(proxy["command"], "--port") == demo["environment"]["DEMO_PROXY_PORT"]
    port = option(store["command"], "--port")
    assert demo["environment"]["DEMO_REDIS_URL"] == f"redis://127.0.0.1:{port}/0"
    assert {s["network_mode"] for s in SERVICES.values()} == {"host"}


@pytest.fixture(scope="module")
def demo_side(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, int]]:
    folder, port = tmp_path_factory.mktemp("compose-demo"), free_port()
    env = {
        **os.environ,
        "DEMO_FOLDER": str(folder),
        "DEMO_PROXY_PORT": str(port),
        "DEMO_REDIS_URL": "redis://127.0.0.1:6379/0",
    }
    with (folder / "demo.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "examples" / "compose_demo.py")],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        ready = eventually(
            lambda: (folder / "config.yaml").exists() or proc.poll() is not None, timeout=30
        )
        assert ready and proc.poll() is None, (folder / "demo.log").read_text()
        yield folder, port
    finally:
        proc.terminate()
        proc.wait(15)


def test_alice_connects_through_the_proxy_with_redis(demo_side: tuple[Path, int]) -> None:
    folder, port = demo_side
    config = yaml.safe_load((folder / "config.yaml").read_text())
    assert config["store"] == {"type": "redis", "url": "redis://127.0.0.1:6379/0"}
    prefix = f"test-compose-{uuid.uuid4().hex[:8]}:"
    config["store"]["key_prefix"] = prefix
    config["ops"] = {"port": 0}  # many proxies run at once here
    raw = redis.Redis(host="127.0.0.1", port=6379)
    try:
        with running(ProxyProcess(config, folder, port=port)) as proxy, browser(folder) as http:
            signed_in = sign_in(http, proxy.url, "alice@contoso.example")
            home = microsoft(http, signed_in, "accept")
            assert '<strong id="integration">connected</strong>' in home.text
        assert list(raw.scan_iter(match=f"{prefix}*"))  # the state went to Redis
    finally:
        for key in raw.scan_iter(match=f"{prefix}*"):
            raw.delete(key)
        raw.close()

"""The image, really built and run, when a container engine answers here (`.ci/run` starts
Debian's Docker engine when it can); skipped with the reason otherwise.

What makes it fit in CI without an image registry or a package index inside containers:
- the base is made once from Debian's packages (docker/debian-base.sh) and kept in the
  engine's own image store, under a tag naming the script's hash (a changed script makes a
  new base);
- the wheels are made on the host (docker/wheelhouse.sh, kept in docker/wheels) and the
  image installs them with PIP_NO_INDEX=1;
- the engine's layer cache rebuilds only what changed (usually just the code layer).

The container runs with a config, a named volume for the state directory and the host's
network, so it reaches the test upstream on 127.0.0.1; the ops port is not the default one,
so "healthy" proves that the HEALTHCHECK follows the configured port.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

from tests.fixtures.forwarding import echo, received

from .servers import ThreadServer, free_port
from .test_dockerfile import lock_pins, pinned_version

ROOT = Path(__file__).resolve().parent.parent
BASE_SCRIPT = ROOT / "docker" / "debian-base.sh"
WHEELS = ROOT / "docker" / "wheels"
IMAGE = "consent-proxy:test"
STATE = "/var/lib/consent-proxy"
SESSION_SECRET = "a-test-secret-that-is-long-enough-to-sign"
HEALTHY_WITHIN = 60.0


def docker(*args: str, timeout: float = 120, check: bool = True) -> str:
    result = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout.strip()


@pytest.fixture(scope="module")
def engine() -> None:
    if shutil.which("docker") is None:
        pytest.skip("no container engine: the docker command is not installed")
    try:
        subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30, check=True)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        reason = (exc.stderr or "no answer within 30 s").strip().splitlines()[-1]
        pytest.skip(f"no container engine answers: {reason}")


def image_id(tag: str) -> str | None:
    result = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Id}}", tag],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result.stdout.strip() if result.returncode == 0 else None


@pytest.fixture(scope="module")
def base_image(engine: None) -> str:
    digest = hashlib.sha256(BASE_SCRIPT.read_bytes()).hexdigest()[:12]
    tag = f"consent-proxy-base:bookworm-{digest}"
    if image_id(tag):
        return tag  # made by an earlier run: the engine keeps it
    if shutil.which("debootstrap") is None:
        pytest.skip(f"no base image {tag} and no debootstrap to make one")
    run_script(BASE_SCRIPT, tag)
    return tag


def wheels_missing() -> set[str]:
    """Pins of the lock (whatever their marker) with no wheel in docker/wheels yet."""
    have = {parse_wheel_filename(w.name)[:2] for w in WHEELS.glob("*.whl")}
    missing = {
        f"{pin.name}=={pinned_version(pin)}"
        for pin in lock_pins()
        if (canonicalize_name(pin.name), Version(pinned_version(pin))) not in have
    }
    backend = any(name == "setuptools" for name, _ in have)
    return missing if backend else {*missing, "setuptools"}


def run_script(script: Path, *args: str) -> None:
    result = subprocess.run(
        [str(script), *args], capture_output=True, text=True, timeout=900, check=False
    )
    assert result.returncode == 0, f"{script.name} failed:\n{result.stderr[-3000:]}"


@pytest.fixture(scope="module")
def image(base_image: str) -> str:
    if wheels_missing():
        run_script(ROOT / "docker" / "wheelhouse.sh")
    previous = image_id(IMAGE)
    docker(
        "build",
        "--quiet",
        "--build-arg", f"BASE={base_image}",
        "--build-arg", "PIP_NO_INDEX=1",
        "--tag", IMAGE,
        str(ROOT),
        timeout=900,
    )  # fmt: skip
    if previous and previous != image_id(IMAGE):
        docker("image", "rm", previous, check=False)  # the replaced build; its shared layers stay
    return IMAGE


@dataclass
class Container:
    name: str
    volume: str
    port: int
    ops_port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def state(self) -> dict[str, object]:
        result: dict[str, object] = json.loads(
            docker("inspect", "--format", "{{json .State}}", self.name)
        )
        return result


def write_config(folder: Path, upstream: ThreadServer, ops_port: int) -> Path:
    config = {
        "upstream": {"url": upstream.url},
        "ops": {"host": "127.0.0.1", "port": ops_port},
        "store": {"type": "sqlite", "path": f"{STATE}/consent-proxy.sqlite3"},
        # A watched sign-in path makes the proxy open its store at start-up.
        "sso": {"endpoints": [{"type": "upstream", "path": "/login", "header": "X-User"}]},
        "session": {
            "secrets": [{"env": "CONSENT_PROXY_SESSION_SECRET"}],
            "upstream_cookie": "app_session",
        },
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o644)  # the container's user 10001 reads it
    return path


@pytest.fixture(scope="module")
def container(
    image: str, upstream: ThreadServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Container]:
    name = f"consent-proxy-test-{uuid.uuid4().hex[:8]}"
    running = Container(name, name, free_port(), free_port())
    config = write_config(tmp_path_factory.mktemp("container"), upstream, running.ops_port)
    docker("volume", "create", running.volume)
    try:
        docker(
            "run", "--detach", "--name", name, "--network", "host",
            "--health-interval", "1s",  # the image's check, asked every second
            "--env", f"CONSENT_PROXY_SESSION_SECRET={SESSION_SECRET}",
            "--volume", f"{running.volume}:{STATE}",
            "--volume", f"{config}:/etc/consent-proxy/config.yaml:ro",
            image, "run", "--host", "127.0.0.1", "--port", str(running.port),
        )  # fmt: skip
        wait_until_healthy(running)
        yield running
    finally:
        docker("rm", "--force", name, check=False)
        docker("volume", "rm", running.volume, check=False)


def wait_until_healthy(container: Container) -> None:
    deadline = time.monotonic() + HEALTHY_WITHIN
    while time.monotonic() < deadline:
        state = container.state()
        health = state.get("Health") or {}
        assert isinstance(health, dict)
        if health.get("Status") == "healthy":
            return
        if state.get("Status") != "running":
            break
        time.sleep(0.5)
    logs = subprocess.run(
        ["docker", "logs", container.name], capture_output=True, text=True, check=False
    )
    raise AssertionError(
        f"not healthy: {json.dumps(container.state())}\n{logs.stdout}{logs.stderr}"
    )


def test_the_health_check_follows_the_configured_ops_port(container: Container) -> None:
    health = container.state()["Health"]
    assert isinstance(health, dict)
    last = health["Log"][-1]
    assert last["ExitCode"] == 0
    assert f"http://127.0.0.1:{container.ops_port}/healthz answered 200" in last["Output"]


def test_serves_a_request_through_the_container(container: Container) -> None:
    tag = uuid.uuid4().hex[:12]
    response = httpx.get(f"{container.url}/echo", params={"tag": tag}, timeout=30)
    data = echo(response)
    assert data["path"] == "/echo"
    assert received(data, "x-request-id") == [response.headers["x-request-id"]]


def test_the_store_lives_in_the_state_volume(container: Container) -> None:
    ready = httpx.get(f"http://127.0.0.1:{container.ops_port}/readyz", timeout=10).json()
    assert ready["checks"]["store"] == "ok"
    # Another container with the same volume sees the SQLite file the proxy made.
    listing = docker(
        "run", "--rm", "--volume", f"{container.volume}:{STATE}", "--entrypoint", "ls",
        IMAGE, "-n", STATE,
    )  # fmt: skip
    assert "consent-proxy.sqlite3" in listing
    assert " 10001 " in listing  # written by the image's user, not root


def test_the_image_runs_the_python_the_tests_run(container: Container) -> None:
    version = docker(
        "exec", container.name, "python", "-c", "import sys; print(*sys.version_info[:2])"
    )
    assert version == f"{sys.version_info.major} {sys.version_info.minor}"
    assert docker("exec", container.name, "id", "-u") == "10001"

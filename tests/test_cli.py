"""`consent-proxy check` and `run` on good and bad config files: exit codes, one line per
problem on stderr, never a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from proxy import __version__
from proxy.cli import main
from proxy.config import CONFIG_ENV, Settings

BAD_CONFIG = "listen: {port: 0}\nupstream: {url: 'localhost:8000'}\nbogus: 1\n"


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != CONFIG_ENV}
    result = subprocess.run(
        [sys.executable, "-m", "proxy.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**environment, **(env or {})},
        check=False,
    )
    assert "Traceback" not in result.stderr + result.stdout
    return result


def write(tmp_path: Path, text: str, name: str = "proxy.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def bad_config_lines(path: Path) -> list[str]:
    return [
        f"{path}:1:10: listen.port: input should be greater than or equal to 1, got 0",
        f"{path}:2:12: upstream.url: must be an http(s) URL, got 'localhost:8000'",
        f"{path}:3:1: bogus: unknown key; allowed keys here: " + ", ".join(Settings.model_fields),
    ]


# --- check -----------------------------------------------------------------------------------


def test_check_a_good_file(tmp_path: Path) -> None:
    path = write(tmp_path, "upstream: {url: 'http://127.0.0.1:8000'}\n")
    result = cli("check", str(path))
    assert result.returncode == 0
    assert result.stdout == f"{path}: OK\n"
    assert result.stderr == ""


def test_check_a_bad_file(tmp_path: Path) -> None:
    path = write(tmp_path, BAD_CONFIG)
    result = cli("check", str(path))
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == bad_config_lines(path)


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (
            "upstream: {url: 'localhost:8000'}\n",
            ":1:12: upstream.url: must be an http(s) URL, got 'localhost:8000'",
        ),
        (
            "upstream:\n  url: http://a\n  url: http://b\n",
            ": line 3, column 3: not valid YAML: key 'url' is given twice",
        ),
        (
            "upstream: [\n",
            ": line 2, column 1: not valid YAML: expected the node content, "
            "but found '<stream end>'",
        ),
        ("- upstream\n", ": the top level must be a mapping of option: value"),
        (
            "upstream: {url: 'http://a'}\nsession: {secrets: [{env: CONSENT_PROXY_TEST_UNSET}]}\n",
            ":2:21: session.secrets[0]: environment variable CONSENT_PROXY_TEST_UNSET is not set",
        ),
    ],
    ids=["bad value", "duplicate key", "invalid yaml", "not a mapping", "unset secret"],
)
def test_check_prints_one_line_per_problem(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    text: str,
    line: str,
) -> None:
    monkeypatch.delenv("CONSENT_PROXY_TEST_UNSET", raising=False)
    path = write(tmp_path, text)
    assert main(["check", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"{path}{line}\n"


def test_check_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.yaml"
    result = cli("check", str(path))
    assert result.returncode == 1
    assert result.stderr == f"{path}: cannot read the file: No such file or directory\n"


def test_check_needs_a_file() -> None:
    result = cli("check")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("check: ") or "usage:" in result.stderr


def test_check_with_a_secret_from_the_environment(tmp_path: Path) -> None:
    path = write(
        tmp_path, "upstream: {url: 'http://a'}\nsession: {secrets: [{env: TEST_CLI_SECRET}]}\n"
    )
    result = cli("check", str(path), env={"TEST_CLI_SECRET": "x" * 40})
    assert result.returncode == 0
    assert "x" * 40 not in result.stdout + result.stderr


def test_version() -> None:
    result = cli("--version")
    assert result.returncode == 0
    assert result.stdout == f"consent-proxy {__version__}\n"


# --- run ---------------------------------------------------------------------------------------


def test_run_with_a_bad_file_exits_1_with_the_problems(tmp_path: Path) -> None:
    path = write(tmp_path, BAD_CONFIG)
    result = cli("run", "--config", str(path))
    assert result.returncode == 1
    assert result.stderr.splitlines() == bad_config_lines(path)


def test_run_reads_the_file_named_in_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path, BAD_CONFIG)
    result = cli("run", env={CONFIG_ENV: str(path)})
    assert result.returncode == 1
    assert result.stderr.splitlines() == bad_config_lines(path)


def test_run_without_any_file_says_how_to_give_one() -> None:
    result = cli("run")
    assert result.returncode == 1
    assert result.stderr == (
        "configuration: no config file given: pass --config or set CONSENT_PROXY_CONFIG\n"
    )


def test_run_with_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.yaml"
    result = cli("run", "--config", str(path))
    assert result.returncode == 1
    assert result.stderr == f"{path}: cannot read the file: No such file or directory\n"


def test_run_needs_a_worker(tmp_path: Path) -> None:
    path = write(tmp_path, "upstream: {url: 'http://127.0.0.1:8000'}\n")
    result = cli("run", "--config", str(path), "--workers", "0")
    assert result.returncode == 2
    assert result.stderr == "--workers: must be at least 1\n"


def test_run_on_a_port_in_use_exits_1(tmp_path: Path) -> None:
    path = write(tmp_path, "upstream: {url: 'http://127.0.0.1:8000'}\n")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = cli("run", "--config", str(path), "--port", str(port))
    assert "address already in use" in result.stderr
    assert result.returncode == 1


# --- hostile files -------------------------------------------------------------------------------

# Half a GiB of address space: several times what `check` needs, and nothing like what a
# file standing for billions of values would take once expanded.
ADDRESS_SPACE = 512 * 1024 * 1024
WITHIN = (
    "import resource, runpy, sys; "
    "resource.setrlimit(resource.RLIMIT_AS, ({0}, {0})); "
    "sys.argv[0] = 'consent-proxy'; "
    "runpy.run_module('proxy.cli', run_name='__main__', alter_sys=True)"
)


def cli_within_memory(*args: str) -> subprocess.CompletedProcess[str]:
    """The command line in a process that cannot grow past ADDRESS_SPACE."""
    environment = {k: v for k, v in os.environ.items() if k != CONFIG_ENV}
    return subprocess.run(
        [sys.executable, "-c", WITHIN.format(ADDRESS_SPACE), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=environment,
        check=False,
    )


BOMBED = {
    "config": ("proxy.yaml", "upstream: {{url: *a9}}\n", ["check"]),
    "policy": ("policy.yaml", "version: 1\ndefaults: {{prompt: *a9}}\n", ["check", "--policy"]),
}


@pytest.mark.parametrize("kind", sorted(BOMBED))
def test_check_refuses_an_alias_bomb_in_bounded_memory(tmp_path: Path, kind: str) -> None:
    from .test_yaml_reader import ALIASES_REFUSED, alias_bomb

    name, use, command = BOMBED[kind]
    path = write(tmp_path, alias_bomb(10) + use.format(), name)  # 9**10 values, written out
    assert path.stat().st_size < 1000
    result = cli_within_memory(*command, str(path))
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == f"{path}: line 5, column 10: {ALIASES_REFUSED}\n"


def test_check_refuses_a_huge_file_unread(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    with path.open("wb") as file:  # sparse: 4 GiB that take no room
        file.truncate(4 * 1024 * 1024 * 1024)
    result = cli_within_memory("check", "--policy", str(path))
    assert result.returncode == 1
    assert result.stderr == (
        f"{path}: refused: larger than 1024 KiB, the limit for a YAML file the proxy reads\n"
    )

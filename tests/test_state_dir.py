"""The state folder: flag, environment, config, platform default; the SQLite file in it."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.config import load_settings
from proxy.config import state as state_module
from proxy.config.state import STATE_DIR_ENV, SYSTEM_STATE_DIR, default_state_dir


def write(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "proxy.yaml"
    path.write_text(f"upstream: {{url: 'http://127.0.0.1:8000'}}\n{extra}")
    return path


def test_without_store_path_the_sqlite_file_is_in_the_state_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(STATE_DIR_ENV, str(tmp_path / "env"))
    settings = load_settings(write(tmp_path))
    assert settings.state_dir == tmp_path / "env"
    assert settings.store.path == tmp_path / "env" / "consent-proxy.sqlite3"  # type: ignore[union-attr]


def test_a_store_path_given_is_kept(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, "store: {path: here.sqlite3}\n"))
    assert settings.store.path == tmp_path / "here.sqlite3"  # type: ignore[union-attr]


def test_flag_beats_environment_beats_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "state_dir: state\n")
    monkeypatch.delenv(STATE_DIR_ENV)
    assert load_settings(path).state_dir == tmp_path / "state"  # relative to the file
    monkeypatch.setenv(STATE_DIR_ENV, str(tmp_path / "env"))
    assert load_settings(path).state_dir == tmp_path / "env"
    assert load_settings(path, state_dir=tmp_path / "flag").state_dir == tmp_path / "flag"


def test_root_or_an_existing_writable_system_folder_uses_var_lib(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(state_module.sys, "platform", "linux")
    monkeypatch.setattr(state_module, "_is_root", lambda: True)
    assert default_state_dir() == SYSTEM_STATE_DIR == Path("/var/lib/consent-proxy")
    monkeypatch.setattr(state_module, "_is_root", lambda: False)
    monkeypatch.setattr(state_module, "_writable_dir", lambda path: path == SYSTEM_STATE_DIR)
    assert default_state_dir() == SYSTEM_STATE_DIR


def test_a_user_gets_the_xdg_state_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state_module.sys, "platform", "linux")
    monkeypatch.setattr(state_module, "_is_root", lambda: False)
    monkeypatch.setattr(state_module, "_writable_dir", lambda path: False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert default_state_dir() == tmp_path / "consent-proxy"
    monkeypatch.setenv("XDG_STATE_HOME", "relative/ignored")  # the spec: absolute only
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_state_dir() == tmp_path / "home" / ".local" / "state" / "consent-proxy"

"""Where the proxy keeps its state: one folder, the SQLite store's home when `store.path`
is not given.

Chosen, first found: `--state-dir`, the environment's ``CONSENT_PROXY_STATE_DIR`` (so a
container or a unit file can say it without editing the file), the config's `state_dir`,
else a per-platform default: ``/var/lib/consent-proxy`` for
root or when that folder is already there and writable (the container's volume),
otherwise the user's state folder (``$XDG_STATE_HOME/consent-proxy``, by default
``~/.local/state/consent-proxy``; on macOS ``~/Library/Application Support/consent-proxy``,
on Windows ``%LOCALAPPDATA%\\consent-proxy``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

STATE_DIR_ENV = "CONSENT_PROXY_STATE_DIR"
SYSTEM_STATE_DIR = Path("/var/lib/consent-proxy")
SQLITE_FILE = "consent-proxy.sqlite3"


def state_dir_for(flag: Path | str | None, configured: Path | None) -> Path:
    from_env = os.environ.get(STATE_DIR_ENV)
    if flag:
        return Path(flag)
    if from_env:
        return Path(from_env)
    return configured or default_state_dir()


def default_state_dir() -> Path:
    """The platform's state folder, when neither flag, environment nor config names one."""
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local") / (
            "consent-proxy"
        )
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "consent-proxy"
    if _is_root() or _writable_dir(SYSTEM_STATE_DIR):
        return SYSTEM_STATE_DIR
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "state"
    return base / "consent-proxy"


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _writable_dir(path: Path) -> bool:
    return path.is_dir() and os.access(path, os.W_OK | os.X_OK)

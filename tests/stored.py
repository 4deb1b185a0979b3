"""What the tests give a proxy's session settings, and read back from its SQLite store."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

SECRET = "a-test-session-secret-that-is-long-enough-0001"


def session_settings(upstream_cookie: str = "app_session") -> dict[str, Any]:
    """The `session:` section for a plain-HTTP test proxy bound to the app's cookie."""
    return {
        "secrets": [{"value": SECRET}],
        "upstream_cookie": upstream_cookie,
        "cookie_secure": False,
    }


def stored(database: Path, namespace: str) -> list[dict[str, Any]]:
    """Every JSON record of a namespace in a proxy's SQLite store."""
    conn = sqlite3.connect(database)
    try:
        rows = conn.execute("SELECT value FROM kv WHERE namespace = ?", (namespace,)).fetchall()
    finally:
        conn.close()
    return [json.loads(row[0]) for row in rows]

"""How the proxy process runs: where it listens, the listener's limits, the ops listener, and
logging."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from proxy.config.values import Seconds, StrictModel

DEFAULT_LISTEN_PORT = 8080


class ListenSettings(StrictModel):
    host: str = "127.0.0.1"
    port: int = Field(DEFAULT_LISTEN_PORT, ge=1, le=65535)


# --- the public listener's limits (proxy/forward/http_server.py) ---------------------------

DEFAULT_MAX_HEAD_BYTES = 64 * 1024
DEFAULT_HEAD_TIMEOUT = 10.0
DEFAULT_MAX_CLIENT_CONNECTIONS = 1024


class ServerSettings(StrictModel):
    """Limits of the public listener, enforced while a request head is read."""

    # Request line and headers together; larger heads are answered 431.
    max_head_bytes: int = Field(DEFAULT_MAX_HEAD_BYTES, ge=8 * 1024, le=1024 * 1024)
    # From the connection (or a later request's first byte) to the end of its head.
    head_timeout: Seconds = DEFAULT_HEAD_TIMEOUT
    # Open client connections per process; requests beyond are answered 503.
    max_connections: int = Field(DEFAULT_MAX_CLIENT_CONNECTIONS, ge=1, le=1_000_000)


class LoggingSettings(StrictModel):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "text", "json"] = "auto"
    # One line per request (method, path without query, status, bytes, duration, id).
    access_log: bool = True
    # How users appear in log lines: their opaque key, or their email / UPN.
    users: Literal["key", "email"] = "key"


class OpsSettings(StrictModel):
    """The operations listener: health, readiness, metrics (and the token broker API)."""

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 9090  # 0: no ops listener

"""The app behind the proxy: its origin, TLS, timeouts and the connection pool."""

from __future__ import annotations

from pydantic import Field

from proxy.config.values import ConfigFile, OriginUrl, Seconds, StrictModel

DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_READ_TIMEOUT = 60.0
DEFAULT_WRITE_TIMEOUT = 60.0
DEFAULT_POOL_TIMEOUT = 5.0
DEFAULT_MAX_CONNECTIONS = 512
DEFAULT_MAX_IDLE = 128
# Shorter than the keep-alive of common app servers (uvicorn 5 s, gunicorn 2 s is the
# outlier): reusing a connection the app is about to close risks a 502 for a request
# with a body, which cannot be retried.
DEFAULT_IDLE_TIMEOUT = 4.0


class TimeoutSettings(StrictModel):
    connect: Seconds = DEFAULT_CONNECT_TIMEOUT
    read: Seconds = DEFAULT_READ_TIMEOUT
    write: Seconds = DEFAULT_WRITE_TIMEOUT
    pool: Seconds = DEFAULT_POOL_TIMEOUT


class PoolSettings(StrictModel):
    max_connections: int = Field(DEFAULT_MAX_CONNECTIONS, ge=1, le=100_000)
    max_idle: int = Field(DEFAULT_MAX_IDLE, ge=0, le=100_000)
    idle_timeout: Seconds = DEFAULT_IDLE_TIMEOUT


class UpstreamSettings(StrictModel):
    url: OriginUrl
    preserve_host: bool = True
    tls_verify: bool = True
    ca_file: ConfigFile | None = None
    timeouts: TimeoutSettings = TimeoutSettings()
    pool: PoolSettings = PoolSettings()

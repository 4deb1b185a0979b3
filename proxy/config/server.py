"""How the proxy process runs: where it listens, the ops listener, and logging."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from proxy.config.values import StrictModel

DEFAULT_LISTEN_PORT = 8080


class ListenSettings(StrictModel):
    host: str = "127.0.0.1"
    port: int = Field(DEFAULT_LISTEN_PORT, ge=1, le=65535)


class LoggingSettings(StrictModel):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "text", "json"] = "auto"


class OpsSettings(StrictModel):
    """The operations listener: health, readiness, metrics (and the token broker API)."""

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 9090  # 0: no ops listener

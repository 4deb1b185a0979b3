"""Where sessions, tokens and consent records are kept: SQLite for one replica, Redis
(plain, Sentinel or Cluster) for several."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, Discriminator, Field, Tag, model_validator

from proxy.config.values import ConfigFile, ConfigPath, Secret, StrictModel


class SqliteStore(StrictModel):
    type: Literal["sqlite"] = "sqlite"
    # None: consent-proxy.sqlite3 in the state folder (Settings fills it in).
    path: ConfigPath | None = None
    # Expired rows (sessions, one-time states, replay keys) are deleted this often.
    purge_interval: Annotated[float, Field(ge=1, le=86400)] = 300.0


def _redis_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise ValueError(f"must be redis://host:port/db (rediss:// for TLS), got {value!r}")
    if parts.username or parts.password:
        raise ValueError("must not contain credentials: give them in username and password")
    try:
        port = parts.port
    except ValueError:
        port = -1
    if port is not None and not 0 < port < 65536:
        raise ValueError(f"has no valid port, got {value!r}")
    if parts.path.strip("/") and not parts.path.strip("/").isdigit():
        raise ValueError(f"the path must be a database number such as /0, got {value!r}")
    return value


class SentinelSettings(StrictModel):
    master_name: str
    sentinels: Annotated[tuple[str, ...], Field(min_length=1)]  # host:port entries
    password: Secret | None = None


class RedisStore(StrictModel):
    """Redis, for several replicas: they must all use the same server and key_prefix."""

    type: Literal["redis"]
    # redis://host:6379/0, rediss:// for TLS; the password goes in `password`, not here.
    url: Annotated[str, AfterValidator(_redis_url)] = "redis://127.0.0.1:6379/0"
    password: Secret | None = None
    username: str | None = None
    ca_file: ConfigFile | None = None
    key_prefix: Annotated[str, Field(min_length=1, max_length=100)] = "consent-proxy:"
    sentinel: SentinelSettings | None = None
    cluster: bool = False
    timeout: Annotated[float, Field(gt=0, le=60)] = 1.0
    max_connections: Annotated[int, Field(ge=1, le=10_000)] = 64

    @model_validator(mode="after")
    def _one_topology(self) -> RedisStore:
        if self.sentinel is not None and self.cluster:
            raise ValueError("give sentinel or cluster, not both")
        if self.ca_file is not None and not self.url.startswith("rediss://"):
            raise ValueError("ca_file is for TLS: use a rediss:// url, or drop ca_file")
        return self


def _store_type(data: Any) -> str:
    if isinstance(data, dict):
        return str(data.get("type", "sqlite"))
    return str(getattr(data, "type", "sqlite"))


StoreSettings = Annotated[
    Annotated[SqliteStore, Tag("sqlite")] | Annotated[RedisStore, Tag("redis")],
    Discriminator(_store_type),
]

"""The value types every settings section is built from: URLs, paths, durations, secrets.

Relative paths are resolved against the config file's folder (passed in the validation
context as ``base_dir``); secrets come from ``{env: NAME}``, ``{file: path}`` or, for
development only, ``{value: ...}``.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Iterable
from functools import lru_cache
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    model_validator,
)

MIN_SECRET_LENGTH = 32


class StrictModel(BaseModel):
    """Frozen, and unknown keys are errors: a misspelt option must not pass silently."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http(s) URL, got {value!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"must not have a query or fragment, got {value!r}")
    if parts.username or parts.password:
        raise ValueError("must not contain credentials")
    return value.rstrip("/")


def _issuer(value: str) -> str:
    _http_url(value)
    return value  # compared exactly with `iss`: a trailing slash matters


def _origin_url(value: str) -> str:
    value = _http_url(value)
    if urlsplit(value).path not in ("", "/"):
        raise ValueError(f"must be an origin (scheme://host[:port]) without a path, got {value!r}")
    return value


def _relative_to_config(value: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base_dir")
    return Path(base) / value if base and not value.is_absolute() else value


def _existing_file(value: Path) -> Path:
    if not value.is_file():
        raise ValueError(f"file {str(value)!r} does not exist")
    return value


HttpUrl = Annotated[str, AfterValidator(_http_url)]
IssuerUrl = Annotated[str, AfterValidator(_issuer)]
# Relative paths are relative to the config file's folder, as an admin reading it expects.
ConfigPath = Annotated[Path, AfterValidator(_relative_to_config)]
ConfigFile = Annotated[Path, AfterValidator(_relative_to_config), AfterValidator(_existing_file)]
OriginUrl = Annotated[str, AfterValidator(_origin_url)]
Seconds = Annotated[float, Field(gt=0, le=86400)]
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def peer_checker(networks: Iterable[IpNetwork]) -> Callable[[str], bool]:
    """Is this TCP peer one of `trusted_proxies`? Cached: peers repeat (an ingress, a LB)."""
    trusted = tuple(networks)

    @lru_cache(maxsize=1024)
    def is_trusted(peer: str) -> bool:
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(address in network for network in trusted)

    return is_trusted


class Secret(StrictModel):
    """A secret read from the environment, a file, or (for development only) inline."""

    env: str | None = None
    file: ConfigPath | None = None
    value: SecretStr | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Secret:
        given = [k for k in ("env", "file", "value") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of env, file or value")
        if self.env is not None and self.env not in os.environ:
            raise ValueError(f"environment variable {self.env} is not set")
        if self.file is not None and not self.file.is_file():
            raise ValueError(f"secret file {str(self.file)!r} does not exist")
        return self

    def reveal(self) -> str:
        if self.value is not None:
            return self.value.get_secret_value()
        if self.env is not None:
            return os.environ[self.env]
        assert self.file is not None
        return self.file.read_text().strip()


def _long_enough(secret: Secret) -> Secret:
    if len(secret.reveal()) < MIN_SECRET_LENGTH:
        raise ValueError(
            f"must be at least {MIN_SECRET_LENGTH} characters "
            "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
        )
    return secret


SigningSecret = Annotated[Secret, AfterValidator(_long_enough)]

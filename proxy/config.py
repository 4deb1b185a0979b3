"""Typed, frozen settings from one YAML file, validated with pydantic.

Every problem in a file is collected and reported together, each line naming the YAML
path and what to do about it, e.g. ``upstream.url: must be an http(s) URL, got
'localhost:8000'``. Unknown keys are errors: a misspelt option silently ignored is a
production incident waiting to happen.

Secrets never have to be written inline: any secret field accepts ``{env: NAME}`` or
``{file: /run/secrets/name}`` as well as ``{value: ...}``.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic_core import ErrorDetails

from .errors import ConfigError

CONFIG_ENV = "CONSENT_PROXY_CONFIG"

M = TypeVar("M", bound=BaseModel)

DEFAULT_LISTEN_PORT = 8080
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_READ_TIMEOUT = 60.0
DEFAULT_WRITE_TIMEOUT = 60.0
DEFAULT_POOL_TIMEOUT = 5.0
DEFAULT_MAX_CONNECTIONS = 512
DEFAULT_MAX_IDLE = 128
DEFAULT_IDLE_TIMEOUT = 30.0


class _Model(BaseModel):
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


def _origin_url(value: str) -> str:
    value = _http_url(value)
    if urlsplit(value).path not in ("", "/"):
        raise ValueError(f"must be an origin (scheme://host[:port]) without a path, got {value!r}")
    return value


HttpUrl = Annotated[str, AfterValidator(_http_url)]
OriginUrl = Annotated[str, AfterValidator(_origin_url)]
Seconds = Annotated[float, Field(gt=0, le=86400)]
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class Secret(_Model):
    """A secret read from the environment, a file, or (for development only) inline."""

    env: str | None = None
    file: Path | None = None
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


class ListenSettings(_Model):
    host: str = "127.0.0.1"
    port: int = Field(DEFAULT_LISTEN_PORT, ge=1, le=65535)


class TimeoutSettings(_Model):
    connect: Seconds = DEFAULT_CONNECT_TIMEOUT
    read: Seconds = DEFAULT_READ_TIMEOUT
    write: Seconds = DEFAULT_WRITE_TIMEOUT
    pool: Seconds = DEFAULT_POOL_TIMEOUT


class PoolSettings(_Model):
    max_connections: int = Field(DEFAULT_MAX_CONNECTIONS, ge=1, le=100_000)
    max_idle: int = Field(DEFAULT_MAX_IDLE, ge=0, le=100_000)
    idle_timeout: Seconds = DEFAULT_IDLE_TIMEOUT


class UpstreamSettings(_Model):
    url: OriginUrl
    preserve_host: bool = True
    tls_verify: bool = True
    ca_file: Path | None = None
    timeouts: TimeoutSettings = TimeoutSettings()
    pool: PoolSettings = PoolSettings()

    @model_validator(mode="after")
    def _ca_exists(self) -> UpstreamSettings:
        if self.ca_file is not None and not self.ca_file.is_file():
            raise ValueError(f"ca_file {str(self.ca_file)!r} does not exist")
        return self


class LoggingSettings(_Model):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "text", "json"] = "auto"


class Settings(_Model):
    listen: ListenSettings = ListenSettings()
    upstream: UpstreamSettings
    public_url: OriginUrl | None = None
    trusted_proxies: tuple[IpNetwork, ...] = ()
    logging: LoggingSettings = LoggingSettings()


# --- loading -------------------------------------------------------------------------------


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice: YAML would silently keep the last one."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} is given twice", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def parse_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{where}not valid YAML: {problem}"], source) from None


def read_yaml_file(path: Path | str) -> Any:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError([f"cannot read the file: {reason}"], str(path)) from None
    return parse_yaml(text, str(path))


def load_settings(path: Path | str | None = None) -> Settings:
    """Load and validate the config file; raise ConfigError listing every problem."""
    if path is None:
        path = os.environ.get(CONFIG_ENV)
        if not path:
            raise ConfigError([f"no config file given: pass --config or set {CONFIG_ENV}"])
    return settings_from_data(read_yaml_file(path), str(path))


def settings_from_data(data: Any, source: str = "configuration") -> Settings:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(["the top level must be a mapping of option: value"], source)
    return validate_model(Settings, data, source)


def validate_model(model: type[M], data: Any, source: str) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_errors(model, exc.errors()), source) from None


def describe_errors(model: type[BaseModel], errors: list[ErrorDetails]) -> list[str]:
    lines: list[str] = []
    for err in errors:
        line = f"{yaml_path(err['loc'])}: {_explain(model, err)}"
        if line not in lines:
            lines.append(line)
    return lines


def yaml_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not _is_type_tag(part):
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _is_type_tag(part: str) -> bool:
    # pydantic adds union member names ("IPv4Network", "function-after[...]") to locations.
    return part[:1].isupper() or "[" in part


def _explain(model: type[BaseModel], err: ErrorDetails) -> str:
    kind, given = err["type"], err.get("input")
    if kind == "extra_forbidden":
        allowed = _allowed_keys(model, err["loc"][:-1])
        hint = f"; allowed keys here: {', '.join(allowed)}" if allowed else ""
        return f"unknown key{hint}"
    if kind == "missing":
        return "is required"
    if kind in ("value_error", "assertion_error"):
        return str(err["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if kind in ("ip_v4_network", "ip_v6_network", "ip_any_network"):
        return f"must be an IP address or CIDR network such as 10.0.0.0/8, got {given!r}"
    if kind == "model_type" or kind == "dict_type":
        return f"must be a mapping of option: value, got {type(given).__name__}"
    if kind == "literal_error":
        return f"{err['msg'][0].lower()}{err['msg'][1:]}, got {given!r}"
    return f"{err['msg'][0].lower()}{err['msg'][1:]}, got {given!r}"


def _allowed_keys(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    current: Any = model
    for part in loc:
        if isinstance(part, int) or not (
            isinstance(current, type) and issubclass(current, BaseModel)
        ):
            continue
        field = current.model_fields.get(part)
        if field is None:
            return []
        current = _model_in(field.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _model_in(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None

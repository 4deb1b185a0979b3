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
from typing import Annotated, Any, Literal, TypeVar, get_args, get_origin
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    SecretStr,
    Tag,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic_core import ErrorDetails

from proxy.errors import ConfigError

CONFIG_ENV = "CONSENT_PROXY_CONFIG"

M = TypeVar("M", bound=BaseModel)

DEFAULT_LISTEN_PORT = 8080
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
MIN_SECRET_LENGTH = 32


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
# Relative paths are relative to the config file's folder, as an admin reading it expects.
ConfigPath = Annotated[Path, AfterValidator(_relative_to_config)]
ConfigFile = Annotated[Path, AfterValidator(_relative_to_config), AfterValidator(_existing_file)]
OriginUrl = Annotated[str, AfterValidator(_origin_url)]
Seconds = Annotated[float, Field(gt=0, le=86400)]
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class Secret(_Model):
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
    ca_file: ConfigFile | None = None
    timeouts: TimeoutSettings = TimeoutSettings()
    pool: PoolSettings = PoolSettings()


class LoggingSettings(_Model):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "text", "json"] = "auto"


# --- SSO: recognising a completed sign-in -------------------------------------------------


def _path(value: str) -> str:
    if not value.startswith("/") or value.startswith("//") or "?" in value or "#" in value:
        raise ValueError(f"must be a URL path starting with '/', got {value!r}")
    return value


UrlPath = Annotated[str, AfterValidator(_path)]
Status = Annotated[int, Field(ge=100, le=599)]


class CompletedWhen(_Model):
    """What the upstream's answer to an accepted sign-in looks like.

    Both conditions must hold when both are given; a response that does not match (the
    app rejected the assertion, showed an error page...) is not a sign-in.
    """

    status: tuple[Status, ...] = (302, 303)
    sets_cookie: str | None = None


class SamlEndpoint(_Model):
    type: Literal["saml"]
    path: UrlPath
    idp_certificates: tuple[ConfigFile, ...] = ()
    idp_metadata: ConfigFile | None = None
    audience: str
    destination: str | None = None
    identity: str = "name_id"
    email_attribute: str | None = None
    name_attribute: str | None = None
    tenant_attribute: str | None = None
    object_id_attribute: str | None = None
    # Kept for policy rules under their own names; `groups_attribute` is kept as "groups"
    # (what policy `match.groups` reads).
    attributes: tuple[str, ...] = ()
    groups_attribute: str | None = None
    completed_when: CompletedWhen = CompletedWhen()

    @model_validator(mode="after")
    def _some_certificate(self) -> SamlEndpoint:
        if not self.idp_certificates and self.idp_metadata is None:
            raise ValueError(
                "give idp_certificates (PEM files) or idp_metadata: signatures are "
                "checked against the IdP's certificate only"
            )
        return self


# Only public-key algorithms: "none" and HMAC (which would turn a public key into a secret)
# are not accepted, whatever the token's header says.
AsymmetricAlgorithm = Literal[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"
]


class OidcEndpoint(_Model):
    type: Literal["oidc"]
    path: UrlPath
    issuer: Annotated[str, AfterValidator(_issuer)]
    audience: str
    discovery_url: HttpUrl | None = None
    jwks_url: HttpUrl | None = None
    ca_file: ConfigFile | None = None
    algorithms: Annotated[tuple[AsymmetricAlgorithm, ...], Field(min_length=1)] = (
        "RS256",
        "ES256",
        "PS256",
    )
    identity_claim: str = "email"
    name_claim: str = "name"
    attributes: tuple[str, ...] = ()
    groups_attribute: str | None = "groups"
    completed_when: CompletedWhen = CompletedWhen()


class UpstreamIdentityEndpoint(_Model):
    """The upstream itself says who signed in: a response header, or a who-am-I endpoint."""

    type: Literal["upstream"]
    path: UrlPath
    header: str | None = None
    whoami_path: UrlPath | None = None
    user_pointer: str = "/email"
    name_pointer: str | None = None
    tenant_pointer: str | None = None
    object_id_pointer: str | None = None
    attribute_pointers: dict[str, str] = {}
    completed_when: CompletedWhen = CompletedWhen()

    @model_validator(mode="after")
    def _one_source(self) -> UpstreamIdentityEndpoint:
        if (self.header is None) == (self.whoami_path is None):
            raise ValueError("give exactly one of header or whoami_path")
        for pointer in (self.user_pointer, self.name_pointer, *self.attribute_pointers.values()):
            if pointer is not None and pointer and not pointer.startswith("/"):
                raise ValueError(f"JSON pointers start with '/', got {pointer!r}")
        return self


SsoEndpoint = Annotated[
    SamlEndpoint | OidcEndpoint | UpstreamIdentityEndpoint, Field(discriminator="type")
]


class SsoSettings(_Model):
    endpoints: tuple[SsoEndpoint, ...] = ()
    logout_paths: tuple[UrlPath, ...] = ()
    clock_skew: Annotated[float, Field(ge=0, le=3600)] = 120.0
    max_body_bytes: Annotated[int, Field(ge=1024, le=64 * 1024 * 1024)] = 1024 * 1024

    @model_validator(mode="after")
    def _distinct_paths(self) -> SsoSettings:
        paths = [e.path for e in self.endpoints]
        repeated = sorted({p for p in paths if paths.count(p) > 1})
        if repeated:
            raise ValueError(
                f"each endpoint path may be watched once; repeated: {', '.join(repeated)}"
            )
        return self


# --- the proxy's own session ---------------------------------------------------------------


class SessionSettings(_Model):
    cookie_name: str = "consent_proxy"
    cookie_domain: str | None = None
    cookie_path: str = "/"
    cookie_secure: bool = True
    lifetime: Annotated[float, Field(gt=60, le=90 * 86400)] = 8 * 3600.0
    secrets: tuple[SigningSecret, ...] = ()
    upstream_cookie: str | None = None

    @model_validator(mode="after")
    def _cookie_name(self) -> SessionSettings:
        if not self.cookie_name or any(c in self.cookie_name for c in ' ;,="\\'):
            raise ValueError(f"cookie_name must be a plain token, got {self.cookie_name!r}")
        return self


# --- Microsoft: app registrations, tokens, the consent journey ------------------------------


class CertificateCredential(_Model):
    """Client authentication by certificate (what Microsoft recommends over secrets)."""

    private_key: Secret
    thumbprint: Annotated[str, Field(pattern=r"^[0-9A-Fa-f]{40}$")]
    public_certificate: ConfigFile | None = None


class MicrosoftApp(_Model):
    """One Entra ID app registration the proxy redeems codes and refreshes tokens with."""

    client_id: Annotated[str, Field(min_length=1)]
    client_secret: Secret | None = None
    certificate: CertificateCredential | None = None
    tenant: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9.-]+$")] = "organizations"
    authority_host: OriginUrl = "https://login.microsoftonline.com"
    ca_file: ConfigFile | None = None

    @model_validator(mode="after")
    def _one_credential(self) -> MicrosoftApp:
        if (self.client_secret is None) == (self.certificate is None):
            raise ValueError("give exactly one of client_secret or certificate")
        if not self.authority_host.startswith("https://"):
            raise ValueError("authority_host must be https:// (msal refuses anything else)")
        return self


class ConsentSettings(_Model):
    # Reserved paths the proxy answers itself (callback, manual connect page...).
    prefix: str = "/.consent-proxy/"
    state_lifetime: Annotated[float, Field(ge=60, le=3600)] = 600.0
    # After "need admin approval" in a tenant, its other users are not sent into the
    # same failing consent screen for this long (or until an admin consents).
    admin_approval_retry: Annotated[float, Field(ge=0, le=30 * 86400)] = 3600.0
    # Threads for msal, which blocks.
    msal_threads: Annotated[int, Field(ge=1, le=64)] = 8

    @model_validator(mode="after")
    def _prefix(self) -> ConsentSettings:
        if not (self.prefix.startswith("/") and self.prefix.endswith("/") and len(self.prefix) > 2):
            raise ValueError(f"prefix must start and end with '/', got {self.prefix!r}")
        return self


class TokenSettings(_Model):
    # Fernet keys (generate: consent-proxy keygen). The first encrypts; all decrypt.
    encryption_keys: tuple[Secret, ...] = ()
    # An access token is refreshed this long before it expires (msal's own rule is 300 s).
    refresh_leeway: Annotated[float, Field(ge=300, le=3000)] = 300.0
    # After a transient refresh failure, wait this long before trying again (doubling, capped).
    retry_backoff: Annotated[float, Field(ge=1, le=600)] = 15.0
    # Other requests of a user wait this long at most for a refresh under way elsewhere.
    lock_timeout: Annotated[float, Field(ge=1, le=120)] = 20.0

    @model_validator(mode="after")
    def _fernet_keys(self) -> TokenSettings:
        from proxy.store.vault import valid_key

        for key in self.encryption_keys:
            if not valid_key(key.reveal()):
                raise ValueError(
                    "each encryption key must be 32 url-safe base64-encoded bytes "
                    "(generate one with `consent-proxy keygen`)"
                )
        return self


def _header_name(value: str) -> str:
    if not value or any(not (c.isalnum() or c == "-") for c in value):
        raise ValueError(f"must be a header name of letters, digits and '-', got {value!r}")
    return value


HeaderName = Annotated[str, AfterValidator(_header_name)]


class HeaderNames(_Model):
    """What the app receives. Inbound copies of every one of these (in any spelling) are
    removed from every request, signed in or not."""

    user: HeaderName = "X-Consent-Proxy-User"
    tenant_id: HeaderName = "X-Consent-Proxy-Tenant-Id"
    object_id: HeaderName = "X-Consent-Proxy-Object-Id"
    integration: HeaderName = "X-Consent-Proxy-Integration"
    access_token: HeaderName = "X-Consent-Proxy-Access-Token"  # noqa: S105 - a header name
    token_expires: HeaderName = "X-Consent-Proxy-Token-Expires"  # noqa: S105 - a header name
    token_route: HeaderName = "X-Consent-Proxy-Token-Route"  # noqa: S105 - a header name
    ews_url: HeaderName = "X-Consent-Proxy-Ews-Url"
    assertion: HeaderName = "X-Consent-Proxy-Assertion"

    @model_validator(mode="after")
    def _distinct(self) -> HeaderNames:
        names = [v.lower() for v in self.model_dump().values()]
        if len(set(names)) != len(names):
            raise ValueError("each header needs its own name")
        return self


class AssertionSettings(_Model):
    """The signed identity assertion (a short-lived ES256 JWT) the app can verify with the
    JWKS on the ops listener instead of trusting plain headers."""

    # PEM EC P-256 private keys, newest first: the first signs, all are published.
    # Without one, a key is made at start-up (fine for one replica; replicas must share).
    signing_keys: tuple[Secret, ...] = ()
    lifetime: Annotated[float, Field(ge=10, le=3600)] = 120.0
    audience: str | None = None  # default: public_url, else upstream.url
    issuer: str = "consent-proxy"


class BrokerSettings(_Model):
    """The token broker API on the ops listener, for the app's back-end jobs."""

    # Bearer keys the app presents (Authorization: Bearer <key>); none: the API is off.
    keys: tuple[SigningSecret, ...] = ()


class SqliteStore(_Model):
    type: Literal["sqlite"] = "sqlite"
    path: ConfigPath = Path("consent-proxy.sqlite3")


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


class SentinelSettings(_Model):
    master_name: str
    sentinels: Annotated[tuple[str, ...], Field(min_length=1)]  # host:port entries
    password: Secret | None = None


class RedisStore(_Model):
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


# --- the public listener's limits (proxy/forward/http_server.py) ---------------------------

DEFAULT_MAX_HEAD_BYTES = 64 * 1024
DEFAULT_HEAD_TIMEOUT = 10.0
DEFAULT_MAX_CLIENT_CONNECTIONS = 1024


class ServerSettings(_Model):
    """Limits of the public listener, enforced while a request head is read."""

    # Request line and headers together; larger heads are answered 431.
    max_head_bytes: int = Field(DEFAULT_MAX_HEAD_BYTES, ge=8 * 1024, le=1024 * 1024)
    # From the connection (or a later request's first byte) to the end of its head.
    head_timeout: Seconds = DEFAULT_HEAD_TIMEOUT
    # Open client connections per process; requests beyond are answered 503.
    max_connections: int = Field(DEFAULT_MAX_CLIENT_CONNECTIONS, ge=1, le=1_000_000)


class OpsSettings(_Model):
    """The operations listener: health, readiness, metrics (and the token broker API)."""

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 9090  # 0: no ops listener


class Settings(_Model):
    listen: ListenSettings = ListenSettings()
    server: ServerSettings = ServerSettings()
    upstream: UpstreamSettings
    public_url: OriginUrl | None = None
    trusted_proxies: tuple[IpNetwork, ...] = ()
    logging: LoggingSettings = LoggingSettings()
    sso: SsoSettings = SsoSettings()
    session: SessionSettings = SessionSettings()
    store: StoreSettings = SqliteStore()
    ops: OpsSettings = OpsSettings()
    policy: ConfigFile | None = None
    consent: ConsentSettings = ConsentSettings()
    microsoft_apps: dict[str, MicrosoftApp] = {}
    tokens: TokenSettings = TokenSettings()
    headers: HeaderNames = HeaderNames()
    assertion: AssertionSettings = AssertionSettings()
    broker: BrokerSettings = BrokerSettings()

    @model_validator(mode="after")
    def _consent_needs(self) -> Settings:
        if self.policy is None:
            return self
        if not self.sso.endpoints:
            raise ValueError("policy: prompts follow SSO sign-ins; configure sso.endpoints too")
        if not self.microsoft_apps:
            raise ValueError("microsoft_apps: the policy needs at least one app registration")
        if self.public_url is None:
            raise ValueError(
                "public_url: needed to build the redirect URI registered with Microsoft "
                "(public_url + consent.prefix + 'callback')"
            )
        if not self.tokens.encryption_keys:
            raise ValueError(
                "tokens.encryption_keys: tokens are stored encrypted; give at least one key "
                "(e.g. {env: CONSENT_PROXY_TOKEN_KEY}, made with `consent-proxy keygen`)"
            )
        return self

    @model_validator(mode="after")
    def _session_for_sso(self) -> Settings:
        if self.sso.endpoints and not self.session.secrets:
            raise ValueError(
                "session.secrets: at least one secret is needed to sign session cookies "
                "when sso.endpoints are watched (e.g. {env: CONSENT_PROXY_SESSION_SECRET})"
            )
        if self.sso.endpoints and not self.session.upstream_cookie:
            raise ValueError(
                "session.upstream_cookie: name the app's own session cookie; the proxy "
                "session is bound to it and ends when it changes"
            )
        return self


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
    data = read_yaml_file(path)
    return settings_from_data(data, str(path), base_dir=Path(path).resolve().parent)


def settings_from_data(
    data: Any, source: str = "configuration", base_dir: Path | None = None
) -> Settings:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(["the top level must be a mapping of option: value"], source)
    return validate_model(Settings, data, source, base_dir)


def validate_model(model: type[M], data: Any, source: str, base_dir: Path | None = None) -> M:
    try:
        return model.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        raise ConfigError(describe_errors(model, exc.errors()), source) from None


def describe_errors(model: type[BaseModel], errors: list[ErrorDetails]) -> list[str]:
    lines: list[str] = []
    for err in errors:
        where, why = yaml_path(model, err["loc"]), _explain(model, err)
        line = f"{where}: {why}"
        if where == "(top level)" and why.split(": ", 1)[0].replace(".", "").isidentifier():
            line = why  # a cross-field rule names its own path
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            line = f"{yaml_path(model, (*err['loc'], 'type'))}: {_explain(model, err)}"
        if line not in lines:
            lines.append(line)
    return lines


def yaml_path(model: type[BaseModel], loc: tuple[int | str, ...]) -> str:
    """The path an admin sees in the file: pydantic's union tags left out."""
    out = ""
    current: Any = model
    for i, part in enumerate(loc):
        if isinstance(part, int):
            if not _is_sequence(current) and i == len(loc) - 1:
                out += f".{part}" if out else str(part)  # a YAML key that is a number
            else:
                out += f"[{part}]"
                current = _item_type(current)
            continue
        field_type = _field_type(current, part)
        if field_type is None:
            member = _tagged_member(current, part)
            if member is not current or i < len(loc) - 1 or not _models_in(current):
                current = member  # a union tag or member name, not a key in the file
                continue
        out += f".{part}" if out else part
        current = field_type
    return out or "(top level)"


def _is_sequence(annotation: Any) -> bool:
    if get_origin(annotation) in (tuple, list):
        return True
    return any(_is_sequence(arg) for arg in get_args(annotation) if arg is not type(None))


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in getattr(annotation, "__args__", ()) + tuple(getattr(annotation, "__metadata__", ())):
        found.extend(_models_in(arg))
    return found


def _field_type(annotation: Any, name: str) -> Any:
    for model in _models_in(annotation):
        if name in model.model_fields:
            return model.model_fields[name].annotation
    return None


def _item_type(annotation: Any) -> Any:
    args = [a for a in getattr(annotation, "__args__", ()) if a is not Ellipsis]
    return args[-1] if args else None


def _tagged_member(annotation: Any, tag: str) -> Any:
    for model in _models_in(annotation):
        field = model.model_fields.get("type")
        if field is not None and tag in getattr(field.annotation, "__args__", ()):
            return model
    return annotation


def _explain(model: type[BaseModel], err: ErrorDetails) -> str:
    kind, given = err["type"], err.get("input")
    ctx = err.get("ctx", {})
    if kind == "extra_forbidden":
        allowed = _allowed_keys(model, err["loc"][:-1])
        hint = f"; allowed keys here: {', '.join(allowed)}" if allowed else ""
        return f"unknown key{hint}"
    if kind == "missing":
        return "is required"
    if kind == "union_tag_invalid":
        return f"must be one of {ctx.get('expected_tags')}, got {ctx.get('tag')!r}"
    if kind == "union_tag_not_found":
        return "is required: it says which kind of entry this is"
    if kind == "too_short":
        return f"must list at least {ctx.get('min_length')} item(s), got {given!r}"
    if kind in ("value_error", "assertion_error"):
        return str(err["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if kind in ("ip_v4_network", "ip_v6_network", "ip_any_network"):
        return f"must be an IP address or CIDR network such as 10.0.0.0/8, got {given!r}"
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return f"must be a mapping of option: value, got {type(given).__name__}"
    msg = str(err["msg"])
    return f"{msg[0].lower()}{msg[1:]}, got {given!r}"


def _allowed_keys(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            current = _item_type(current)
        else:
            current = _field_type(current, part) or _tagged_member(current, part)
    models = _models_in(current)
    return list(models[0].model_fields) if len(models) == 1 else []

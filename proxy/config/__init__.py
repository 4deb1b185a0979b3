"""Typed, frozen settings from one YAML file, validated with pydantic.

Every problem in a file is collected and reported together, each line naming the YAML
path and what to do about it, e.g. ``upstream.url: must be an http(s) URL, got
'localhost:8000'``. Unknown keys are errors: a misspelt option silently ignored is a
production incident waiting to happen. Secrets never have to be written inline: any
secret field accepts ``{env: NAME}`` or ``{file: /run/secrets/name}`` as well as
``{value: ...}``.

`yaml_reader` reads a YAML file within size, alias and nesting limits (config and
policy alike); `loader` turns the config into settings (and describes errors by YAML
path, also for the policy file); `marks` finds where in the file each problem is (line,
column, the path with map keys);
`values` holds the shared value types (URLs, config-relative paths, secrets); one module
per section: `server`, `upstream`, `sso`, `identity` (session, headers, assertion),
`microsoft` (app registrations, consent, tokens, broker), `store`, `forward_auth`;
`settings` joins them and checks the rules that span sections. Everything is importable
from `proxy.config`. The package imports nothing of the project but `proxy.errors`
(checking token encryption keys borrows `proxy.store.vault.valid_key` at validation time,
not at import).
"""

from proxy.config.forward_auth import ForwardAuthSettings
from proxy.config.identity import AssertionSettings, HeaderName, HeaderNames, SessionSettings
from proxy.config.loader import (
    CONFIG_ENV,
    describe_errors,
    load_settings,
    settings_from_data,
    validate_model,
    yaml_path,
)
from proxy.config.marks import Marks, data_path, format_path, located
from proxy.config.microsoft import (
    BrokerSettings,
    CertificateCredential,
    ConsentSettings,
    MicrosoftApp,
    TokenSettings,
)
from proxy.config.server import (
    DEFAULT_HEAD_TIMEOUT,
    DEFAULT_LISTEN_PORT,
    DEFAULT_MAX_CLIENT_CONNECTIONS,
    DEFAULT_MAX_HEAD_BYTES,
    ListenSettings,
    LoggingSettings,
    OpsSettings,
    ServerSettings,
)
from proxy.config.settings import Settings
from proxy.config.sso import (
    AsymmetricAlgorithm,
    CompletedWhen,
    LinkBy,
    OidcEndpoint,
    SamlEndpoint,
    SilentVerification,
    SsoEndpoint,
    SsoSettings,
    Status,
    UpstreamIdentityEndpoint,
    UrlPath,
)
from proxy.config.store import RedisStore, SentinelSettings, SqliteStore, StoreSettings
from proxy.config.upstream import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_IDLE,
    DEFAULT_POOL_TIMEOUT,
    DEFAULT_READ_TIMEOUT,
    DEFAULT_WRITE_TIMEOUT,
    PoolSettings,
    TimeoutSettings,
    UpstreamSettings,
)
from proxy.config.values import (
    MIN_SECRET_LENGTH,
    ConfigFile,
    ConfigPath,
    HttpUrl,
    IpNetwork,
    IssuerUrl,
    OriginUrl,
    Seconds,
    Secret,
    SigningSecret,
)
from proxy.config.yaml_reader import (
    MAX_ALIAS_NODES,
    MAX_DEPTH,
    MAX_YAML_BYTES,
    parse_yaml,
    parse_yaml_document,
    read_yaml_document,
    read_yaml_file,
)

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_HEAD_TIMEOUT",
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_LISTEN_PORT",
    "DEFAULT_MAX_CLIENT_CONNECTIONS",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_HEAD_BYTES",
    "DEFAULT_MAX_IDLE",
    "DEFAULT_POOL_TIMEOUT",
    "DEFAULT_READ_TIMEOUT",
    "DEFAULT_WRITE_TIMEOUT",
    "MAX_ALIAS_NODES",
    "MAX_DEPTH",
    "MAX_YAML_BYTES",
    "MIN_SECRET_LENGTH",
    "AssertionSettings",
    "AsymmetricAlgorithm",
    "BrokerSettings",
    "CertificateCredential",
    "CompletedWhen",
    "ConfigFile",
    "ConfigPath",
    "ConsentSettings",
    "ForwardAuthSettings",
    "HeaderName",
    "HeaderNames",
    "HttpUrl",
    "IpNetwork",
    "IssuerUrl",
    "LinkBy",
    "ListenSettings",
    "LoggingSettings",
    "Marks",
    "MicrosoftApp",
    "OidcEndpoint",
    "OpsSettings",
    "OriginUrl",
    "PoolSettings",
    "RedisStore",
    "SamlEndpoint",
    "Seconds",
    "Secret",
    "SentinelSettings",
    "ServerSettings",
    "SessionSettings",
    "Settings",
    "SigningSecret",
    "SilentVerification",
    "SqliteStore",
    "SsoEndpoint",
    "SsoSettings",
    "Status",
    "StoreSettings",
    "TimeoutSettings",
    "TokenSettings",
    "UpstreamIdentityEndpoint",
    "UpstreamSettings",
    "UrlPath",
    "data_path",
    "describe_errors",
    "format_path",
    "load_settings",
    "located",
    "parse_yaml",
    "parse_yaml_document",
    "read_yaml_document",
    "read_yaml_file",
    "settings_from_data",
    "validate_model",
    "yaml_path",
]

"""The whole file: every section, and the rules that span sections."""

from __future__ import annotations

from pydantic import ValidationInfo, model_validator

from proxy.config.forward_auth import ForwardAuthSettings
from proxy.config.identity import AssertionSettings, HeaderNames, SessionSettings
from proxy.config.microsoft import BrokerSettings, ConsentSettings, MicrosoftApp, TokenSettings
from proxy.config.server import ListenSettings, LoggingSettings, OpsSettings, ServerSettings
from proxy.config.sso import OidcEndpoint, SsoSettings
from proxy.config.state import SQLITE_FILE, state_dir_for
from proxy.config.store import SqliteStore, StoreSettings
from proxy.config.upstream import UpstreamSettings
from proxy.config.values import ConfigFile, ConfigPath, IpNetwork, OriginUrl, StrictModel


class Settings(StrictModel):
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
    microsoft_apps: dict[str, MicrosoftApp] = {}  # noqa: RUF012 - pydantic copies defaults
    tokens: TokenSettings = TokenSettings()
    headers: HeaderNames = HeaderNames()
    assertion: AssertionSettings = AssertionSettings()
    broker: BrokerSettings = BrokerSettings()
    forward_auth: ForwardAuthSettings = ForwardAuthSettings()
    # The folder for state (the SQLite store unless store.path says otherwise); see state.py.
    state_dir: ConfigPath | None = None

    @model_validator(mode="after")
    def _state_in_its_folder(self, info: ValidationInfo) -> Settings:
        """Fill in the state folder (flag, file, environment, platform) and the SQLite file."""
        folder = state_dir_for((info.context or {}).get("state_dir"), self.state_dir)
        object.__setattr__(self, "state_dir", folder)  # frozen: this is still construction
        if isinstance(self.store, SqliteStore) and self.store.path is None:
            store = self.store.model_copy(update={"path": folder / SQLITE_FILE})
            object.__setattr__(self, "store", store)
        return self

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

    @model_validator(mode="after")
    def _silent_needs(self) -> Settings:
        silent = [e.silent for e in self.sso.endpoints if isinstance(e, OidcEndpoint) and e.silent]
        if silent and self.public_url is None:
            raise ValueError(
                "public_url: needed for the redirect URI of the silent sign-in check "
                "(public_url + sso.endpoints[].silent.callback_path)"
            )
        prefix = self.consent.prefix
        for check in silent:
            if check.callback_path.startswith(prefix):
                raise ValueError(
                    f"sso: silent.callback_path {check.callback_path!r} is under "
                    f"consent.prefix {prefix!r}, whose paths the consent pages answer"
                )
        return self

    @model_validator(mode="after")
    def _forward_auth_needs(self) -> Settings:
        if self.forward_auth.enabled and not self.sso.endpoints:
            raise ValueError(
                "forward_auth.enabled: the answer names the signed-in user; "
                "configure sso.endpoints too"
            )
        if self.forward_auth.enabled and not self.trusted_proxies:
            raise ValueError(
                "forward_auth.enabled: list the ingress in trusted_proxies; the endpoint "
                "answers only the ingress (its answers carry access tokens)"
            )
        return self

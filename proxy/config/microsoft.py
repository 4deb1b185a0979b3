"""Microsoft: the app registrations, the consent journey, the tokens they yield, and the
broker API that hands those tokens to the app's back-end jobs."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from proxy.config.values import ConfigFile, OriginUrl, Secret, SigningSecret, StrictModel


class CertificateCredential(StrictModel):
    """Client authentication by certificate (what Microsoft recommends over secrets)."""

    private_key: Secret
    thumbprint: Annotated[str, Field(pattern=r"^[0-9A-Fa-f]{40}$")]
    public_certificate: ConfigFile | None = None


class MicrosoftApp(StrictModel):
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


class ConsentSettings(StrictModel):
    # Reserved paths the proxy answers itself (callback, manual connect page...).
    prefix: str = "/.consent-proxy/"
    state_lifetime: Annotated[float, Field(ge=60, le=3600)] = 600.0
    # After "need admin approval" in a tenant, its other users are not sent into the
    # same failing consent screen for this long (or until an admin consents).
    admin_approval_retry: Annotated[float, Field(ge=0, le=30 * 86400)] = 3600.0
    # How long the link a user sends to an administrator ("approve this app for the
    # organization") stays valid.
    admin_link_lifetime: Annotated[float, Field(ge=600, le=30 * 86400)] = 7 * 86400.0
    # Threads for msal, which blocks.
    msal_threads: Annotated[int, Field(ge=1, le=64)] = 8
    # Code redemptions (a person waits on the callback) have threads of their own; beyond
    # `redeem_queue` waiting, or after `redeem_wait` seconds without a free thread, the
    # person is told Microsoft is slow and to try again, instead of a hanging page.
    redeem_threads: Annotated[int, Field(ge=1, le=64)] = 4
    redeem_queue: Annotated[int, Field(ge=0, le=10_000)] = 32
    redeem_wait: Annotated[float, Field(gt=0, le=60)] = 5.0

    @model_validator(mode="after")
    def _prefix(self) -> ConsentSettings:
        if not (self.prefix.startswith("/") and self.prefix.endswith("/") and len(self.prefix) > 2):
            raise ValueError(f"prefix must start and end with '/', got {self.prefix!r}")
        return self


class TokenSettings(StrictModel):
    # Fernet keys (generate: consent-proxy keygen). The first encrypts; all decrypt.
    encryption_keys: tuple[Secret, ...] = ()
    # An access token is refreshed this long before it expires (msal's own rule is 300 s).
    refresh_leeway: Annotated[float, Field(ge=300, le=3000)] = 300.0
    # After a transient refresh failure, wait this long before trying again (doubling, capped).
    retry_backoff: Annotated[float, Field(ge=1, le=600)] = 15.0
    # Other requests of a user wait this long at most for a refresh under way elsewhere.
    lock_timeout: Annotated[float, Field(ge=1, le=120)] = 20.0
    # A request whose access token has expired waits this long at most for its refresh,
    # then goes on without a token (logged, counted); a still-valid token never waits.
    expired_wait: Annotated[float, Field(ge=0, le=30)] = 1.0
    # How long a user's tokens are reused in process before the store is read again.
    cache_seconds: Annotated[float, Field(ge=1, le=300)] = 60.0

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


class BrokerSettings(StrictModel):
    """The token broker API on the ops listener, for the app's back-end jobs."""

    # Bearer keys the app presents (Authorization: Bearer <key>); none: the API is off.
    keys: tuple[SigningSecret, ...] = ()

"""Who signed in, as the proxy keeps it and tells the app: the proxy's own session
cookie, the identity headers, and the signed identity assertion."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field, model_validator

from proxy.config.values import Secret, SigningSecret, StrictModel


class SessionSettings(StrictModel):
    cookie_name: str = "consent_proxy"
    cookie_domain: str | None = None
    cookie_path: str = "/"
    cookie_secure: bool = True
    lifetime: Annotated[float, Field(gt=60, le=90 * 86400)] = 8 * 3600.0
    secrets: tuple[SigningSecret, ...] = ()
    upstream_cookie: str | None = None
    # A verified session is reused in process this long before the store is read again
    # (how late a session ended on another replica is noticed here).
    cache_seconds: Annotated[float, Field(ge=1, le=300)] = 30.0

    @model_validator(mode="after")
    def _cookie_name(self) -> SessionSettings:
        if not self.cookie_name or any(c in self.cookie_name for c in ' ;,="\\'):
            raise ValueError(f"cookie_name must be a plain token, got {self.cookie_name!r}")
        return self


def _header_name(value: str) -> str:
    if not value or any(not (c.isalnum() or c == "-") for c in value):
        raise ValueError(f"must be a header name of letters, digits and '-', got {value!r}")
    return value


HeaderName = Annotated[str, AfterValidator(_header_name)]


class HeaderNames(StrictModel):
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


class AssertionSettings(StrictModel):
    """The signed identity assertion (a short-lived ES256 JWT) the app can verify with the
    JWKS on the ops listener instead of trusting plain headers."""

    # PEM EC P-256 private keys, newest first: the first signs, all are published.
    # Without one, a key is made at start-up (fine for one replica; replicas must share).
    signing_keys: tuple[Secret, ...] = ()
    lifetime: Annotated[float, Field(ge=10, le=3600)] = 120.0
    audience: str | None = None  # default: public_url, else upstream.url
    issuer: str = "consent-proxy"

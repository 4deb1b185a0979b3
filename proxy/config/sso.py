"""SSO: recognising a completed sign-in at the endpoints the app already has (SAML ACS,
OIDC form_post callback, OIDC code-flow callback confirmed by a silent request of the
proxy's own, or the upstream saying who signed in)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from proxy.config.values import ConfigFile, HttpUrl, IssuerUrl, Secret, StrictModel


def _path(value: str) -> str:
    if not value.startswith("/") or value.startswith("//") or "?" in value or "#" in value:
        raise ValueError(f"must be a URL path starting with '/', got {value!r}")
    return value


UrlPath = Annotated[str, AfterValidator(_path)]
Status = Annotated[int, Field(ge=100, le=599)]


class CompletedWhen(StrictModel):
    """What the upstream's answer to an accepted sign-in looks like.

    Both conditions must hold when both are given; a response that does not match (the
    app rejected the assertion, showed an error page...) is not a sign-in.
    """

    status: tuple[Status, ...] = (302, 303)
    sets_cookie: str | None = None


class SamlEndpoint(StrictModel):
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
    link_by: LinkBy | None = None

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


# Who a person is across endpoints, when the admin trusts the endpoint to assert it.
LinkBy = Literal["email"]
TENANT_PLACEHOLDER = "{tenantid}"


class SilentVerification(StrictModel):
    """The authorization-code flow: the browser brings the app only `?code&state`, so the
    proxy asks the same IdP itself (`prompt=none`) under its own client registration."""

    client_id: Annotated[str, Field(min_length=1)]
    client_secret: Secret | None = None  # a public client when absent (PKCE either way)
    callback_path: UrlPath = "/.consent-proxy-sso/callback"
    scope: str = "openid email profile"
    # Where the IdP takes requests, when discovery does not say (or is not published).
    authorization_url: HttpUrl | None = None
    token_url: HttpUrl | None = None
    # A silent request still unanswered after this long is forgotten.
    state_lifetime: Annotated[float, Field(ge=10, le=3600)] = 300.0

    @model_validator(mode="after")
    def _openid(self) -> SilentVerification:
        if "openid" not in self.scope.split():
            raise ValueError("scope must include 'openid': the proxy asks for an id_token")
        return self


class OidcEndpoint(StrictModel):
    type: Literal["oidc"]
    path: UrlPath
    issuer: IssuerUrl
    # The app's client id (form_post); unused with `silent`: those tokens are for the
    # proxy's own registration, silent.client_id.
    audience: str = ""
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
    # The code flow: verify by a silent request of the proxy's own (None: form_post).
    silent: SilentVerification | None = None
    # Entra multi-tenant issuers ("{tenantid}" in `issuer`): the tenants accepted (all if empty).
    tenants: tuple[str, ...] = ()
    link_by: LinkBy | None = None

    @model_validator(mode="after")
    def _tenant_issuer(self) -> OidcEndpoint:
        if not self.audience and self.silent is None:
            raise ValueError("audience: the app's client id, which its id_tokens are for")
        if TENANT_PLACEHOLDER in self.issuer and not (self.discovery_url or self.jwks_url):
            raise ValueError(
                f"an issuer with {TENANT_PLACEHOLDER} needs discovery_url or jwks_url, e.g. "
                "https://login.microsoftonline.com/organizations/v2.0/.well-known/openid-configuration"
            )
        if self.tenants and TENANT_PLACEHOLDER not in self.issuer:
            raise ValueError(f"tenants applies only to an issuer with {TENANT_PLACEHOLDER}")
        return self


class UpstreamIdentityEndpoint(StrictModel):
    """The upstream itself says who signed in: a response header, or a who-am-I endpoint."""

    type: Literal["upstream"]
    path: UrlPath
    header: str | None = None
    whoami_path: UrlPath | None = None
    user_pointer: str = "/email"
    name_pointer: str | None = None
    tenant_pointer: str | None = None
    object_id_pointer: str | None = None
    attribute_pointers: dict[str, str] = {}  # noqa: RUF012 - pydantic copies defaults
    completed_when: CompletedWhen = CompletedWhen()
    link_by: LinkBy | None = None

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


class SsoSettings(StrictModel):
    endpoints: tuple[SsoEndpoint, ...] = ()
    logout_paths: tuple[UrlPath, ...] = ()
    clock_skew: Annotated[float, Field(ge=0, le=3600)] = 120.0
    max_body_bytes: Annotated[int, Field(ge=1024, le=64 * 1024 * 1024)] = 1024 * 1024

    @model_validator(mode="after")
    def _distinct_paths(self) -> SsoSettings:
        paths = [e.path for e in self.endpoints]
        paths += [
            e.silent.callback_path
            for e in self.endpoints
            if isinstance(e, OidcEndpoint) and e.silent is not None
        ]
        repeated = sorted({p for p in paths if paths.count(p) > 1})
        if repeated:
            raise ValueError(
                f"each endpoint path may be watched once; repeated: {', '.join(repeated)}"
            )
        return self

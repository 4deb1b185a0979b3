"""Who calls the token endpoint: a registered app, proved by a client secret (in the body
or HTTP Basic) or by a client assertion (RFC 7523) signed with a registered certificate's
key, as msal sends with a certificate credential."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections.abc import Mapping
from urllib.parse import unquote_plus

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import RSAKey
from joserfc.jws import JWSRegistry
from starlette.requests import Request

from proxy.demo.microsoft.directory import AppRegistration
from proxy.demo.microsoft.refusals import Refusal
from proxy.demo.microsoft.state import StandInState

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def authenticate(state: StandInState, request: Request, form: Mapping[str, str]) -> AppRegistration:
    """The calling app, once its secret or client assertion checks out."""
    basic_id, basic_secret = basic_credentials(request.headers.get("authorization"))
    client_id = form.get("client_id") or basic_id or ""
    app = state.apps.get(client_id)
    if app is None:
        raise Refusal(700016, client_id=client_id, tenant=request.path_params["tenant"])
    secret = form.get("client_secret") or basic_secret
    if secret is not None:
        if client_id in state.expired_secrets:
            raise Refusal(7000222, 401, client_id=client_id)
        if not any(secrets.compare_digest(secret, s) for s in app.secrets):
            raise Refusal(7000215, 401, client_id=client_id)
        return app
    if form.get("client_assertion_type") == ASSERTION_TYPE and form.get("client_assertion"):
        audience = state.origin + request.url.path
        check_assertion(app, form["client_assertion"], audience, state.clock())
        return app
    raise Refusal(7000218, 401)


def check_assertion(app: AppRegistration, assertion: str, audience: str, now: float) -> None:
    """A client assertion (RFC 7523) signed by a registered certificate's key, named by
    its thumbprint (`x5t`, SHA-1, or `x5t#S256`)."""
    keys = {}
    for pem in app.certificates:
        certificate = x509.load_pem_x509_certificate(pem.encode())
        der = certificate.public_bytes(serialization.Encoding.DER)
        public = certificate.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        rsa_key = RSAKey.import_key(public)
        keys[b64url(hashlib.sha1(der).digest())] = rsa_key  # noqa: S324 - x5t is SHA-1
        keys[b64url(hashlib.sha256(der).digest())] = rsa_key
    try:
        encoded = assertion.split(".")[0]
        header = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
        # msal pads its thumbprints ("...=") and writes a float `exp`: both are accepted.
        key = keys.get((header.get("x5t#S256") or header.get("x5t") or "").rstrip("="))
        if key is None:
            raise ValueError("no such certificate")
        claims = jwt.decode(assertion, key, registry=_assertion_registry()).claims
    except (JoseError, ValueError, TypeError, AttributeError):
        raise Refusal(700027, 401) from None
    if not claims.get("iss") == claims.get("sub") == app.client_id:
        raise Refusal(700021, 401)
    if claims.get("aud") != audience:
        raise Refusal(700021, 401)
    exp = claims.get("exp")
    if not isinstance(exp, int | float) or isinstance(exp, bool) or exp < now:
        raise Refusal(700024, 401)


def basic_credentials(header: str | None) -> tuple[str | None, str | None]:
    scheme, _, value = (header or "").partition(" ")
    if scheme.lower() != "basic":
        return None, None
    try:
        client_id, _, secret = base64.b64decode(value, validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None, None
    return unquote_plus(client_id), unquote_plus(secret)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _assertion_registry() -> JWSRegistry:
    """msal's client assertions carry `x5t` and, with a public certificate, an `x5c` chain:
    more header than joserfc's default 512 bytes allow."""
    registry = JWSRegistry(algorithms=["RS256", "PS256"], strict_check_header=False)
    registry.max_header_length = 16 * 1024
    return registry

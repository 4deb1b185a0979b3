"""An OIDC id_token posted to the app's callback (`response_mode=form_post`): who signed in.

The proxy is not the relying party; it observes the POST and checks the token as strictly
as the app should: a signature by a key the IdP publishes (JWKS, over TLS), an algorithm
from the endpoint's allow-list (never `none`, never HMAC: an HS256 token "signed" with the
public key would otherwise verify), the exact issuer, our audience (and `azp` when there
are several), the time claims with the configured clock skew, and the nonce when the
caller knows it. Everything a browser can put in the field — three parts or not, base64
or not, JSON or not — ends as `SignInRejected` with a reason, never another exception.

joserfc does the cryptography and the registered-claim checks. The header is read here
first, because joserfc lets some malformed headers escape as `TypeError`, falls back to
its "recommended" algorithms (HS256 among them) when given an empty allow-list, and
needs the `kid` before it can tell an unknown key from a bad signature.

The IdP's keys are fetched and cached by `jwks.JwksCache`. An Entra multi-tenant issuer
(`https://login.microsoftonline.com/{tenantid}/v2.0`) is matched against the token's own
`tid`, which must be a GUID (and one of `tenants` when the endpoint names some).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import math
import re
import time
import warnings
from collections.abc import Iterator
from typing import Any

import httpx
from authlib.oidc.core.util import create_half_hash  # type: ignore[import-untyped]
from joserfc import jwk, jwt
from joserfc.errors import (
    BadSignatureError,
    ClaimError,
    ExpiredTokenError,
    InvalidKeyIdError,
    InvalidPayloadError,
    JoseError,
    MissingClaimError,
    SecurityWarning,
)
from joserfc.jws import JWSRegistry

from proxy.config import OidcEndpoint
from proxy.config.sso import TENANT_PLACEHOLDER
from proxy.identity.sso import SignIn, SignInRejected, kept_attributes
from proxy.identity.sso.jwks import JwksCache, shown

__all__ = ["OidcVerifier", "read_header"]

MAX_TOKEN_BYTES = 64 * 1024
MAX_HEADER_BYTES = 8 * 1024
_MAX_TIMESTAMP = 253402300799  # 9999-12-31T23:59:59Z
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_FALLBACK_IDENTITY_CLAIMS = ("email", "preferred_username", "upn")
_GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def expected_issuer(endpoint: OidcEndpoint, claims: dict[str, Any]) -> str:
    """The issuer this token must name: the configured one, with the token's `tid` in
    place of `{tenantid}` for a multi-tenant (Entra "organizations"/"common") endpoint."""
    if TENANT_PLACEHOLDER not in endpoint.issuer:
        return endpoint.issuer
    tid = claims.get("tid")
    if not isinstance(tid, str) or not _GUID.fullmatch(tid):
        raise SignInRejected(f"the token's tenant id (tid) {shown(tid)} is not a tenant GUID")
    if endpoint.tenants and tid not in {t.lower() for t in endpoint.tenants}:
        raise SignInRejected(f"tenant {tid} is not one of the endpoint's tenants")
    return endpoint.issuer.replace(TENANT_PLACEHOLDER, tid)


class _RepeatedMember(ValueError):
    pass


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object without repeated members: two `sub`s must not mean two things."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _RepeatedMember(f"repeats the member {shown(key, 40)}")
        result[key] = value
    return result


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


class _StrictJSONDecoder(json.JSONDecoder):
    def __init__(self, **kwargs: Any) -> None:
        kwargs.update(object_pairs_hook=_unique_members, parse_constant=_no_constant)
        super().__init__(**kwargs)


def _json_segment(segment: str, what: str) -> Any:
    if not segment or not _B64URL.fullmatch(segment) or len(segment) % 4 == 1:
        raise SignInRejected(f"the token's {what} is not base64url")
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise SignInRejected(f"the token's {what} is not base64url") from None
    try:
        return json.loads(raw, cls=_StrictJSONDecoder)
    except _RepeatedMember as exc:
        raise SignInRejected(f"the token's {what} {exc}") from None
    except (ValueError, RecursionError):
        raise SignInRejected(f"the token's {what} is not JSON") from None


def read_header(id_token: object) -> dict[str, Any]:
    """The JOSE header of a compact JWS, read without trusting anything in it yet."""
    if not isinstance(id_token, str):
        raise SignInRejected("the id_token is not a string")
    if len(id_token) > MAX_TOKEN_BYTES:
        raise SignInRejected(f"the id_token is larger than {MAX_TOKEN_BYTES // 1024} KiB")
    if not id_token.isascii():
        raise SignInRejected("the id_token has characters a JWT cannot have (not ASCII)")
    parts = id_token.split(".")
    if len(parts) == 5:
        raise SignInRejected("the id_token is encrypted (JWE); only signed tokens are supported")
    if len(parts) != 3:
        raise SignInRejected(
            f"the id_token is not a signed JWT: 3 dot-separated parts expected, got {len(parts)}"
        )
    if len(parts[0]) > MAX_HEADER_BYTES:
        raise SignInRejected("the token's header is too large")
    header = _json_segment(parts[0], "header")
    if not isinstance(header, dict):
        raise SignInRejected("the token's header is not a JSON object")
    return header


@contextlib.contextmanager
def _deprecation_accepted(alg: str) -> Iterator[None]:
    """joserfc warns on every EdDSA use (RFC 9864); an admin who allows it has chosen."""
    if alg != "EdDSA":
        yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecurityWarning)
        yield


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _values(value: Any) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        if isinstance(item, int | float) and not isinstance(item, bool):
            item = str(item)
        if _text(item) is not None:
            out.append(item.strip())
    return tuple(out)


class OidcVerifier:
    """Verifies id_tokens for one `sso.endpoints` entry of type oidc.

    Make it, and its client, on the event loop that uses it; close the client at shutdown.
    """

    def __init__(
        self,
        endpoint: OidcEndpoint,
        clock_skew: float,
        http_client: httpx.AsyncClient,
        *,
        keys: JwksCache | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.clock_skew = clock_skew
        self.keys = keys if keys is not None else JwksCache(endpoint, http_client)
        # Not strict about unknown header members (RFC 7515 says ignore them unless `crit`),
        # and room for an x5c chain: joserfc's default header limit is 512 bytes.
        self._registry = JWSRegistry(
            algorithms=list(endpoint.algorithms), strict_check_header=False
        )
        self._registry.max_header_length = MAX_HEADER_BYTES

    async def verify(
        self, id_token: str, nonce: str | None = None, access_token: str | None = None
    ) -> SignIn:
        """Who the token says signed in, once everything about it checks out.

        `nonce`: the value the sign-in request carried, when the caller knows it (the
        proxy knows it only for its own silent request). `access_token`: issued with the
        id_token, checked against its `at_hash` when the token has one. Replay is the
        caller's job, with `replay_key` and `replay_until`.
        """
        header = read_header(id_token)
        alg, kid = self._check_header(header)
        key_set = await self.keys.key_set(kid)
        claims = self._decode(id_token, key_set, alg, kid)
        self._check_claims(claims, nonce)
        if access_token is not None and "at_hash" in claims:
            _check_at_hash(claims["at_hash"], access_token, alg)
        return self._sign_in(id_token, claims)

    def _check_header(self, header: dict[str, Any]) -> tuple[str, str | None]:
        alg = header.get("alg")
        if not isinstance(alg, str) or not alg:
            raise SignInRejected("the token's header names no algorithm (alg)")
        if alg.lower() == "none":
            raise SignInRejected("the token is unsigned (alg 'none')")
        if alg not in self.endpoint.algorithms:
            allowed = ", ".join(self.endpoint.algorithms) or "none configured"
            raise SignInRejected(f"algorithm {shown(alg)} is not allowed (allowed: {allowed})")
        if "crit" in header:
            raise SignInRejected("the token has critical header parameters (crit): not supported")
        kid = header.get("kid")
        if kid is not None and (not isinstance(kid, str) or not kid):
            raise SignInRejected("the token's key id (kid) is not a string")
        return alg, kid

    def _decode(
        self, id_token: str, key_set: jwk.KeySet, alg: str, kid: str | None
    ) -> dict[str, Any]:
        if kid is None and len(key_set.keys) != 1:
            raise SignInRejected(
                f"the token names no key (kid) and the IdP publishes {len(key_set.keys)} keys"
            )
        if kid is not None and kid not in {k.kid for k in key_set.keys}:
            raise SignInRejected(
                f"the token is signed with a key the IdP does not publish (kid {shown(kid)})"
            )
        try:
            with _deprecation_accepted(alg):
                token = jwt.decode(
                    id_token, key_set, registry=self._registry, decoder_cls=_StrictJSONDecoder
                )
        except BadSignatureError:
            raise SignInRejected("the token's signature does not verify") from None
        except InvalidKeyIdError:
            raise SignInRejected(f"no published key (kid {shown(kid)}) is for {alg}") from None
        except InvalidPayloadError as exc:
            if isinstance(exc.__cause__, _RepeatedMember):
                raise SignInRejected(f"the token's payload {exc.__cause__}") from None
            raise SignInRejected("the token's payload is not a valid JSON object") from None
        except JoseError as exc:
            raise SignInRejected(
                f"the token is not valid: {exc.description or exc.error}"
            ) from None
        except (ValueError, TypeError, KeyError, RecursionError) as exc:
            raise SignInRejected(f"the token is malformed ({type(exc).__name__})") from None
        return token.claims

    def _check_claims(self, claims: dict[str, Any], nonce: str | None) -> None:
        issuer, audience = expected_issuer(self.endpoint, claims), self.endpoint.audience
        registry = jwt.JWTClaimsRegistry(
            now=int(time.time()),
            leeway=math.ceil(self.clock_skew),
            iss={"essential": True, "value": issuer},
            aud={"essential": True, "value": audience},
            sub={"essential": True},
            exp={"essential": True},
            iat={"essential": True},
        )
        try:
            registry.validate(claims)
        except ClaimError as exc:
            raise SignInRejected(self._claim_problem(exc, claims)) from None
        aud, azp = claims["aud"], claims.get("azp")
        if isinstance(aud, list) and len(aud) > 1 and azp is None:
            raise SignInRejected("the token has several audiences and no authorized party (azp)")
        if azp is not None and azp != audience:
            raise SignInRejected(
                f"the token's authorized party (azp) {shown(azp)} is not {audience!r}"
            )
        if nonce is not None:
            got = claims.get("nonce")
            if not isinstance(got, str) or not hmac.compare_digest(got.encode(), nonce.encode()):
                raise SignInRejected("the token's nonce does not match the sign-in request's")

    def _claim_problem(self, exc: ClaimError, claims: dict[str, Any]) -> str:
        claim, value = exc.claim, claims.get(exc.claim)
        if isinstance(exc, ExpiredTokenError):
            return f"the token expired (exp {shown(value)}, clock skew {self.clock_skew:g} s)"
        if isinstance(exc, MissingClaimError):
            return f"the token lacks the required claim(s) {claim}"
        if claim == "iss":
            expected = expected_issuer(self.endpoint, claims)
            return f"issuer {shown(value)} is not the configured {expected!r}"
        if claim == "aud":
            return f"audience {shown(value)} does not include {self.endpoint.audience!r}"
        if claim == "nbf" and _is_time(value):
            skew = f"clock skew {self.clock_skew:g} s"
            return f"the token is not valid yet (nbf {shown(value)}, {skew})"
        if claim == "iat" and _is_time(value):
            return f"the token was issued in the future (iat {shown(value)})"
        return f"the token's {claim} claim is invalid: {exc.description}"

    def _sign_in(self, id_token: str, claims: dict[str, Any]) -> SignIn:
        endpoint = self.endpoint
        identity_claims = dict.fromkeys((endpoint.identity_claim, *_FALLBACK_IDENTITY_CLAIMS))
        email = next((t for c in identity_claims if (t := _text(claims.get(c)))), None)
        jti = _text(claims.get("jti"))
        return SignIn(
            subject=claims["sub"],
            email=email,
            name=_text(claims.get(endpoint.name_claim)),
            tenant_id=_text(claims.get("tid")),
            object_id=_text(claims.get("oid")),
            attributes=kept_attributes(
                {name: _values(value) for name, value in claims.items()},
                endpoint.attributes,
                endpoint.groups_attribute,
            ),
            method="oidc",
            issuer=expected_issuer(endpoint, claims),
            replay_key=jti or "sha256:" + hashlib.sha256(id_token.encode()).hexdigest(),
            replay_until=float(min(claims["exp"], _MAX_TIMESTAMP)),
        )


def _check_at_hash(at_hash: Any, access_token: str, alg: str) -> None:
    """OIDC Core 3.1.3.8: the left half of the access token's hash, base64url."""
    expected = create_half_hash(access_token, alg)
    if (
        not isinstance(at_hash, str)
        or expected is None
        or not hmac.compare_digest(at_hash.encode(), expected)
    ):
        raise SignInRejected("the token's at_hash does not match the access token")


def _is_time(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)

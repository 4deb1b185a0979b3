"""The signed identity assertion: a short-lived ES256 JWT saying who the user is and where
their Office 365 connection stands, for apps that would rather verify than trust plain
headers. Its public keys are served as a JWKS on the ops listener.

Keys rotate: the first configured key signs, every configured key is published, so the
app keeps verifying assertions signed just before a rotation. Assertions are cached per
user and claim set until a quarter of their lifetime is left, so the common request
does no signing.
"""

from __future__ import annotations

import time
from typing import Any

from joserfc import jwt
from joserfc.jwk import ECKey

from proxy.config import AssertionSettings
from proxy.errors import ConfigError

ALGORITHM = "ES256"


def load_key(pem: str, index: int) -> ECKey:
    try:
        key = ECKey.import_key(pem)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            [f"assertion.signing_keys[{index}]: not a PEM EC P-256 private key ({exc})"]
        ) from None
    if key.as_dict(private=False).get("crv") != "P-256" or not key.is_private:
        raise ConfigError([f"assertion.signing_keys[{index}]: must be an EC P-256 private key"])
    return key


class AssertionSigner:
    def __init__(self, settings: AssertionSettings, audience: str) -> None:
        keys = [load_key(s.reveal(), i) for i, s in enumerate(settings.signing_keys)]
        self.ephemeral = not keys
        self._keys = keys or [ECKey.generate_key("P-256")]
        self._signing = self._keys[0]
        self._kid = self._signing.thumbprint()
        self.audience = audience
        self.issuer = settings.issuer
        self.lifetime = settings.lifetime
        self._cache: dict[tuple[Any, ...], tuple[str, float]] = {}

    def jwks(self) -> dict[str, Any]:
        keys = []
        for key in self._keys:
            public = dict(key.as_dict(private=False))
            public.update({"kid": key.thumbprint(), "use": "sig", "alg": ALGORITHM})
            keys.append(public)
        return {"keys": keys}

    def assertion(self, claims: dict[str, Any]) -> str:
        """A signed JWT with these claims (plus iss, aud, iat, exp), reused while fresh."""
        now = time.time()
        cache_key = tuple(sorted((k, str(v)) for k, v in claims.items()))
        cached = self._cache.get(cache_key)
        if cached is not None and cached[1] - self.lifetime / 4 > now:
            return cached[0]
        expires = now + self.lifetime
        payload = {
            **claims,
            "iss": self.issuer,
            "aud": self.audience,
            "iat": int(now),
            "nbf": int(now) - 5,
            "exp": int(expires),
        }
        token = jwt.encode(
            {"alg": ALGORITHM, "kid": self._kid, "typ": "JWT"}, payload, self._signing
        )
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[cache_key] = (token, expires)
        return token

    def forget(self, user_key: str) -> None:
        for key in [k for k in self._cache if ("sub", user_key) in k]:
            del self._cache[key]

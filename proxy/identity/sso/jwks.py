"""The IdP's signing keys for OIDC id_tokens: discovery, the JWKS, and when to refetch.

Keys come only from the configured issuer's discovery document (or `jwks_url`), over TLS
with redirects not followed. An unknown `kid` may be a key rotation or a forgery, so it
triggers a refetch at most once per interval; a failed fetch keeps the keys already known
and is shared by the sign-ins that follow, so an outage or a flood of made-up kids never
becomes a flood of requests to the IdP.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import ssl
import time
from collections.abc import Callable
from typing import Any

import httpx
from joserfc import jwk
from joserfc.errors import JoseError

from proxy.config import OidcEndpoint
from proxy.errors import ConfigError
from proxy.identity.sso import SignInRejected

__all__ = ["DEFAULT_JWKS_TTL", "JwksCache", "http_client_for", "shown"]

log = logging.getLogger("consent_proxy.sso")

MAX_DOCUMENT_BYTES = 1024 * 1024
DEFAULT_JWKS_TTL = 15 * 60.0
# An unknown kid may mean the IdP rotated its keys, or that someone made the kid up:
# refetch for it at most this often, so forged tokens cannot make us hammer the IdP.
DEFAULT_REFETCH_INTERVAL = 30.0
# After a failed fetch, concurrent and following sign-ins share the failure this long.
DEFAULT_RETRY_AFTER_FAILURE = 5.0
FETCH_TIMEOUT = httpx.Timeout(10.0, connect=5.0)


def http_client_for(endpoint: OidcEndpoint) -> httpx.AsyncClient:
    """The client that fetches the IdP's discovery document and keys.

    `ca_file` replaces the default trust store (a private CA signs the IdP's certificate).
    Redirects are not followed: key material comes from the configured URLs only.
    """
    verify: ssl.SSLContext | bool = True
    if endpoint.ca_file is not None:
        try:
            verify = ssl.create_default_context(cafile=str(endpoint.ca_file))
        except (ssl.SSLError, OSError) as exc:
            problem = f"cannot read it as PEM CA certificates ({exc})"
            raise ConfigError([f"ca_file {str(endpoint.ca_file)!r}: {problem}"]) from None
    return httpx.AsyncClient(
        verify=verify,
        timeout=FETCH_TIMEOUT,
        limits=httpx.Limits(max_connections=10, max_keepalive_connections=2),
        headers={"accept": "application/json", "user-agent": "consent-proxy"},
        follow_redirects=False,
    )


def shown(value: Any, limit: int = 80) -> str:
    """A value from the token, safe for a log line: quoted, escaped, cut short."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe(exc: httpx.HTTPError) -> str:
    detail = str(exc).strip()
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


class JwksCache:
    """The IdP's signing keys, fetched through discovery (or `jwks_url`) and kept a while.

    Keys are refetched when older than `ttl`, or for a kid they do not contain — at most
    once per `refetch_interval`. A failed fetch changes nothing cached: known keys go on
    verifying (a JWKS outage must not lock users out), and the failure is shared for
    `retry_after_failure` seconds so a burst of sign-ins does not become a burst of fetches.
    """

    def __init__(
        self,
        endpoint: OidcEndpoint,
        http_client: httpx.AsyncClient,
        *,
        ttl: float = DEFAULT_JWKS_TTL,
        refetch_interval: float = DEFAULT_REFETCH_INTERVAL,
        retry_after_failure: float = DEFAULT_RETRY_AFTER_FAILURE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.endpoint = endpoint
        self.ttl = ttl
        self.refetch_interval = refetch_interval
        self.retry_after_failure = retry_after_failure
        self.fetches = 0  # JWKS fetch attempts, for metrics and tests
        self._client = http_client
        self._clock = clock
        self._jwks_uri: str | None = endpoint.jwks_url
        self._keys: jwk.KeySet | None = None
        self._kids: frozenset[str] = frozenset()
        self._fetched_at = -math.inf
        self._attempted_at = -math.inf
        self._failure: str | None = None
        self._lock = asyncio.Lock()
        self._document: tuple[dict[str, Any], float] | None = None

    @property
    def discovery_url(self) -> str:
        return (
            self.endpoint.discovery_url
            or f"{self.endpoint.issuer}/.well-known/openid-configuration"
        )

    async def key_set(self, kid: str | None = None) -> jwk.KeySet:
        """Keys to verify a token whose header names `kid` (which may still be missing
        from them when a refetch for it is not allowed yet)."""
        if self._usable(kid):
            return self._current()
        async with self._lock:  # one fetch at a time; the others use its result
            if self._usable(kid):
                return self._current()
            if not self._may_fetch():
                return self._without_fetch(kid)
            try:
                await self._refresh()
            except SignInRejected:
                if not self._knows(kid):
                    raise
                log.warning(
                    "keeping the IdP keys fetched %.0f s ago: %s",
                    self._clock() - self._fetched_at,
                    self._failure,
                )
            return self._current()

    def _current(self) -> jwk.KeySet:
        if self._keys is None:
            raise SignInRejected("the IdP's keys have not been fetched")
        return self._keys

    def _knows(self, kid: str | None) -> bool:
        return self._keys is not None and (kid is None or kid in self._kids)

    def _without_fetch(self, kid: str | None) -> jwk.KeySet:
        if self._failure is not None and not self._knows(kid):
            waited = self._clock() - self._attempted_at
            raise SignInRejected(f"{self._failure} (failed {waited:.0f} s ago)")
        return self._current()  # with an unknown kid: the verifier will say so

    def _usable(self, kid: str | None) -> bool:
        fresh = self._keys is not None and self._clock() - self._fetched_at < self.ttl
        return fresh and (kid is None or kid in self._kids)

    def _may_fetch(self) -> bool:
        since = self._clock() - self._attempted_at
        if self._failure is not None:
            return since >= self.retry_after_failure
        stale = self._clock() - self._fetched_at >= self.ttl
        return self._keys is None or stale or since >= self.refetch_interval

    async def _refresh(self) -> None:
        self._attempted_at = self._clock()
        try:
            uri = self._jwks_uri or await self._discover()
            self.fetches += 1
            keys = _import_keys(await self._get_json(uri, "JWKS"), uri)
        except SignInRejected as exc:
            self._failure = exc.description
            raise
        self._jwks_uri = uri
        self._keys, self._kids = keys, frozenset(str(k.kid) for k in keys.keys)
        self._fetched_at, self._failure = self._clock(), None

    async def discovered(self) -> dict[str, Any]:
        """The IdP's discovery document, for its issuer; kept as long as the keys."""
        if self._document is not None and self._clock() - self._document[1] < self.ttl:
            return self._document[0]
        url = self.discovery_url
        document = await self._get_json(url, "discovery document")
        issuer = document.get("issuer")
        if issuer != self.endpoint.issuer:
            raise SignInRejected(
                f"the discovery document at {url} names the issuer {shown(issuer)}, not the "
                f"configured {self.endpoint.issuer!r}: fix sso issuer or discovery_url"
            )
        self._document = (document, self._clock())
        return document

    async def _discover(self) -> str:
        url = self.discovery_url
        document = await self.discovered()
        uri = document.get("jwks_uri")
        if not isinstance(uri, str) or not uri.startswith(("https://", "http://")):
            raise SignInRejected(f"the discovery document at {url} has no usable jwks_uri")
        if url.startswith("https://") and not uri.startswith("https://"):
            raise SignInRejected(f"the discovery document at {url} points to keys over plain HTTP")
        return uri

    async def _get_json(self, url: str, what: str) -> dict[str, Any]:
        body = bytearray()
        try:
            async with self._client.stream("GET", url) as response:
                if response.status_code != 200:
                    raise SignInRejected(f"the {what} at {url} answered {response.status_code}")
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_DOCUMENT_BYTES:
                        raise SignInRejected(f"the {what} at {url} is larger than 1 MiB")
        except httpx.HTTPError as exc:
            raise SignInRejected(f"cannot fetch the {what} from {url}: {_describe(exc)}") from None
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):
            raise SignInRejected(f"the {what} at {url} is not JSON") from None
        if not isinstance(document, dict):
            raise SignInRejected(f"the {what} at {url} is not a JSON object")
        return document


def _import_keys(document: dict[str, Any], url: str) -> jwk.KeySet:
    """The usable signature keys of a JWKS; keys we cannot read are skipped (RFC 7517 §5)."""
    entries = document.get("keys")
    if not isinstance(entries, list):
        raise SignInRejected(f"the JWKS at {url} has no 'keys' list")
    keys: list[jwk.Key] = []
    for entry in entries:
        # A symmetric key has no place in a public key set; an encryption key signs nothing.
        if not isinstance(entry, dict) or entry.get("kty") == "oct" or entry.get("use") == "enc":
            continue
        try:
            keys.append(jwk.import_key(entry))
        except (JoseError, ValueError, TypeError, KeyError):
            log.warning("ignoring a key the JWKS at %s publishes: it cannot be read", url)
    if not keys:
        raise SignInRejected(f"the JWKS at {url} holds no usable signature key")
    return jwk.KeySet(keys)

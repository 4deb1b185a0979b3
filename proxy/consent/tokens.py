"""Fresh access tokens for a user: an in-process cache, single-flight refresh, revocation.

The common request (a connected user whose access token has minutes left) is answered
from memory: no store read, no decryption, no lock. Otherwise one task per user and
process (the flight) loads the sealed msal cache; an access token with more than
`refresh_leeway` left is taken from it directly, never through msal, so the hot path
never queues for Microsoft. Only when the access token is about to expire does the flight
refresh it, under a lock in the store (`add` with an expiry), so that replicas never
redeem the same refresh token twice; a holder that crashed blocks nobody for longer than
the lock's expiry. The new cache is written with compare-and-set against the version
that was read (fencing): a holder whose lock ran out writes nothing.

Nobody waits long for a flight: a request whose previous token is still valid is answered
with it at once while the flight refreshes behind it; one that has no valid token waits
`expired_wait` seconds at most, then goes on without a token (logged, counted in
`consent_proxy_tokens_not_ready_total`), and the flight keeps going for the next request.

Failures never stop a request: a transient one keeps forwarding the still-valid token (or
none) and backs off; `invalid_grant` and its kin mark the user `reconsent_required`, drop
the dead tokens, and leave it to the policy whether the next sign-in prompts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from dataclasses import dataclass

from proxy.config import Settings
from proxy.consent.integration import TOKENS, Integration, Records
from proxy.microsoft import MicrosoftClient, MicrosoftError
from proxy.ops import metrics
from proxy.store import Store, StoreError
from proxy.store.vault import Vault, VaultError

log = logging.getLogger("consent_proxy.tokens")

LOCKS = "refresh-lock"
# How long an answer is reused in process before the store is asked again (bounds how
# late a disconnect or a refresh on another replica is noticed here) is `cache_seconds`.
NOT_CONNECTED_REUSE = 30.0
STORE_DOWN_REUSE = 5.0
LOCK_POLL = 0.05
UNAVAILABLE = "unavailable"  # the integration state when the store cannot be read
# States whose stored tokens are still forwarded: a grant that lacks scopes a rule now asks
# for (reconsent_required by scope drift) still serves what it covers until consent.
FORWARDED = ("connected", "reconsent_required")


@dataclass(frozen=True, slots=True)
class UserTokens:
    status: str
    access_token: str | None = None
    expires_at: float | None = None
    route: str | None = None
    ews_url: str | None = None
    reuse_until: float = 0.0

    @property
    def forwarded(self) -> bool:
        """Whether the connection state is one whose tokens are handed out."""
        return self.status in FORWARDED

    def usable(self, now: float) -> bool:
        return self.access_token is not None and (self.expires_at or 0) > now + 30


class TokenService:
    def __init__(
        self, settings: Settings, store: Store, vault: Vault, clients: dict[str, MicrosoftClient]
    ) -> None:
        self.settings = settings.tokens
        self.store = store
        self.vault = vault
        self.records = Records(store, vault)
        self.clients = clients
        self.default_app = next(iter(clients)) if clients else ""
        self._cache: dict[str, UserTokens] = {}
        self._flights: dict[str, asyncio.Future[UserTokens]] = {}
        # The still-valid token a flight found before it went to Microsoft: what a request
        # that cannot wait for the flight gets.
        self._fallback: dict[str, UserTokens] = {}
        self._backoff: dict[str, tuple[float, float]] = {}  # user -> (next try, delay)

    async def for_user(self, user_key: str) -> UserTokens:
        now = time.time()
        entry = self._cache.get(user_key)
        if entry is not None and entry.reuse_until > now:
            return entry
        flight = self._flights.get(user_key)
        if flight is None:
            flight = asyncio.ensure_future(self._load(user_key, entry))
            self._flights[user_key] = flight
            flight.add_done_callback(lambda _: self._landed(user_key))
        if entry is not None and entry.usable(now):
            return entry  # still valid: forwarded now, the flight refreshes behind it
        try:
            return await asyncio.wait_for(asyncio.shield(flight), self.settings.expired_wait)
        except TimeoutError:
            return self._not_ready(user_key, entry)

    def _landed(self, user_key: str) -> None:
        self._flights.pop(user_key, None)
        self._fallback.pop(user_key, None)

    def _not_ready(self, user_key: str, entry: UserTokens | None) -> UserTokens:
        fallback = self._fallback.get(user_key)
        if fallback is not None and fallback.usable(time.time()):
            return fallback
        log.warning(
            "no fresh token for %s within %gs (Microsoft slow?): forwarded without one",
            user_key,
            self.settings.expired_wait,
        )
        metrics.TOKENS_NOT_READY.inc()
        return UserTokens(status=entry.status if entry is not None else UNAVAILABLE)

    def invalidate(self, user_key: str) -> None:
        self._cache.pop(user_key, None)
        self._backoff.pop(user_key, None)

    # --- loading and refreshing -----------------------------------------------------------

    async def _load(self, user_key: str, previous: UserTokens | None) -> UserTokens:
        try:
            entry = await self._fetch(user_key, previous)
        except (StoreError, VaultError) as exc:
            log.warning("tokens for %s unavailable: %s", user_key, exc.description)
            keep = previous if previous is not None and previous.usable(time.time()) else None
            entry = UserTokens(
                status=keep.status if keep else UNAVAILABLE,
                access_token=keep.access_token if keep else None,
                expires_at=keep.expires_at if keep else None,
                route=keep.route if keep else None,
                ews_url=keep.ews_url if keep else None,
                reuse_until=time.time() + STORE_DOWN_REUSE,
            )
        self._cache[user_key] = entry
        return entry

    async def _fetch(self, user_key: str, previous: UserTokens | None) -> UserTokens:
        now = time.time()
        integration = await self.records.integration(user_key)
        if integration.status not in FORWARDED or not integration.account_id:
            return UserTokens(status=integration.status, reuse_until=now + NOT_CONNECTED_REUSE)
        waiting = self._backoff.get(user_key)
        if waiting is not None and waiting[0] > now and previous is not None:
            return _with(previous, reuse_until=min(waiting[0], now + self.settings.cache_seconds))
        sealed = await self.store.get(TOKENS, user_key)
        if sealed is None:
            return UserTokens(status="none", reuse_until=now + NOT_CONNECTED_REUSE)
        cache = self.vault.open(sealed, f"tokens:{user_key}").decode()
        stored = _from_cache(integration, cache)
        fresh = self._fresh(stored, now)
        if fresh is not None:  # valid for a while: no Microsoft, no msal, no lock
            self._backoff.pop(user_key, None)
            return fresh
        if stored is not None and stored.usable(now):
            self._fallback[user_key] = stored
        return await self._refresh_locked(integration, previous)

    def _fresh(self, stored: UserTokens | None, now: float) -> UserTokens | None:
        """The stored token, to reuse until refresh_leeway before it expires, if not yet."""
        if stored is None or stored.expires_at is None:
            return None
        fresh_until = stored.expires_at - self.settings.refresh_leeway
        if fresh_until <= now:
            return None
        return _with(stored, min(fresh_until, now + self.settings.cache_seconds))

    async def _refresh_locked(
        self, integration: Integration, previous: UserTokens | None
    ) -> UserTokens:
        user_key = integration.user_key
        holder = secrets.token_hex(16).encode()
        deadline = time.monotonic() + self.settings.lock_timeout
        while not await self.store.add(LOCKS, user_key, holder, ttl=self.settings.lock_timeout):
            # Someone (here or on another replica) is refreshing: wait for it, then use it.
            if time.monotonic() > deadline:
                log.warning(
                    "refresh lock for %s still held after %ss", user_key, self.settings.lock_timeout
                )
                return _stale(previous, "connected")
            await asyncio.sleep(LOCK_POLL)
            if await self.store.get(LOCKS, user_key) is None:
                return await self._fetch(user_key, previous)
        try:
            sealed = await self.store.get(TOKENS, user_key)  # again: it may have changed
            if sealed is None:
                return UserTokens(status="none", reuse_until=time.time() + NOT_CONNECTED_REUSE)
            cache = self.vault.open(sealed, f"tokens:{user_key}").decode()
            stored = _from_cache(integration, cache)
            fresh = self._fresh(stored, time.time())
            if fresh is not None:  # another replica refreshed it while we waited
                return fresh
            previous = previous or stored
            return await self._from_microsoft(integration, sealed, cache, holder)
        except MicrosoftError as exc:
            return await self._failed(integration, exc, previous)
        finally:
            await self.store.delete_if(LOCKS, user_key, holder)

    async def _from_microsoft(
        self,
        integration: Integration,
        sealed: bytes,
        cache: str,
        holder: bytes,
    ) -> UserTokens:
        user_key = integration.user_key
        client = self.clients.get(integration.app or self.default_app)
        if client is None:
            log.error("user %s is connected through unknown app %r", user_key, integration.app)
            return UserTokens(status="failed", reuse_until=time.time() + NOT_CONNECTED_REUSE)
        # Only tokens within refresh_leeway of expiry come here: force msal to refresh
        # even when its own (shorter) rule would still hand out the cached one.
        result = await client.refresh(
            cache, integration.account_id or "", integration.granted_scopes, force=True
        )
        if result.cache_changed and result.refreshed:
            if not await self.store.replace_if(
                LOCKS, user_key, holder, holder, ttl=self.settings.lock_timeout
            ):
                log.warning("refresh lock for %s expired mid-refresh: result dropped", user_key)
                return UserTokens(status="connected", reuse_until=time.time() + STORE_DOWN_REUSE)
            new = self.vault.seal(result.token_cache.encode(), f"tokens:{user_key}")
            if not await self.store.replace_if(TOKENS, user_key, sealed, new):
                log.warning(
                    "tokens for %s changed during refresh (fenced): result dropped", user_key
                )
            else:
                log.info("access token refreshed for %s", user_key)
                metrics.TOKEN_REFRESHES.labels("ok").inc()
        self._backoff.pop(user_key, None)
        now = time.time()
        return UserTokens(
            status=integration.status,
            access_token=result.access_token,
            expires_at=result.expires_at,
            route=integration.route,
            ews_url=integration.ews_url,
            reuse_until=min(
                result.expires_at - self.settings.refresh_leeway, now + self.settings.cache_seconds
            ),
        )

    async def _failed(
        self, integration: Integration, exc: MicrosoftError, previous: UserTokens | None
    ) -> UserTokens:
        user_key, error = integration.user_key, exc.error
        now = time.time()
        if error.kind in ("reconsent_required", "user_action", "blocked"):
            log.warning(
                "refresh for %s refused (%s): reconsent required", user_key, error.describe()
            )
            metrics.TOKEN_REFRESHES.labels("refused").inc()
            integration.status = "reconsent_required"
            integration.last_error_class, integration.last_error_code = error.kind, error.code
            integration.correlation_id = error.correlation_id
            await self.records.save_integration(integration)
            await self.records.delete_tokens(user_key)
            return UserTokens(status="reconsent_required", reuse_until=now + NOT_CONNECTED_REUSE)
        _, delay = self._backoff.get(user_key, (0.0, self.settings.retry_backoff / 2))
        delay = min(delay * 2, 600.0)
        self._backoff[user_key] = (now + delay, delay)
        metrics.TOKEN_REFRESHES.labels("failed").inc()
        level = logging.ERROR if error.kind == "config" else logging.WARNING
        log.log(
            level, "refresh for %s failed (%s): retry in %.0fs", user_key, error.describe(), delay
        )
        return _stale(previous, "connected", until=now + delay)


def _from_cache(integration: Integration, cache: str) -> UserTokens | None:
    """The stored access token, to keep forwarding while a refresh cannot happen."""
    cached = _cached_access_token(cache, integration.account_id or "")
    if cached is None:
        return None
    token, expires = cached
    return UserTokens(integration.status, token, expires, integration.route, integration.ews_url)


def _with(entry: UserTokens, reuse_until: float) -> UserTokens:
    return UserTokens(
        entry.status, entry.access_token, entry.expires_at, entry.route, entry.ews_url, reuse_until
    )


def _stale(previous: UserTokens | None, status: str, until: float | None = None) -> UserTokens:
    """What to forward while a refresh cannot happen: the old token while it is valid."""
    now = time.time()
    reuse = until if until is not None else now + STORE_DOWN_REUSE
    if previous is not None and previous.usable(now):
        return _with(previous, min(reuse, (previous.expires_at or now) - 30))
    return UserTokens(status=status, reuse_until=reuse)


def _cached_access_token(cache: str, account_id: str) -> tuple[str, float] | None:
    """The account's cached access token that lives longest, and its expiry."""
    try:
        entries = json.loads(cache).get("AccessToken", {})
        found = [
            (float(e.get("expires_on", 0)), str(e["secret"]))
            for e in entries.values()
            if isinstance(e, dict) and e.get("home_account_id") == account_id and "secret" in e
        ]
    except (ValueError, TypeError, AttributeError, KeyError):
        return None
    if not found:
        return None
    expires, secret = max(found)
    return secret, expires


def _access_token_expiry(cache: str, account_id: str) -> float:
    """The latest expiry among the account's cached access tokens (0 when none)."""
    cached = _cached_access_token(cache, account_id)
    return cached[1] if cached is not None else 0.0

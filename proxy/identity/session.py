"""The proxy's own session: a signed cookie naming a record in the store, bound to the
upstream app's session cookie.

- The cookie holds only a random session id, signed with itsdangerous (the first secret
  in `session.secrets` signs, all of them verify, so keys rotate without logging anyone
  out). HttpOnly, SameSite=Lax, Secure unless configured off for plain-HTTP localhost.
- The record holds who signed in (from a verified SignIn) and a keyed hash of the
  upstream's session cookie at that moment. A request whose upstream cookie does not hash
  to it — changed, missing — ends the proxy session; so does a response in which the
  upstream changes or clears its cookie, a request to a configured logout path, and an
  answer in which the app accepts a sign-in the proxy could not verify (sso/watch.py). A
  browser can never carry user A's proxy session into user B's upstream session.
- While the store is down (fail open): a session verified here before keeps counting, and
  one that starts during the outage is held in process (proxy.store.outage) and written
  when the store is back; its sign-in's replay key is checked there and then.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from email.utils import parsedate_to_datetime
from typing import Protocol

from itsdangerous import BadSignature, URLSafeTimedSerializer

from proxy.asgi import Message, Receive, Scope, Send
from proxy.config import SessionSettings, SsoSettings
from proxy.identity.sso import SignIn
from proxy.ops import metrics
from proxy.ops.logs import shown_user
from proxy.store import Store, StoreError
from proxy.store.outage import ledger_for

log = logging.getLogger("consent_proxy.session")

NAMESPACE = "session"
STATE_KEY = "consent_proxy"
SALT = "consent-proxy.session"
MAX_RECENT = 100_000
UNVERIFIED_SIGN_IN = "the app accepted a sign-in that could not be verified"
# Why sessions end, as counted in consent_proxy_sessions_ended_total (see ops.metrics).
END_REASONS = {
    "logout path": "logout",
    "upstream session changed": "upstream_changed",
    "upstream session cleared": "upstream_changed",
    "upstream session replaced": "upstream_changed",
    "a new sign-in": "new_sign_in",
    UNVERIFIED_SIGN_IN: "unverified_sign_in",
}


@dataclass(slots=True)
class Session:
    id: str
    user_key: str
    subject: str
    email: str | None
    name: str | None
    tenant_id: str | None
    object_id: str | None
    attributes: dict[str, list[str]]
    method: str
    issuer: str
    created: float
    expires: float
    binding: str

    def encode(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes) -> Session | None:
        try:
            return cls(**json.loads(raw))
        except (ValueError, TypeError):
            return None


def replay_id(sign_in: SignIn) -> str | None:
    """The key under which a sign-in's assertion is accepted once (None: nothing to check)."""
    if sign_in.replay_key is None:
        return None
    return f"{sign_in.method}:{sign_in.issuer}:{sign_in.replay_key}"


def user_key(sign_in: SignIn) -> str:
    """Who a user is across sign-ins: the linking key of an endpoint trusted for linking,
    else tenant + object id when known (Microsoft's own key), otherwise a hash of issuer
    and subject; never an email from an endpoint the admin has not trusted with it."""
    if sign_in.link:
        return sign_in.link
    if sign_in.tenant_id and sign_in.object_id:
        return f"{sign_in.tenant_id.lower()}.{sign_in.object_id.lower()}"
    digest = hashlib.sha256(f"{sign_in.issuer}\0{sign_in.subject}".encode()).hexdigest()
    return f"sub.{digest[:40]}"


@dataclass(slots=True)
class RequestState:
    """What the proxy knows about one request; shared by the middlewares in scope."""

    session: Session | None = None  # a live, bound session: the only one to act on
    sign_in: SignIn | None = None  # set by the sign-in watcher when one completes
    end_reason: str | None = None
    stale: Session | None = None  # a session this browser carried that must end


def request_state(scope: Scope) -> RequestState:
    state = scope.get(STATE_KEY)
    if not isinstance(state, RequestState):
        state = RequestState()
        scope[STATE_KEY] = state
    return state


class SessionCookie:
    """Signing, verifying and writing the proxy's cookie; hashing the upstream's."""

    def __init__(self, settings: SessionSettings) -> None:
        self.settings = settings
        keys = [s.reveal() for s in settings.secrets] or [secrets.token_urlsafe(32)]
        # itsdangerous signs with the last key and verifies with all.
        self._serializer = URLSafeTimedSerializer(list(reversed(keys)), salt=SALT)
        self._binding_keys = [
            hmac.new(k.encode(), b"upstream-binding", "sha256").digest() for k in keys
        ]

    def sign(self, session_id: str) -> str:
        return self._serializer.dumps(session_id)

    def unsign(self, value: str) -> str | None:
        try:
            session_id = self._serializer.loads(value, max_age=int(self.settings.lifetime))
        except BadSignature:
            return None
        return session_id if isinstance(session_id, str) else None

    def bind(self, upstream_value: str) -> str:
        return hmac.new(self._binding_keys[0], upstream_value.encode(), "sha256").hexdigest()

    def bound(self, binding: str, upstream_value: str | None) -> bool:
        if not upstream_value:
            return False
        return any(
            hmac.compare_digest(binding, hmac.new(k, upstream_value.encode(), "sha256").hexdigest())
            for k in self._binding_keys
        )

    def header(self, value: str, max_age: int) -> tuple[bytes, bytes]:
        s = self.settings
        parts = [f"{s.cookie_name}={value}", f"Path={s.cookie_path}", f"Max-Age={max_age}"]
        if s.cookie_domain:
            parts.append(f"Domain={s.cookie_domain}")
        if s.cookie_secure:
            parts.append("Secure")
        parts += ["HttpOnly", "SameSite=Lax"]
        return b"set-cookie", "; ".join(parts).encode("latin-1")

    def clearing_header(self) -> tuple[bytes, bytes]:
        return self.header("", 0)


def request_cookies(scope: Scope) -> dict[str, str]:
    """The Cookie header(s) as a dict; the first of a repeated name wins, as in browsers'
    most-specific-path-first order."""
    found: dict[str, str] = {}
    for name, value in scope.get("headers", ()):
        if name != b"cookie":
            continue
        for pair in value.decode("latin-1").split(";"):
            key, sep, val = pair.strip().partition("=")
            if sep and key and key not in found:
                found[key] = val.strip().strip('"')
    return found


def upstream_cookie_change(
    headers: list[tuple[bytes, bytes]], name: str
) -> tuple[bool, str | None]:
    """Whether the response sets cookie `name`, and its new value (None when cleared)."""
    changed, current = False, None
    prefix = name.encode("latin-1") + b"="
    for header, value in headers:
        if header != b"set-cookie" or not value.startswith(prefix):
            continue
        changed = True
        cookie = value.decode("latin-1")
        parts = [p.strip() for p in cookie.split(";")]
        current = parts[0][len(name) + 1 :].strip('"') or None
        if current is not None and _expired(parts[1:]):
            current = None
    return changed, current


def _expired(attributes: list[str]) -> bool:
    for attr in attributes:
        key, _, val = attr.partition("=")
        key = key.strip().lower()
        if key == "max-age":
            try:
                return int(val.strip()) <= 0
            except ValueError:
                return False
        if key == "expires":
            try:
                return parsedate_to_datetime(val.strip()).timestamp() <= time.time()
            except (TypeError, ValueError):
                return False
    return False


class SignInHook(Protocol):
    async def after_sign_in(
        self, state: RequestState, message: Message, headers: list[tuple[bytes, bytes]]
    ) -> None: ...


class SessionMiddleware:
    """Resolve the browser's proxy session; create, keep or end it as the response says.

    When a session starts for a verified sign-in, `on_sign_in` (the consent journey) may
    still change the response — turn the app's redirect into one to Microsoft.
    """

    def __init__(
        self,
        app: Callable[[Scope, Receive, Send], Awaitable[None]],
        settings: SessionSettings,
        sso: SsoSettings,
        store: Store,
        on_sign_in: SignInHook | None = None,
    ) -> None:
        self.app = app
        self.on_sign_in = on_sign_in
        self.settings = settings
        self.store = store
        self.ledger = ledger_for(store)
        self.cookie = SessionCookie(settings)
        self.upstream_cookie = settings.upstream_cookie or ""
        # Sessions verified lately, by session id: the common request needs no store read.
        # Cookie strings verified before map to their session id without an HMAC; several
        # strings verify to one id (base64 need not be canonical), so the session itself
        # is cached, and forgotten, by id only. A session ended here is forgotten at once;
        # one ended on another replica is noticed within session.cache_seconds (at once if
        # the app's cookie changed).
        self._recent: dict[str, tuple[Session, str, float]] = {}
        self._ids: dict[str, str] = {}
        self.logout_paths = frozenset(sso.logout_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        state = request_state(scope)
        cookies = request_cookies(scope)
        ours = cookies.get(self.settings.cookie_name)
        upstream_value = cookies.get(self.upstream_cookie)
        if ours is not None:
            await self._resume(state, ours, upstream_value)
        if scope["path"] in self.logout_paths and (state.session or ours):
            state.end_reason = "logout path"
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                await self._on_response(state, message, upstream_value, had_cookie=ours is not None)
            await send(message)

        await self.app(scope, receive, send_wrapper)

    async def _resume(self, state: RequestState, cookie: str, upstream_value: str | None) -> None:
        if self.ledger.pending:  # sessions started during a store outage: write them
            self.ledger.settle_soon(self.store, self._forget)
        now = time.time()
        known_id = self._ids.get(cookie)
        recent = self._recent.get(known_id) if known_id is not None else None
        if recent is not None and recent[2] > now and recent[0].expires > now:
            if upstream_value == recent[1]:  # verified before: no store, no crypto
                state.session = recent[0]
                return
        session_id = self.cookie.unsign(cookie)
        if session_id is None:
            state.end_reason = "invalid or expired session cookie"
            return
        if self._held(state, cookie, session_id, upstream_value):
            return
        try:
            raw = await self.store.get(NAMESPACE, session_id)
        except StoreError as exc:
            self._through_outage(state, session_id, upstream_value, exc)
            return
        session = Session.decode(raw) if raw is not None else None
        if session is None or session.id != session_id:
            state.end_reason = "session not found"
        elif not self.cookie.bound(session.binding, upstream_value):
            state.end_reason = "upstream session changed"
            state.stale = session
        else:
            state.session = session
            self._remember(cookie, session, upstream_value or "")

    def _held(
        self, state: RequestState, cookie: str, session_id: str, upstream_value: str | None
    ) -> bool:
        """A session started during a store outage, not yet written: it counts (bound to
        the same upstream cookie) until it is."""
        raw = self.ledger.held(NAMESPACE, session_id)
        session = Session.decode(raw) if raw is not None else None
        if session is None or session.id != session_id:
            return False
        if not self.cookie.bound(session.binding, upstream_value):
            state.end_reason, state.stale = "upstream session changed", session
        else:
            state.session = session
            self._remember(cookie, session, upstream_value or "")
        return True

    def _through_outage(
        self, state: RequestState, session_id: str, upstream_value: str | None, exc: StoreError
    ) -> None:
        """The store is down: the session last verified here still counts (bound to the
        same upstream cookie), past session.cache_seconds."""
        recent = self._recent.get(session_id)
        if recent is not None and recent[0].expires > time.time() and upstream_value == recent[1]:
            state.session = recent[0]
            return
        log.warning("session lookup failed, forwarding without identity: %s", exc.description)

    def _remember(self, cookie: str, session: Session, upstream_value: str) -> None:
        if len(self._ids) >= MAX_RECENT:
            self._recent.clear()
            self._ids.clear()
        self._ids[cookie] = session.id
        until = time.time() + self.settings.cache_seconds
        self._recent[session.id] = (session, upstream_value, until)

    def _forget(self, session_id: str) -> None:
        # Every cookie string of this session now misses and goes back to the store.
        self._recent.pop(session_id, None)

    async def _on_response(
        self, state: RequestState, message: Message, upstream_value: str | None, had_cookie: bool
    ) -> None:
        headers: list[tuple[bytes, bytes]] = list(message.get("headers", ()))
        changed, new_value = upstream_cookie_change(headers, self.upstream_cookie)
        current_upstream = new_value if changed else upstream_value
        if state.sign_in is not None:
            await self._start(state, state.sign_in, current_upstream, headers)
            if state.session is not None and self.on_sign_in is not None:
                await self.on_sign_in.after_sign_in(state, message, headers)
        else:
            if state.session is not None and state.end_reason is None and changed:
                state.end_reason = (
                    "upstream session cleared" if new_value is None else "upstream session replaced"
                )
            if state.end_reason is not None and had_cookie:
                await self._end(state)
                headers.append(self.cookie.clearing_header())
        message["headers"] = headers

    async def _start(
        self,
        state: RequestState,
        sign_in: SignIn,
        upstream_value: str | None,
        headers: list[tuple[bytes, bytes]],
    ) -> None:
        if state.session is not None or state.stale is not None:
            await self._end(state, "a new sign-in")
        if not upstream_value:
            log.warning(
                "sign-in recognised but the upstream set no %r cookie to bind to: no proxy session",
                self.upstream_cookie,
            )
            return
        now = time.time()
        session = Session(
            id=secrets.token_urlsafe(32),
            user_key=user_key(sign_in),
            subject=sign_in.subject,
            email=sign_in.email,
            name=sign_in.name,
            tenant_id=sign_in.tenant_id,
            object_id=sign_in.object_id,
            attributes={k: list(v) for k, v in sign_in.attributes.items()},
            method=sign_in.method,
            issuer=sign_in.issuer,
            created=now,
            expires=now + self.settings.lifetime,
            binding=self.cookie.bind(upstream_value),
        )
        try:
            await self.store.put(
                NAMESPACE, session.id, session.encode(), ttl=self.settings.lifetime
            )
        except StoreError as exc:
            if not self.ledger.hold(
                NAMESPACE, session.id, session.encode(), self.settings.lifetime, replay_id(sign_in)
            ):
                log.error("could not store the new session: %s", exc.description)
                return
            log.warning("store unavailable, session held in process: %s", exc.description)
        state.session = session
        headers.append(
            self.cookie.header(self.cookie.sign(session.id), int(self.settings.lifetime))
        )
        if sign_in.link:
            await self._remember_link(session.user_key, sign_in)
        log.info(
            "session started for user %s (%s)",
            shown_user(session.user_key, session.email),
            session.method,
            extra={"user_key": session.user_key, "method": session.method},
        )

    async def _remember_link(self, key: str, sign_in: SignIn) -> None:
        from proxy.identity.links import remember

        try:
            await remember(self.store, key, sign_in)
        except StoreError as exc:
            log.warning("linked identity not recorded: %s", exc.description)

    async def _end(self, state: RequestState, reason: str | None = None) -> None:
        session = state.session or state.stale
        state.session = state.stale = None
        if session is not None:
            self._forget(session.id)
            self.ledger.drop(session.id)
        if session is None:
            log.info("session cookie dropped: %s", reason or state.end_reason)
            return
        reason = reason or state.end_reason or ""
        metrics.SESSIONS_ENDED.labels(END_REASONS.get(reason, "other")).inc()  # metrics
        try:
            await self.store.delete(NAMESPACE, session.id)
        except StoreError as exc:
            log.warning("could not delete session: %s", exc.description)
        log.info(
            "session ended for user %s: %s",
            shown_user(session.user_key, session.email),
            reason,
            extra={"user_key": session.user_key, "reason": reason},
        )

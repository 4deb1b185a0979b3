"""The sign-in watcher: an ASGI middleware on the app's SSO endpoints.

On a watched path it keeps a copy of the POSTed form (up to `sso.max_body_bytes`; the
upstream still receives every byte, unchanged, streamed as it came), starts verifying the
assertion while the upstream works, and looks at the upstream's answer: only a response
that matches `completed_when` (the app accepted the sign-in) AND a verified assertion
make a sign-in, recorded in the request state for the session middleware. On a
code-flow endpoint (`silent`), the app's completed-sign-in redirect becomes a hop through
the proxy's silent request to the same IdP (silent.py), whose answer makes the sign-in
at the proxy's own callback path. Anything else — a bad signature, a replay, an
oversized body, an app that said no — is logged with its reason and the app decides for
itself. One thing changes when the app accepts a sign-in the proxy cannot verify: the
browser's existing proxy session ends, since whoever it belonged to may no longer be the
one signed in to the app.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import ssl
import time
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

import httpx

from proxy.asgi import App, Message, Receive, Scope, Send
from proxy.config import (
    CompletedWhen,
    OidcEndpoint,
    SamlEndpoint,
    Settings,
    SsoEndpoint,
    UpstreamIdentityEndpoint,
)
from proxy.identity.session import (
    UNVERIFIED_SIGN_IN,
    RequestState,
    SessionCookie,
    replay_id,
    request_cookies,
    request_state,
    upstream_cookie_change,
)
from proxy.identity.sso import SignIn, SignInRejected, link_key
from proxy.identity.sso.asserted import sign_in_from_header, sign_in_from_whoami
from proxy.identity.sso.observed import note_get
from proxy.ops import metrics
from proxy.store import Store, StoreError
from proxy.store.outage import ledger_for

if TYPE_CHECKING:
    from proxy.identity.sso.oidc import OidcVerifier
    from proxy.identity.sso.saml import SamlVerifier
    from proxy.identity.sso.silent import SilentCheck


log = logging.getLogger("consent_proxy.sso")

REPLAY_NAMESPACE = "sso-replay"
FORM_FIELDS = {"saml": "SAMLResponse", "oidc": "id_token"}


def completed(rule: CompletedWhen, message: Message) -> bool:
    if message.get("status") not in rule.status:
        return False
    if rule.sets_cookie is None:
        return True
    changed, value = upstream_cookie_change(list(message.get("headers", ())), rule.sets_cookie)
    return changed and value is not None


class BufferedBody:
    """Replays what was read ahead, then hands on to the server's receive."""

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self.chunks: list[Message] = []
        self.size = 0
        self.complete = False

    async def read_ahead(self, limit: int) -> None:
        while self.size <= limit:
            message = await self._receive()
            self.chunks.append(message)
            if message["type"] != "http.request":
                return
            self.size += len(message.get("body", b""))
            if not message.get("more_body", False):
                self.complete = True
                return

    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.chunks if m["type"] == "http.request")

    async def receive(self) -> Message:
        if self.chunks:
            return self.chunks.pop(0)
        return await self._receive()


class SignInWatcher:
    def __init__(self, app: App, settings: Settings, store: Store) -> None:
        self.app = app
        self.settings = settings
        self.store = store
        self.endpoints: dict[str, SsoEndpoint] = {e.path: e for e in settings.sso.endpoints}
        self.saml: dict[str, SamlVerifier] = {}
        saml = [e for e in settings.sso.endpoints if isinstance(e, SamlEndpoint)]
        if saml:  # signxml and lxml are loaded only where SAML is watched
            from proxy.identity.sso.saml import SamlVerifier

            self.saml = {e.path: SamlVerifier(e, settings.sso.clock_skew) for e in saml}
        self.oidc: dict[str, OidcVerifier] = {}
        self.callbacks: dict[str, OidcEndpoint] = {
            e.silent.callback_path: e
            for e in settings.sso.endpoints
            if isinstance(e, OidcEndpoint) and e.silent is not None
        }
        self.silent: dict[str, SilentCheck] = {}
        self.cookie = SessionCookie(settings.session)
        self._clients: list[httpx.AsyncClient] = []
        self._http: dict[str, httpx.AsyncClient] = {}
        self._upstream_client: httpx.AsyncClient | None = None

    def _oidc_verifier(self, endpoint: OidcEndpoint) -> OidcVerifier:
        verifier = self.oidc.get(endpoint.path)
        if verifier is None:  # clients are bound to the running loop: make them there
            from proxy.identity.sso.jwks import http_client_for
            from proxy.identity.sso.oidc import OidcVerifier

            client = http_client_for(endpoint)
            self._clients.append(client)
            self._http[endpoint.path] = client
            if endpoint.silent is not None:  # the proxy's own tokens are for its own client id
                endpoint = endpoint.model_copy(update={"audience": endpoint.silent.client_id})
            verifier = self.oidc[endpoint.path] = OidcVerifier(
                endpoint, self.settings.sso.clock_skew, client
            )
        return verifier

    def _silent_check(self, endpoint: OidcEndpoint) -> SilentCheck:
        check = self.silent.get(endpoint.path)
        if check is None:  # authlib is loaded only where the code flow is watched
            from proxy.identity.sso.silent import SilentCheck

            verifier = self._oidc_verifier(endpoint)
            assert self.settings.public_url is not None and endpoint.silent is not None
            check = self.silent[endpoint.path] = SilentCheck(
                endpoint,
                self.settings.public_url,
                self.store,
                verifier,
                self._http[endpoint.path],
                self.cookie,
                self.settings.session.upstream_cookie or "",
            )
        return check

    def _whoami_client(self) -> httpx.AsyncClient:
        if self._upstream_client is None:
            upstream = self.settings.upstream
            self._upstream_client = httpx.AsyncClient(
                base_url=upstream.url,
                verify=_verify(upstream.ca_file, upstream.tls_verify),
                timeout=upstream.timeouts.read,
                trust_env=False,
            )
        return self._upstream_client

    async def aclose(self) -> None:
        for client in [*self._clients, *([self._upstream_client] if self._upstream_client else [])]:
            await client.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = self.endpoints.get(scope["path"]) if scope["type"] == "http" else None
        if endpoint is None:
            answered = self.callbacks.get(scope["path"]) if scope["type"] == "http" else None
            if answered is not None:
                await self._silent_answer(answered, scope, send)
            else:
                await self.app(scope, receive, send)
            return
        if isinstance(endpoint, OidcEndpoint) and endpoint.silent is not None:
            await self._watch_code(endpoint, scope, receive, send)
        elif isinstance(endpoint, UpstreamIdentityEndpoint):
            await self._watch_asserted(endpoint, scope, receive, send)
        else:
            await self._watch_posted(endpoint, scope, receive, send)

    # --- SAML / OIDC form_post ---------------------------------------------------------------

    async def _watch_posted(
        self, endpoint: SamlEndpoint | OidcEndpoint, scope: Scope, receive: Receive, send: Send
    ) -> None:
        if scope["method"] != "POST":
            if isinstance(endpoint, OidcEndpoint) and scope["method"] == "GET":
                await note_get(self.store, endpoint, scope.get("query_string", b""))
            await self.app(scope, receive, send)
            return
        buffered = BufferedBody(receive)
        limit = self.settings.sso.max_body_bytes
        await buffered.read_ahead(limit)
        verification: asyncio.Future[SignIn | None] | None = None
        if not buffered.complete:
            _rejected(endpoint, f"body larger than sso.max_body_bytes ({limit}) or incomplete")
            metrics.SIGN_INS.labels(endpoint.type, "rejected").inc()  # metrics
        else:
            verification = asyncio.ensure_future(
                self._verify_form(endpoint, scope, buffered.body())
            )
        state = request_state(scope)

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                if completed(endpoint.completed_when, message):
                    sign_in = None if verification is None else await verification
                    if verification is not None:  # an oversized body was counted already
                        metrics.sign_in_result(endpoint.type, sign_in)  # metrics
                    _settle(endpoint, state, sign_in)
                elif verification is not None:
                    verification.cancel()
                    metrics.SIGN_INS.labels(endpoint.type, "not_completed").inc()  # metrics
                    log.info(
                        "no sign-in at %s: the upstream answered %s, not a completed sign-in",
                        endpoint.path,
                        message.get("status"),
                    )
            await send(message)

        try:
            await self.app(scope, buffered.receive, watch)
        finally:
            if verification is not None and not verification.done():
                verification.cancel()

    async def _verify_form(
        self, endpoint: SamlEndpoint | OidcEndpoint, scope: Scope, body: bytes
    ) -> SignIn | None:
        try:
            value = _form_field(scope, body, FORM_FIELDS[endpoint.type])
            if isinstance(endpoint, SamlEndpoint):
                # Signature checks are CPU work: keep them off the event loop.
                sign_in = await asyncio.to_thread(self.saml[endpoint.path].verify, value)
            else:
                sign_in = await self._oidc_verifier(endpoint).verify(value)
            await self._check_replay(sign_in)
        except SignInRejected as exc:
            _rejected(endpoint, exc.description)
            return None
        return _linked(endpoint, sign_in)

    async def _check_replay(self, sign_in: SignIn) -> None:
        if sign_in.replay_key is None:
            return
        ttl = max((sign_in.replay_until or 0) - time.time(), 0) + self.settings.sso.clock_skew + 60
        key = replay_id(sign_in) or ""
        try:
            fresh = await self.store.add(REPLAY_NAMESPACE, key, b"1", ttl=ttl)
        except StoreError as exc:
            # Fail open, never accept a replay: this process's guard decides until the
            # store is back, and the key is written there then (proxy.store.outage).
            fresh = ledger_for(self.store).accept(key, REPLAY_NAMESPACE, key, ttl)
            log.warning("replay checked in process, store unavailable: %s", exc.description)
        if not fresh:
            raise SignInRejected("assertion already used (replay)")

    # --- OIDC code flow: the proxy's own silent request ------------------------------------

    async def _watch_code(
        self, endpoint: OidcEndpoint, scope: Scope, receive: Receive, send: Send
    ) -> None:
        state = request_state(scope)
        cookies = request_cookies(scope)

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                if completed(endpoint.completed_when, message):
                    await self._silent_check(endpoint).hop(message, cookies, state.session)
                else:
                    metrics.SIGN_INS.labels(endpoint.type, "not_completed").inc()  # metrics
            await send(message)

        await self.app(scope, receive, watch)

    async def _silent_answer(self, endpoint: OidcEndpoint, scope: Scope, send: Send) -> None:
        """The IdP's answer: a sign-in when verified; the browser goes on either way."""
        from proxy.identity.sso.silent import NOT_AN_ANSWER, respond

        check = self._silent_check(endpoint)
        if scope["method"] != "GET":
            await respond(send, 405, NOT_AN_ANSWER, [(b"allow", b"GET")])
            return
        answer = await check.answer(scope.get("query_string", b""), request_cookies(scope))
        sign_in = answer.sign_in
        if sign_in is not None:
            try:
                await self._check_replay(sign_in)
                sign_in = _linked(endpoint, sign_in)
            except SignInRejected as exc:
                _rejected(endpoint, exc.description)
                sign_in = None
        metrics.sign_in_result(endpoint.type, sign_in)  # metrics
        if answer.return_to is not None:
            # An answer to our own request: the app's sign-in completed, verified or not.
            _settle(endpoint, request_state(scope), sign_in)
        if answer.return_to is None:
            await respond(send, 400, NOT_AN_ANSWER)
        else:
            await respond(send, 303, b"", [(b"location", answer.return_to.encode("latin-1"))])

    # --- identity from the upstream -----------------------------------------------------------

    async def _watch_asserted(
        self, endpoint: UpstreamIdentityEndpoint, scope: Scope, receive: Receive, send: Send
    ) -> None:
        state = request_state(scope)
        header = endpoint.header.lower().encode("latin-1") if endpoint.header else None
        cookies = request_cookies(scope)

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                asserted = [v for n, v in headers if n.lower() == header] if header else []
                if header:
                    message["headers"] = [(n, v) for n, v in headers if n.lower() != header]
                if completed(endpoint.completed_when, message):
                    sign_in = await self._asserted(endpoint, scope, headers, asserted, cookies)
                    metrics.sign_in_result(endpoint.type, sign_in)  # metrics
                    _settle(endpoint, state, sign_in)
                else:
                    metrics.SIGN_INS.labels(endpoint.type, "not_completed").inc()  # metrics
            await send(message)

        await self.app(scope, receive, watch)

    async def _asserted(
        self,
        endpoint: UpstreamIdentityEndpoint,
        scope: Scope,
        headers: list[tuple[bytes, bytes]],
        asserted: list[bytes],
        cookies: dict[str, str],
    ) -> SignIn | None:
        try:
            if endpoint.header:
                if len(asserted) != 1:
                    raise SignInRejected(
                        f"expected one {endpoint.header} header, got {len(asserted)}"
                    )
                return _linked(endpoint, sign_in_from_header(endpoint, asserted[0]))
            cookie_name = self.settings.session.upstream_cookie or ""
            changed, value = upstream_cookie_change(headers, cookie_name)
            value = value if changed else cookies.get(cookie_name)
            if not value:
                raise SignInRejected(f"no {cookie_name!r} cookie to ask who-am-I with")
            host = dict(scope["headers"]).get(b"host", b"").decode("latin-1") or None
            found = await sign_in_from_whoami(
                endpoint, self._whoami_client(), cookie_name, value, host
            )
            return _linked(endpoint, found)
        except SignInRejected as exc:
            _rejected(endpoint, exc.description)
            return None


def _form_field(scope: Scope, body: bytes, name: str) -> str:
    content_type = b""
    for header, value in scope["headers"]:
        if header == b"content-type":
            content_type = value.split(b";")[0].strip().lower()
    if content_type != b"application/x-www-form-urlencoded":
        raise SignInRejected(f"not a form post (content type {content_type.decode('latin-1')!r})")
    try:
        fields = parse_qs(body.decode("ascii"), strict_parsing=False, max_num_fields=100)
    except (UnicodeDecodeError, ValueError) as exc:
        raise SignInRejected(f"form body cannot be read: {exc}") from None
    values = fields.get(name, [])
    if len(values) != 1:
        raise SignInRejected(f"expected one {name} field, got {len(values)}")
    return values[0]


def _settle(endpoint: SsoEndpoint, state: RequestState, sign_in: SignIn | None) -> None:
    """The app accepted a sign-in: it starts a proxy session when verified. When not, the
    browser is now someone the proxy cannot name, so whatever session it carried ends —
    the app may keep its cookie across sign-ins, which would otherwise keep it going."""
    if sign_in is not None:
        state.sign_in = sign_in
        return
    state.end_reason = UNVERIFIED_SIGN_IN
    session = state.session or state.stale
    if session is not None:
        log.warning(
            "the app accepted a sign-in at %s that could not be verified: "
            "ending this browser's session of user %s",
            endpoint.path,
            session.user_key,
        )


def _linked(endpoint: SsoEndpoint, sign_in: SignIn) -> SignIn:
    """The sign-in with its linking key, from an endpoint the admin trusts for linking."""
    link = link_key(endpoint.link_by, sign_in)
    return dataclasses.replace(sign_in, link=link) if link else sign_in


def _rejected(endpoint: SsoEndpoint, reason: str) -> None:
    log.warning("sign-in not recognised at %s (%s): %s", endpoint.path, endpoint.type, reason)


def _verify(ca_file: Path | None, tls_verify: bool) -> ssl.SSLContext | bool:
    return ssl.create_default_context(cafile=str(ca_file)) if ca_file else tls_verify

"""The OIDC authorization-code flow, confirmed by a silent request of the proxy's own.

On a code-flow callback the browser brings the app only `?code&state`: the app redeems
the code over its back channel and the proxy never sees an id_token. So when the app
answers as a completed sign-in, the proxy turns its redirect into one more hop: to the
same IdP, under the proxy's own client registration, with `prompt=none` (the IdP shows
no page), PKCE, a one-time `state` and a `nonce`. The IdP's session answers at once with
a code; the proxy redeems it and verifies the id_token like any other (`OidcVerifier`,
plus the nonce and `at_hash`), then sends the browser on to where the app was sending
it. Any other answer (`login_required`, `interaction_required`, an IdP that is down, a
token that fails a check) sends the browser on just the same, without a session: the
user lands in the app exactly as without the proxy, and the outcome is logged and counted.

The request in flight is kept in the store under a hash of `state` (never the value),
taken once, and bound to the app session cookie of the browser that started it: an
answer brought by another browser (an attacker's code, for the attacker's identity)
starts nothing. authlib builds the authorization and token requests (RFC 6749, RFC 7636);
the proxy's httpx client sends them, over TLS, redirects not followed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import time
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import parse_qs

import httpx
from authlib.oauth2.rfc6749.parameters import (  # type: ignore[import-untyped]
    prepare_grant_uri,
    prepare_token_request,
)
from authlib.oauth2.rfc7636 import create_s256_code_challenge  # type: ignore[import-untyped]

from proxy.asgi import Message, Send
from proxy.config import OidcEndpoint, SilentVerification
from proxy.identity.session import Session, SessionCookie, upstream_cookie_change
from proxy.identity.sso import SignIn, SignInRejected
from proxy.identity.sso.jwks import shown
from proxy.identity.sso.oidc import OidcVerifier
from proxy.ops import metrics
from proxy.store import Store, StoreError

__all__ = ["NOT_AN_ANSWER", "SILENT_STATES", "SilentCheck", "respond"]

log = logging.getLogger("consent_proxy.sso")

SILENT_STATES = "sso-silent"
MAX_QUERY_BYTES = 8 * 1024
MAX_STATE_LENGTH = 256
MAX_TOKEN_RESPONSE_BYTES = 256 * 1024
# The IdP's "cannot answer without showing a page" errors, counted by name.
NAMED_ERRORS = frozenset({"login_required", "interaction_required", "consent_required"})


@dataclass(slots=True)
class PendingCheck:
    """One silent request in flight, kept under a hash of its `state`."""

    endpoint: str
    nonce: str
    code_verifier: str
    return_to: str
    binding: str
    created: float


@dataclass(frozen=True, slots=True)
class Answer:
    """What the IdP's answer comes to: who signed in (when verified), and where the
    browser goes now (None: this was no answer to a request of ours)."""

    sign_in: SignIn | None
    return_to: str | None


class SilentCheck:
    """The silent request of one code-flow endpoint: `start` it, take its `answer`.

    Make it on the event loop that uses the client.
    """

    def __init__(
        self,
        endpoint: OidcEndpoint,
        public_url: str,
        store: Store,
        verifier: OidcVerifier,
        client: httpx.AsyncClient,
        cookie: SessionCookie,
        upstream_cookie: str,
    ) -> None:
        assert endpoint.silent is not None
        self.endpoint = endpoint
        self.config: SilentVerification = endpoint.silent
        self.redirect_uri = public_url + self.config.callback_path
        self.store = store
        self.verifier = verifier
        self.client = client
        self.cookie = cookie
        self.upstream_cookie = upstream_cookie
        secret = self.config.client_secret
        self._secret = secret.reveal() if secret is not None else None

    # --- the request ----------------------------------------------------------------------

    async def hop(self, message: Message, cookies: dict[str, str], session: Session | None) -> None:
        """Turn the app's completed-sign-in redirect into one through the silent request,
        on to where the app sends the browser; unchanged when the check cannot start."""
        headers = list(message.get("headers", ()))
        location = next((v for n, v in headers if n.lower() == b"location"), None)
        if not 300 <= int(message.get("status", 0)) < 400 or location is None:
            self._outcome("failed", "the app's completed sign-in is not a redirect")
            return
        changed, value = upstream_cookie_change(headers, self.upstream_cookie)
        value = value if changed else cookies.get(self.upstream_cookie)
        if not value:
            self._outcome("failed", f"the app set no {self.upstream_cookie!r} cookie")
            return
        # A hint only from this app session's own verified sign-in; never from the request.
        hint = session.email if session is not None and not changed else None
        url = await self.start(location.decode("latin-1"), value, hint)
        if url is not None:
            headers = [(n, v) for n, v in headers if n.lower() != b"location"]
            message["headers"] = [*headers, (b"location", url.encode("latin-1"))]
            message["status"] = 303

    async def start(
        self, return_to: str, upstream_value: str, login_hint: str | None
    ) -> str | None:
        """The IdP URL to send the browser to instead of `return_to`; None (and the
        reason logged) when the check cannot start: the user then goes on unchanged."""
        try:
            authorize, _ = await self._idp_endpoints()
        except SignInRejected as exc:
            self._outcome("failed", f"cannot start: {exc.description}")
            return None
        state, nonce = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        pending = PendingCheck(
            endpoint=self.endpoint.path,
            nonce=nonce,
            code_verifier=secrets.token_urlsafe(48),
            return_to=return_to,
            binding=self.cookie.bind(upstream_value),
            created=time.time(),
        )
        try:
            await self.store.put(
                SILENT_STATES,
                _state_key(state),
                json.dumps(asdict(pending)).encode(),
                ttl=self.config.state_lifetime,
            )
        except StoreError as exc:
            self._outcome("failed", f"cannot keep the request's state: {exc.description}")
            return None
        extra = {
            "nonce": nonce,
            "prompt": "none",
            "code_challenge": create_s256_code_challenge(pending.code_verifier),
            "code_challenge_method": "S256",
        }
        if login_hint:
            extra["login_hint"] = login_hint
        return str(
            prepare_grant_uri(
                authorize,
                self.config.client_id,
                "code",
                redirect_uri=self.redirect_uri,
                scope=self.config.scope,
                state=state,
                **extra,
            )
        )

    async def _idp_endpoints(self) -> tuple[str, str]:
        authorize, token = self.config.authorization_url, self.config.token_url
        if authorize is None or token is None:
            document = await self.verifier.keys.discovered()
            authorize = authorize or _endpoint_url(document, "authorization_endpoint")
            token = token or _endpoint_url(document, "token_endpoint")
        return authorize, token

    # --- the answer -----------------------------------------------------------------------

    async def answer(self, query: bytes, cookies: dict[str, str]) -> Answer:
        """The IdP's answer at the callback: never raises for anything the browser sent."""
        upstream_value = cookies.get(self.upstream_cookie)
        params = _query(query)
        state = params.get("state")
        pending = await self._take(state) if state else None
        if pending is None:
            self._outcome("unknown_state", "an answer for no request of ours (or used twice)")
            return Answer(None, None)
        if not self.cookie.bound(pending.binding, upstream_value):
            self._outcome("rejected", "the answer came in a browser whose app session is not "
                          "the one the request was made for")  # fmt: skip
            return Answer(None, None)
        error = params.get("error")
        if error is not None:
            outcome = error if error in NAMED_ERRORS else "other_error"
            self._outcome(outcome, f"the IdP answered {shown(error)}: no session this time")
            return Answer(None, pending.return_to)
        try:
            sign_in = await self._redeem(params.get("code"), pending)
        except SignInRejected as exc:
            self._outcome("rejected", exc.description)
            return Answer(None, pending.return_to)
        except _Unreachable as exc:
            self._outcome("failed", str(exc))
            return Answer(None, pending.return_to)
        self._outcome("verified", None)
        return Answer(sign_in, pending.return_to)

    async def _take(self, state: str) -> PendingCheck | None:
        if len(state) > MAX_STATE_LENGTH:
            return None
        try:
            raw = await self.store.pop(SILENT_STATES, _state_key(state))
        except StoreError as exc:
            log.warning("silent sign-in check: store unavailable: %s", exc.description)
            return None
        try:
            pending = PendingCheck(**json.loads(raw)) if raw is not None else None
        except (ValueError, TypeError):
            return None
        return pending if pending is not None and pending.endpoint == self.endpoint.path else None

    async def _redeem(self, code: str | None, pending: PendingCheck) -> SignIn:
        if not code or len(code) > 4096:
            raise SignInRejected("the answer carries no usable code")
        _, token_url = await self._idp_endpoints()
        fields: dict[str, Any] = {"code_verifier": pending.code_verifier}
        fields["client_id"] = self.config.client_id
        if self._secret is not None:
            fields["client_secret"] = self._secret
        body = prepare_token_request(
            "authorization_code", code=code, redirect_uri=self.redirect_uri, **fields
        )
        answer = await self._post(token_url, body)
        id_token, access_token = answer.get("id_token"), answer.get("access_token")
        if not isinstance(id_token, str):
            raise SignInRejected("the token endpoint answered without an id_token")
        return await self.verifier.verify(
            id_token,
            nonce=pending.nonce,
            access_token=access_token if isinstance(access_token, str) else None,
        )

    async def _post(self, url: str, body: str) -> dict[str, Any]:
        headers = {"content-type": "application/x-www-form-urlencoded"}
        try:
            response = await self.client.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            problem = f"the token endpoint cannot be reached: {type(exc).__name__}"
            raise _Unreachable(problem) from None
        if len(response.content) > MAX_TOKEN_RESPONSE_BYTES:
            raise SignInRejected("the token endpoint's answer is too large")
        try:
            document = response.json()
        except ValueError:
            document = None
        if response.status_code != 200 or not isinstance(document, dict):
            error = document.get("error") if isinstance(document, dict) else None
            raise SignInRejected(
                f"the token endpoint answered {response.status_code} ({shown(error)})"
            )
        return document

    def _outcome(self, outcome: str, reason: str | None) -> None:
        metrics.SILENT_CHECKS.labels(outcome).inc()  # metrics
        if reason is None:
            log.info("silent sign-in check at %s: verified", self.endpoint.path)
        else:
            log.warning("silent sign-in check at %s: %s", self.endpoint.path, reason)


NOT_AN_ANSWER = (
    b"<!doctype html><title>Sign-in check not recognised</title><h1>Sign-in check not "
    b"recognised</h1><p>This address takes the answer to a sign-in check the proxy made; "
    b"this one was already used, has expired, or was not made for this browser. "
    b'<a href="/">Continue to the app</a>.</p>'
)


async def respond(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """A small answer of the proxy's own at the callback path (never cached)."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/html; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
                (b"referrer-policy", b"no-referrer"),
                (b"content-security-policy", b"default-src 'none'"),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class _Unreachable(Exception):
    """The IdP did not answer the token request (network, TLS, timeout)."""


def _query(raw: bytes) -> dict[str, str]:
    """The callback's query; a name given twice, or a query too long, counts as absent."""
    if len(raw) > MAX_QUERY_BYTES:
        return {}
    try:
        parsed = parse_qs(raw.decode("ascii"), max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        return {}
    return {name: values[0] for name, values in parsed.items() if len(values) == 1}


def _endpoint_url(document: dict[str, Any], name: str) -> str:
    url = document.get(name)
    if not isinstance(url, str) or not url.startswith("https://"):
        raise SignInRejected(f"the IdP's discovery document has no https {name}")
    return url


def _state_key(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()

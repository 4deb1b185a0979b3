"""The ASGI application: an explicit, ordered composition of the proxy's parts.

A request passes, outermost first:
    RequestId           a request id for the upstream, the answer and every log line
    AccessLog           one line per request (unless logging.access_log is false)
    ProtectedHeaders    inbound copies of the headers the proxy sets are removed, always
    SessionMiddleware   who is this browser? (signed cookie -> store, bound to the
                        upstream's session cookie); starts/ends sessions on the response
    Reserved            the consent prefix (callback, connect page...) is answered by the
                        reserved pages (consent/pages.py); everything else goes on
    (forward-auth)      with `forward_auth.enabled`, ForwardAuth (outside the session) turns
                        an ingress's question at `<prefix>auth` into the request it asks
                        about, and AuthBranch (inside) sends it through IdentityHeaders to
                        AuthAnswer instead of the forwarder: one identity core, two data planes
    IdentityHeaders     a live session: who it is, the integration state, a fresh token,
                        the signed assertion (tokens.py keeps tokens fresh)
    SignInWatcher       on SSO endpoints only: verify the assertion, watch the answer
    Forwarder           stream to the upstream and back (WebSocketForwarder for sockets)
Without `sso.endpoints` the proxy is a plain pass-through: only the forwarders run.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from proxy.asgi import App, Receive, Scope, Send
from proxy.config import Settings, load_settings
from proxy.consent.overview import collect as overview
from proxy.consent.pages import ReservedPages
from proxy.consent.tokens import TokenService
from proxy.forward.forwarder import Forwarder
from proxy.forward.headers import ProtectedHeaders, RequestHeaderRules
from proxy.forward.websocket import WebSocketForwarder
from proxy.identity.assertion import AssertionSigner
from proxy.identity.forward_auth import AuthAnswer, AuthBranch, ForwardAuth
from proxy.identity.headers import IdentityHeaders
from proxy.identity.session import SessionMiddleware
from proxy.identity.sso.watch import SignInWatcher
from proxy.ops.access import AccessLog
from proxy.ops.broker import JWKS_PATH, Jwks, TokenBroker
from proxy.ops.broker import PREFIX as BROKER_PREFIX
from proxy.ops.listener import Route
from proxy.ops.logs import RequestId
from proxy.ops.overview import PATH as OVERVIEW_PATH
from proxy.ops.overview import OverviewPage
from proxy.store import Store, StoreError, StoreSchemaError, open_store
from proxy.store.vault import Vault

if TYPE_CHECKING:
    from proxy.consent.journey import ConsentJourney


log = logging.getLogger("consent_proxy")


class ConsentProxy:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        rules = RequestHeaderRules(settings)
        self.forwarder = Forwarder(settings, rules)
        self.websocket = WebSocketForwarder(settings, rules)
        self.store: Store | None = None
        self.watcher: SignInWatcher | None = None
        self.journey: ConsentJourney | None = None
        self.tokens: TokenService | None = None
        self.signer: AssertionSigner | None = None
        self._tasks: list[asyncio.Future[None]] = []
        http: App = self.forwarder
        sockets: App = self.websocket
        if settings.sso.endpoints:
            self.store = open_store(settings.store)
            self.signer = AssertionSigner(
                settings.assertion,
                settings.assertion.audience or settings.public_url or settings.upstream.url,
            )
            if settings.policy is not None:
                self.journey, self.tokens = _journey(settings, self.store)
            self.watcher = SignInWatcher(self.forwarder, settings, self.store)
            http = IdentityHeaders(self.watcher, settings.headers, self.tokens, self.signer)
            sockets = IdentityHeaders(self.websocket, settings.headers, self.tokens, self.signer)
            if self.journey is not None:
                http = Reserved(settings.consent.prefix, ReservedPages(self.journey), http)
            if settings.forward_auth.enabled:
                http = AuthBranch(self._auth_answer(), http)
            http = SessionMiddleware(http, settings.session, settings.sso, self.store, self.journey)
            if settings.forward_auth.enabled:
                auth_path = f"{settings.consent.prefix}auth"
                http = ForwardAuth(http, auth_path, settings.trusted_proxies)
            sockets = SessionMiddleware(sockets, settings.session, settings.sso, self.store)
        protected = settings.headers.model_dump().values()
        http = ProtectedHeaders(http, protected)
        if settings.logging.access_log:
            http = AccessLog(http)
        # Outermost: the upstream, the answer and every log line of a request carry its id.
        self.http: App = RequestId(http)
        self.sockets: App = RequestId(ProtectedHeaders(sockets, protected))

    def _auth_answer(self) -> App:
        """The forward-auth answer: the same identity headers as a forwarded request."""
        s = self.settings
        answer = AuthAnswer(
            s.headers.model_dump().values(),
            s.headers.token_expires,
            s.forward_auth.max_age,
            s.forward_auth.unconnected_max_age,
            s.tokens.refresh_leeway,
            s.assertion.lifetime if self.signer is not None else None,
        )
        return IdentityHeaders(answer, s.headers, self.tokens, self.signer)

    def ops_routes(self) -> list[Route]:
        """What the ops listener serves besides health and metrics: the JWKS of the
        identity assertion, the admins' overview page, and the token broker API when keys
        are configured."""
        routes: list[Route] = []
        if self.signer is not None:
            routes.append(Route(JWKS_PATH, Jwks(self.signer)))
        if self.store is not None:
            store = self.store
            routes.append(Route(OVERVIEW_PATH, OverviewPage(lambda now: overview(store, now))))
        keys = [k.reveal() for k in self.settings.broker.keys]
        if keys and self.tokens is not None and self.store is not None:
            broker = TokenBroker(keys, self.tokens, self.tokens.records.known)
            routes.append(Route(BROKER_PREFIX, broker))
        return routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self.http(scope, receive, send)
        elif kind == "websocket":
            await self.sockets(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if self.store is not None:
                    await self._first_ping(self.store)
                if self.journey is not None:
                    self.journey.policy_file.start()
                    self._tasks.append(asyncio.ensure_future(self.journey.count_waiting_tenants()))
                log.info("forwarding to %s", self.settings.upstream.url)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _first_ping(self, store: Store) -> None:
        """Create and migrate the store before traffic. Data this version cannot use is a
        config error; a store that is down or a disk that cannot be written must not keep
        the proxy from serving (readiness says why)."""
        try:
            await store.ping()
        except StoreError as exc:
            if isinstance(exc, StoreSchemaError):
                raise
            log.error(
                "store unavailable at start-up, serving without identity: %s", exc.description
            )

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self.forwarder.aclose()
        if self.journey is not None:
            await self.journey.policy_file.stop()
            await self.journey.aclose()
        if self.watcher is not None:
            await self.watcher.aclose()
        if self.store is not None:
            await self.store.aclose()


class Reserved:
    """Paths under the consent prefix are the proxy's own; everything else goes on."""

    def __init__(self, prefix: str, own: App, other: App) -> None:
        self.prefix = prefix
        self.own = own
        self.other = other

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if path.startswith(self.prefix) or path == self.prefix.rstrip("/"):
            await self.own(scope, receive, send)
        else:
            await self.other(scope, receive, send)


def _journey(settings: Settings, store: Store) -> tuple[ConsentJourney, TokenService]:
    from proxy.consent.journey import ConsentJourney
    from proxy.microsoft import MicrosoftClient
    from proxy.ops import metrics
    from proxy.policy.file import PolicyFile

    assert settings.policy is not None
    policy = PolicyFile(
        settings.policy,
        settings.microsoft_apps,
        on_reload=lambda outcome: metrics.POLICY_RELOADS.labels(outcome).inc(),
    )
    redirect_uri = f"{settings.public_url}{settings.consent.prefix}callback"
    consent = settings.consent
    clients = {
        name: MicrosoftClient(
            app,
            redirect_uri,
            threads=consent.msal_threads,
            redeem_threads=consent.redeem_threads,
            redeem_queue=consent.redeem_queue,
            redeem_wait=consent.redeem_wait,
        )
        for name, app in settings.microsoft_apps.items()
    }
    vault = Vault([k.reveal() for k in settings.tokens.encryption_keys])
    tokens = TokenService(settings, store, vault, clients)
    journey = ConsentJourney(settings, store, policy, clients, tokens.invalidate)
    return journey, tokens


def create_app(settings: Settings | None = None) -> ConsentProxy:
    """The app for a settings object, or for the file named by CONSENT_PROXY_CONFIG."""
    return ConsentProxy(settings if settings is not None else load_settings())

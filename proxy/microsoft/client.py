"""Entra ID for one app registration: authorize and admin-consent URLs, code redemption
and refresh, through msal.

msal is synchronous (requests), so every call that may reach Microsoft runs in a thread
and the event loop never waits on it. Refreshes share one pool; code redemptions have a
lane of their own with a bounded queue and a wait limit (lanes.py), so a person on the
callback page never queues behind other users' refreshes, and is told "Microsoft is slow"
rather than kept waiting. The authorize URL needs no network once authority discovery is
done: it is built on the event loop from one msal application kept for that purpose.

An msal application is built per operation, around that
user's own token cache, which is how msal isolates users in a web app; what makes that
cheap is the `http_cache` every application shares (msal keeps authority discovery there
for a day), and one pooled HTTP session.

Nothing here raises msal's or requests' exceptions: a failure is a `MicrosoftError`
carrying its classified `ErrorClass` (network failures and 5xx are `transient`, a TLS
failure is `config`).

Why the id_token claims are used for tid/oid binding only: msal decodes the id_token it
gets from the token endpoint and does not verify its signature, issuer or audience (since
msal 1.38 it validates nothing). That is acceptable under OpenID Connect for a token
received directly from the token endpoint over TLS, in answer to our own authenticated
code redemption, with PKCE and a nonce that msal does check. It tells us which Microsoft
account consented (`tid` + `oid`), so the caller can refuse tokens of an account other
than the SSO user's. It is not a sign-in: the proxy never authenticates anyone from it.

What the caller keeps, and where:
- the flow `start_authorization` returns (it holds the PKCE verifier and the nonce):
  server side, in the store, keyed by its `state`, for a few minutes; never in a cookie
  or a URL, never logged;
- `TokenResult.token_cache`, the serialized msal cache (it holds the refresh token): in the
  store, encrypted, per user (tid + oid), replaced whole after every redemption or
  refresh that changed it; `TokenResult.account_id` beside it, to refresh with.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import urlencode

import msal  # type: ignore[import-untyped]
import requests  # type: ignore[import-untyped,unused-ignore]

from proxy.config import MicrosoftApp
from proxy.microsoft.errors import ErrorKind, MicrosoftError, from_response
from proxy.microsoft.lanes import BoundedLane
from proxy.microsoft.msal_http import MsalHttpClient, SharedHttpCache
from proxy.microsoft.results import TokenResult, binding, cached_id_claims, token_result

__all__ = ["DEFAULT_THREADS", "DEFAULT_TIMEOUT", "MicrosoftClient"]

log = logging.getLogger(__name__)

DEFAULT_THREADS = 8
DEFAULT_TIMEOUT = 10.0
DEFAULT_REDEEM_THREADS = 4
DEFAULT_REDEEM_QUEUE = 32
DEFAULT_REDEEM_WAIT = 5.0
# The application that builds authorize URLs is rebuilt (discovery again, in the pool,
# while the old one keeps serving) this often, so a changed authority is noticed.
AUTHORIZER_MAX_AGE = 3600.0
GRAPH = "https://graph.microsoft.com/"
# msal adds these to every request and refuses them from the caller.
RESERVED_SCOPES = frozenset({"openid", "profile", "offline_access"})
PROMPTS = frozenset({"login", "none", "consent", "select_account"})
# Admin consent cannot be given for "everyone everywhere".
MULTI_TENANT_ALIASES = frozenset({"common", "consumers"})

R = TypeVar("R")

# msal warns on every flow whose response_mode is not form_post. The proxy wants `query`:
# a form_post callback is a cross-site POST, on which browsers drop the SameSite=Lax
# session cookie the callback needs. catch_warnings changes process-wide state, hence
# the lock (held only while msal builds a URL, no I/O).
_FORM_POST_ADVICE = r"response_mode='form_post' is recommended"
_QUERY_MODE_ACCEPTED = threading.Lock()


class _NoTokenEvents(logging.Filter):
    """msal's cache logs each token event at DEBUG with the tokens masked but the
    authorization code and the PKCE verifier in clear: that record is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("event=")


logging.getLogger("msal.token_cache").addFilter(_NoTokenEvents())


class MicrosoftClient:
    """One app registration (client id, credential, tenant, authority host). Every method
    returns its result or raises `MicrosoftError`, never msal's or requests' exceptions
    (`ValueError` only for a caller's own mistake: a reserved-only scope list, a prompt
    v2 does not know, a malformed tenant)."""

    def __init__(
        self,
        app: MicrosoftApp,
        redirect_uri: str,
        *,
        threads: int = DEFAULT_THREADS,
        timeout: float = DEFAULT_TIMEOUT,
        redeem_threads: int = DEFAULT_REDEEM_THREADS,
        redeem_queue: int = DEFAULT_REDEEM_QUEUE,
        redeem_wait: float = DEFAULT_REDEEM_WAIT,
    ) -> None:
        self.app = app
        self.redirect_uri = redirect_uri
        self.authority = f"{app.authority_host}/{app.tenant}"
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="msal")
        self._redeems = BoundedLane("code redemption", redeem_threads, redeem_queue, redeem_wait)
        verify = str(app.ca_file) if app.ca_file else True
        self._http = MsalHttpClient(verify, timeout, threads + redeem_threads)
        self._http_cache = SharedHttpCache()
        self._authorizer: tuple[Any, float] | None = None  # (msal application, built at)
        self._rebuilding: asyncio.Future[None] | None = None

    # --- the operations ----------------------------------------------------------------------

    async def start_authorization(
        self,
        scopes: Sequence[str],
        *,
        state: str,
        login_hint: str | None,
        domain_hint: str | None = None,
        prompt: str | None = None,
    ) -> dict[str, Any]:
        """msal's auth code flow: a dict with `auth_uri` (send the browser there), the PKCE
        verifier and the nonce. Keep the whole dict server side, keyed by `state`.

        openid/profile/offline_access are msal's to add, so they are dropped from `scopes`.
        """
        if prompt is not None and prompt not in PROMPTS:
            raise ValueError(f"prompt must be one of {', '.join(sorted(PROMPTS))}, got {prompt!r}")
        wanted = _requested(scopes)
        app = await self._authorizing_application()
        with _QUERY_MODE_ACCEPTED, warnings.catch_warnings():
            warnings.filterwarnings("ignore", _FORM_POST_ADVICE, UserWarning)
            # No I/O: msal only assembles the URL, PKCE and nonce (discovery is done).
            flow: dict[str, Any] = app.initiate_auth_code_flow(
                wanted,
                redirect_uri=self.redirect_uri,
                state=state,
                prompt=prompt,
                login_hint=login_hint,
                domain_hint=domain_hint,
                response_mode="query",
            )
        return flow

    async def _authorizing_application(self) -> Any:
        """The msal application authorize URLs are built with: discovered once in the pool,
        then reused on the event loop; renewed in the background when old."""
        if self._authorizer is None:
            await self._build_authorizer()
        assert self._authorizer is not None
        app, built = self._authorizer
        stale = time.monotonic() - built > AUTHORIZER_MAX_AGE
        if stale and (self._rebuilding is None or self._rebuilding.done()):
            self._rebuilding = asyncio.ensure_future(self._renew_authorizer())
        return app

    async def _build_authorizer(self) -> None:
        def discover() -> Any:
            return self._application(msal.SerializableTokenCache())

        app = await self._run("authorization", discover, refused=ErrorKind.CONFIG)
        self._authorizer = (app, time.monotonic())

    async def _renew_authorizer(self) -> None:
        try:
            await self._build_authorizer()
        except MicrosoftError:
            pass  # logged by _guarded; the previous application keeps serving

    async def redeem(
        self,
        flow: Mapping[str, Any],
        query_params: Mapping[str, str],
        *,
        scopes: Sequence[str] | None = None,
    ) -> TokenResult:
        """Redeem the code the callback brought (msal checks state, PKCE and nonce) into a
        fresh per-user cache; an error the callback brought is raised, classified. `scopes`
        narrows the token to one resource when the flow asked for several (AADSTS28000)."""
        wanted = _requested(scopes) if scopes else None

        def work() -> TokenResult:
            cache = msal.SerializableTokenCache()
            app = self._guarded("discovery", lambda: self._application(cache), ErrorKind.CONFIG)
            result = self._guarded(
                "code redemption",
                lambda: app.acquire_token_by_auth_code_flow(
                    dict(flow), dict(query_params), scopes=wanted
                ),
                ErrorKind.BAD_CALLBACK,
            )
            return self._redeemed(app, cache, result)

        return await self._run("code redemption", work, lane=self._redeems)

    async def refresh(
        self,
        serialized_cache: str,
        account_id: str,
        scopes: Sequence[str],
        *,
        force: bool = False,
    ) -> TokenResult:
        """An access token for `scopes`: from the cache while it has more than five minutes
        left (msal's rule), else by redeeming the refresh token, which Microsoft rotates.
        `force` skips the cached access token. Run one refresh per user at a time."""
        wanted = _requested(scopes)

        def work() -> TokenResult:
            cache = msal.SerializableTokenCache()
            try:
                cache.deserialize(serialized_cache)
            except ValueError:
                log.warning("a stored msal token cache is not readable: connect again")
                raise MicrosoftError.of(ErrorKind.RECONSENT_REQUIRED, "unreadable_cache") from None
            app = self._guarded("discovery", lambda: self._application(cache), ErrorKind.CONFIG)
            account = next(
                (a for a in app.get_accounts() if a.get("home_account_id") == account_id), None
            )
            if account is None:
                raise MicrosoftError.of(ErrorKind.RECONSENT_REQUIRED, "no_account")
            result = app.acquire_token_silent_with_error(wanted, account, force_refresh=force)
            if result is None:
                raise MicrosoftError.of(ErrorKind.RECONSENT_REQUIRED, "no_refresh_token")
            if "error" in result:
                raise MicrosoftError(from_response(result))
            claims = result.get("id_token_claims") or cached_id_claims(cache, account_id)
            tenant_id, object_id = binding(claims)
            return token_result(result, cache, tenant_id, object_id, account_id, wanted)

        return await self._run("refresh", work)

    def admin_consent_url(
        self, state: str, scopes: Sequence[str], *, tenant: str | None = None
    ) -> str:
        """Microsoft's v2 admin consent URL (no I/O). `tenant` (the admin's tenant id, when
        the proxy knows it) defaults to the configured one; never `common`: `organizations`
        stands in for it. Short Graph scope names are qualified, as this endpoint wants, and
        msal's reserved scopes are added so that users are not asked for them later."""
        tenant = tenant or self.app.tenant
        if tenant in MULTI_TENANT_ALIASES:
            tenant = "organizations"
        if not tenant.replace("-", "").replace(".", "").isalnum():
            raise ValueError(f"not a tenant id or domain: {tenant!r}")
        qualified = [s if "://" in s or s in RESERVED_SCOPES else GRAPH + s for s in scopes]
        wanted = list(dict.fromkeys([*qualified, "openid", "profile", "offline_access"]))
        query = urlencode(
            {
                "client_id": self.app.client_id,
                "scope": " ".join(wanted),
                "redirect_uri": self.redirect_uri,
                "state": state,
            }
        )
        return f"{self.app.authority_host}/{tenant}/v2.0/adminconsent?{query}"

    # --- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._redeems.close()
        self._http.close()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    async def __aenter__(self) -> MicrosoftClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # --- msal, in the worker threads -------------------------------------------------------

    def _application(self, cache: Any) -> Any:
        """An msal application around one user's cache; authority discovery comes from the
        shared http_cache after the first time.

        Instance discovery is off: msal would ask login.microsoftonline.com about any host
        it does not know (a sovereign cloud alias, a test stand-in), and when a refresh
        fails it would look up that host's aliases there too; our caches are only ever
        written through this one authority, so there are no aliases to find. Regional
        endpoints (ESTS-R, client credentials only) are off as well."""
        return msal.ConfidentialClientApplication(
            self.app.client_id,
            client_credential=self._credential(),
            authority=self.authority,
            token_cache=cache,
            http_client=self._http,
            http_cache=self._http_cache,
            instance_discovery=False,
            azure_region=False,
        )

    def _credential(self) -> str | dict[str, str]:
        """Read per use, so a secret or key rotated in its file or variable is picked up."""
        if self.app.certificate is not None:
            certificate = self.app.certificate
            credential = {
                "private_key": certificate.private_key.reveal(),
                "thumbprint": certificate.thumbprint,
            }
            if certificate.public_certificate is not None:
                credential["public_certificate"] = certificate.public_certificate.read_text()
            return credential
        assert self.app.client_secret is not None  # the config insists on one of the two
        return self.app.client_secret.reveal()

    def _redeemed(self, app: Any, cache: Any, result: Any) -> TokenResult:
        if not isinstance(result, dict):
            raise MicrosoftError.of(ErrorKind.UNKNOWN, "no_answer")
        if "error" in result:
            raise MicrosoftError(from_response(result))
        claims = result.get("id_token_claims") or {}
        tenant_id, object_id = binding(claims)
        if claims.get("aud") != self.app.client_id:
            raise MicrosoftError.of(ErrorKind.UNKNOWN, "id_token_for_another_client")
        account = next(
            (a for a in app.get_accounts() if a.get("local_account_id") == object_id), None
        )
        if account is None or "access_token" not in result:
            raise MicrosoftError.of(ErrorKind.UNKNOWN, "no_account")
        return token_result(result, cache, tenant_id, object_id, account["home_account_id"], ())

    def _guarded(self, what: str, work: Callable[[], R], refused: ErrorKind) -> R:
        """Run msal, its exceptions translated. `refused` is the kind of a ValueError or
        RuntimeError: msal raises those for a bad authority (discovery answered 4xx) and
        for a callback that does not answer the flow (state, nonce)."""
        try:
            return work()
        except MicrosoftError:
            raise
        except requests.exceptions.SSLError:
            log.error("%s: TLS to %s failed: check ca_file", what, self.app.authority_host)
            raise MicrosoftError.of(ErrorKind.CONFIG, "tls_error") from None
        except OSError as exc:  # requests' exceptions are OSErrors: DNS, refused, timeout
            log.warning("%s: Microsoft unreachable (%s)", what, type(exc).__name__)
            raise MicrosoftError.of(ErrorKind.TRANSIENT, "network_error") from None
        except msal.exceptions.MsalServiceError:  # a 5xx, or msal replaying a throttled one
            log.warning("%s: Microsoft answered with a server error", what)
            raise MicrosoftError.of(ErrorKind.TRANSIENT, "server_error") from None
        except (ValueError, RuntimeError) as exc:
            # The message may hold the state or id_token claims: log the type only.
            log.warning("%s refused by msal (%s)", what, type(exc).__name__)
            raise MicrosoftError.of(refused, "msal_refused") from None

    async def _run(
        self,
        what: str,
        work: Callable[[], R],
        refused: ErrorKind = ErrorKind.UNKNOWN,
        lane: BoundedLane | None = None,
    ) -> R:
        def guarded() -> R:
            try:
                return self._guarded(what, work, refused)
            except MicrosoftError:
                raise
            except Exception as exc:  # msal's internals: never let them reach the caller
                log.error("%s: unexpected %s from msal", what, type(exc).__name__)
                raise MicrosoftError.of(ErrorKind.UNKNOWN, "msal_failure") from None

        if lane is not None:
            return await lane.run(guarded)
        return await asyncio.get_running_loop().run_in_executor(self._executor, guarded)


def _requested(scopes: Sequence[str]) -> list[str]:
    wanted = [s for s in dict.fromkeys(scopes) if s and s not in RESERVED_SCOPES]
    if not wanted:
        raise ValueError("ask for at least one scope besides openid, profile, offline_access")
    return wanted

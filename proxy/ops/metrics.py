"""The proxy's Prometheus metrics: one registry, every metric named `consent_proxy_*`.

Labels are low-cardinality by rule: each label has a short, fixed set of values listed
below, and no label ever names a user, a tenant, a path or a host. Per-user questions are
for the logs (and `consent-proxy status`), not for the time series database.

Every known label combination is created at import, so each series exists from the first
scrape at 0: `rate()` and `increase()` see the first event as an increase, and dashboards
show 0 rather than "no data".

Processes and replicas: each process has its own registry, and `/metrics` on the ops
listener shows that process only. The ops listener runs when the proxy runs as one process
(`consent-proxy run`, the default `--workers 1`); with `--workers N` there is no ops
listener at all (see server.py). So: run one worker per container and scale with replicas;
Prometheus scrapes each replica and `sum()` adds them up. The one exception is
`consent_proxy_tenants_waiting_admin`, read from the shared store: every replica reports
the same number, so aggregate it with `max()`, not `sum()`.
"""

from __future__ import annotations

import itertools
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

from proxy.asgi import Message, Send

__all__ = [
    "CONSENT_OUTCOMES",
    "FORWARD_AUTH_ANSWERS",
    "POLICY_RELOADS",
    "PROMPTS",
    "REGISTRY",
    "REQUESTS",
    "SESSIONS_ENDED",
    "SIGN_INS",
    "SILENT_CHECKS",
    "SILENT_OUTCOMES",
    "STORE_ERRORS",
    "TENANTS_WAITING_ADMIN",
    "TOKEN_REFRESHES",
    "UPSTREAM_SECONDS",
    "count_response",
    "sign_in_result",
    "status_class",
    "watch_response",
]

# `*_created` series double the output and nobody here reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]

REGISTRY = CollectorRegistry(auto_describe=True)

STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
SIGN_IN_METHODS = ("saml", "oidc", "upstream")  # sso.endpoints[].type
SIGN_IN_OUTCOMES = ("recognised", "rejected", "not_completed")
PROMPT_MODES = ("never", "first_sign_in", "every_sign_in")  # policy `prompt`
FORWARD_AUTH_VALUES = ("identity", "anonymous", "refused")
PROMPT_ACTIONS = ("pass", "consent", "admin_approval_notice")  # policy Decision.action
# `connected` and `admin_consented` are successes; the rest are proxy.microsoft.ErrorKind
# values (the AADSTS classes), listed here so that this module imports nothing heavy.
CONSENT_OUTCOME_VALUES = (
    "connected",
    "admin_consented",
    "declined",
    "admin_approval_required",
    "consent_required",
    "reconsent_required",
    "user_action",
    "blocked",
    "config",
    "replay",
    "bad_callback",
    "transient",
    "unknown",
)
# ok: a new access token; failed: will be retried (Microsoft down, config); refused: the
# grant is dead (invalid_grant and the like), the user must connect again.
REFRESH_OUTCOMES = ("ok", "failed", "refused")
RELOAD_OUTCOMES = ("ok", "failed")
# proxy.identity.session.END_REASONS; `other` should stay at 0.
SESSION_END_REASONS = ("logout", "upstream_changed", "new_sign_in", "unverified_sign_in", "other")

# A local proxy's upstream answers in well under a millisecond up to its read timeout.
UPSTREAM_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)

REQUESTS = Counter(
    "consent_proxy_requests_total",
    "HTTP responses, by status class (1xx..5xx): the upstream's answers, and the proxy's "
    "own (4xx refusals, 502/504 when the upstream failed, its consent pages).",
    ["status"],
    registry=REGISTRY,
)
UPSTREAM_SECONDS = Histogram(
    "consent_proxy_upstream_seconds",
    "Seconds from sending a request to the upstream until its response head (or until "
    "the proxy gave up: connect failure, timeout).",
    buckets=UPSTREAM_BUCKETS,
    registry=REGISTRY,
)
SIGN_INS = Counter(
    "consent_proxy_sign_ins_total",
    "Requests at watched SSO endpoints, by endpoint type and outcome: recognised (the app "
    "accepted a verified assertion), rejected (the assertion failed verification), "
    "not_completed (the app did not accept the sign-in).",
    ["method", "outcome"],
    registry=REGISTRY,
)
SESSIONS_ENDED = Counter(
    "consent_proxy_sessions_ended_total",
    "Proxy sessions ended, by reason: logout (a logout path), upstream_changed (the app "
    "changed or cleared its session), new_sign_in, unverified_sign_in (the app accepted "
    "a sign-in the proxy could not verify).",
    ["reason"],
    registry=REGISTRY,
)
SILENT_CHECKS = Counter(
    "consent_proxy_silent_checks_total",
    "Silent OpenID requests after a code-flow sign-in, by outcome: verified, the IdP's "
    "error (login_required, interaction_required, consent_required, other_error), "
    "rejected (the answer failed verification), failed (the IdP could not be reached), "
    "unknown_state (an answer for no request of ours). Only verified starts a session.",
    ["outcome"],
    registry=REGISTRY,
)
SILENT_OUTCOMES = (
    "verified", "login_required", "interaction_required", "consent_required", "other_error",
    "rejected", "failed", "unknown_state",
)  # fmt: skip
PROMPTS = Counter(
    "consent_proxy_prompts_total",
    "Policy decisions at sign-in, by prompt mode and action (pass: the user is not asked; "
    "consent: sent to Microsoft's consent page; admin_approval_notice: told an admin must "
    "approve).",
    ["mode", "action"],
    registry=REGISTRY,
)
CONSENT_OUTCOMES = Counter(
    "consent_proxy_consent_outcomes_total",
    "Ends of consent journeys: connected, admin_consented, or the class of the Entra ID "
    "(AADSTS) error that ended it.",
    ["outcome"],
    registry=REGISTRY,
)
TOKEN_REFRESHES = Counter(
    "consent_proxy_token_refreshes_total",
    "Access token refreshes: ok, failed (retried later) or refused (the user must connect again).",
    ["outcome"],
    registry=REGISTRY,
)
TENANTS_WAITING_ADMIN = Gauge(
    "consent_proxy_tenants_waiting_admin",
    "Tenants in which an administrator's approval is needed before users can connect (from "
    "the shared store: aggregate replicas with max()).",
    registry=REGISTRY,
)
POLICY_RELOADS = Counter(
    "consent_proxy_policy_reloads_total",
    "Policy file reloads: ok, or failed (the previous policy stays in force).",
    ["outcome"],
    registry=REGISTRY,
)
FORWARD_AUTH_ANSWERS = Counter(
    "consent_proxy_forward_auth_answers_total",
    "Answers to an ingress's auth subrequests: identity (a signed-in user's headers), "
    "anonymous (none), refused (the asker is not in trusted_proxies: a misconfiguration).",
    ["answer"],
    registry=REGISTRY,
)
STORE_ERRORS = Counter(
    "consent_proxy_store_errors_total",
    "Store operations that failed (the proxy carried on without the store for them).",
    registry=REGISTRY,
)

# Fault isolation: what the proxy did instead of waiting on Microsoft or the store.
TOKENS_NOT_READY = Counter(
    "consent_proxy_tokens_not_ready_total",
    "Requests forwarded without an access token because its refresh did not finish within "
    "tokens.expired_wait (Microsoft slow or down).",
    registry=REGISTRY,
)
STORE_OUTAGE_SIGN_INS = Counter(
    "consent_proxy_store_outage_sign_ins_total",
    "Sign-ins during a store outage: held (accepted by the in-process replay guard, kept in "
    "memory until the store is back), settled (written to the store afterwards), "
    "replayed (found used elsewhere when settled: the session ended), refused (guard full).",
    ["outcome"],
    registry=REGISTRY,
)
STORE_PURGED = Counter(
    "consent_proxy_store_purged_total",
    "Expired rows deleted by the embedded store's periodic purge.",
    registry=REGISTRY,
)
OUTAGE_OUTCOMES = ("held", "settled", "replayed", "refused")


# Every label combination starts at zero, so a dashboard sees a series before its first event.
_LABEL_VALUES: tuple[tuple[Counter, tuple[tuple[str, ...], ...]], ...] = (
    (REQUESTS, (STATUS_CLASSES,)),
    (SIGN_INS, (SIGN_IN_METHODS, SIGN_IN_OUTCOMES)),
    (SESSIONS_ENDED, (SESSION_END_REASONS,)),
    (SILENT_CHECKS, (SILENT_OUTCOMES,)),
    (PROMPTS, (PROMPT_MODES, PROMPT_ACTIONS)),
    (CONSENT_OUTCOMES, (CONSENT_OUTCOME_VALUES,)),
    (TOKEN_REFRESHES, (REFRESH_OUTCOMES,)),
    (POLICY_RELOADS, (RELOAD_OUTCOMES,)),
    (STORE_OUTAGE_SIGN_INS, (OUTAGE_OUTCOMES,)),
    (FORWARD_AUTH_ANSWERS, (FORWARD_AUTH_VALUES,)),
)


def _initialise() -> None:
    for metric, values in _LABEL_VALUES:
        for labels in itertools.product(*values):
            metric.labels(*labels)


_initialise()
# The hot path skips the label lookup (a lock and a dict) for every response.
_BY_CLASS = tuple(REQUESTS.labels(name) for name in STATUS_CLASSES)


def _class_index(status: int) -> int:
    # A status outside 100-599 can only come from a broken upstream: count it as 5xx.
    return status // 100 - 1 if 100 <= status <= 599 else 4


def status_class(status: int) -> str:
    """The label value for a status: "2xx" for 204."""
    return STATUS_CLASSES[_class_index(status)]


def count_response(status: int) -> None:
    _BY_CLASS[_class_index(status)].inc()


def watch_response(send: Send) -> Send:
    """`send`, counting the response and timing its head from now (the upstream is asked
    right after this is called)."""
    started = time.perf_counter()

    async def watched(message: Message) -> None:
        if message["type"] == "http.response.start":
            UPSTREAM_SECONDS.observe(time.perf_counter() - started)
            count_response(message["status"])
        await send(message)

    return watched


def sign_in_result(method: str, sign_in: object | None) -> None:
    """A completed sign-in at an SSO endpoint: recognised when verified, else rejected."""
    SIGN_INS.labels(method, "recognised" if sign_in is not None else "rejected").inc()

"""proxy.microsoft.client: MicrosoftClient driving real msal over real HTTPS against the
Microsoft stand-in (trusting a trustme CA), with a browser-like httpx client on the
authorize and admin-consent pages (the `standin` and `browser` fixtures)."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from proxy.config import MicrosoftApp
from proxy.demo.idp import DEMO_USERS as SSO_USERS
from proxy.demo.microsoft import (
    DEMO_APP_ID,
    DEMO_APP_SECRET,
    EXCHANGE_ONLINE,
    FABRIKAM,
    demo_app,
)
from proxy.microsoft import (
    AdminConsent,
    ErrorClass,
    ErrorKind,
    MicrosoftClient,
    MicrosoftError,
    TokenResult,
    admin_consent_outcome,
)

from .fixtures.pages import title
from .fixtures.standin import ADMIN, ALICE, BOB, CALLBACK, Browser, StandIn, callback_query
from .servers import free_port

T = TypeVar("T")
SCOPES = ["Calendars.Read", "Contacts.Read"]
ALICE_SSO = SSO_USERS[0]


def run(awaitable: Awaitable[T]) -> T:
    async def main() -> T:
        return await awaitable

    return asyncio.run(main())


def failure(awaitable: Awaitable[Any]) -> ErrorClass:
    with pytest.raises(MicrosoftError) as caught:
        run(awaitable)
    return caught.value.error


def registration(standin: StandIn, **changes: Any) -> MicrosoftApp:
    fields: dict[str, Any] = {
        "client_id": DEMO_APP_ID,
        "client_secret": {"value": DEMO_APP_SECRET},
        "tenant": "organizations",
        "authority_host": standin.url,
        "ca_file": standin.ca_file,
        **changes,
    }
    return MicrosoftApp.model_validate({k: v for k, v in fields.items() if v is not None})


@pytest.fixture
def client(standin: StandIn) -> Iterator[MicrosoftClient]:
    microsoft = MicrosoftClient(registration(standin), CALLBACK, threads=4, timeout=5)
    yield microsoft
    microsoft.close()


def start(client: MicrosoftClient, user: str = ALICE, **options: Any) -> dict[str, Any]:
    scopes = options.pop("scopes", SCOPES)
    return run(
        client.start_authorization(scopes, state=f"state-{user}", login_hint=user, **options)
    )


def connect(client: MicrosoftClient, browser: Browser, user: str = ALICE) -> TokenResult:
    flow = start(client, user)
    return run(client.redeem(flow, browser.consent(flow["auth_uri"])))


def test_start_authorization_builds_a_pkce_request(
    client: MicrosoftClient, standin: StandIn
) -> None:
    flow = start(client, scopes=["Calendars.Read", "offline_access", "openid", "Calendars.Read"])
    assert flow["state"] == f"state-{ALICE}"
    url = urlsplit(flow["auth_uri"])
    assert (
        f"{url.scheme}://{url.netloc}{url.path}"
        == f"{standin.url}/organizations/oauth2/v2.0/authorize"
    )
    query = dict(parse_qsl(url.query))
    assert query["client_id"] == DEMO_APP_ID and query["redirect_uri"] == CALLBACK
    assert query["code_challenge_method"] == "S256" and query["code_challenge"]
    assert query["login_hint"] == ALICE and query["response_mode"] == "query"
    assert query["state"] == flow["state"] and query["nonce"]
    assert sorted(query["scope"].split()) == [
        "Calendars.Read",
        "offline_access",
        "openid",
        "profile",
    ]
    json.dumps(flow)  # the caller stores it as is


@pytest.mark.parametrize(
    ("scopes", "prompt"), [(["openid", "offline_access"], None), (SCOPES, "admin_consent")]
)
def test_start_authorization_refuses_caller_mistakes(
    client: MicrosoftClient, scopes: list[str], prompt: str | None
) -> None:
    with pytest.raises(ValueError):
        start(client, scopes=scopes, prompt=prompt)


def test_consent_and_redeem(client: MicrosoftClient, browser: Browser, standin: StandIn) -> None:
    result = connect(client, browser)
    assert (result.tenant_id, result.object_id) == (ALICE_SSO.tenant_id, ALICE_SSO.object_id)
    assert result.account_id == f"{ALICE_SSO.object_id}.{ALICE_SSO.tenant_id}"
    assert result.username == ALICE and result.refreshed and result.cache_changed
    assert {"Calendars.Read", "Contacts.Read"} <= set(result.scopes)
    assert 3500 < result.expires_at - dt.datetime.now(dt.UTC).timestamp() <= 3600
    cache = json.loads(result.token_cache)
    assert len(cache["RefreshToken"]) == 1 and len(cache["Account"]) == 1
    assert result.access_token not in repr(result) and "RefreshToken" not in repr(result)
    events = browser.http.get(
        f"{standin.provider.graph_url}/me/events",
        headers={"authorization": f"Bearer {result.access_token}"},
    )
    assert events.status_code == 200 and len(events.json()["value"]) == 3


def test_refresh_from_the_cache_asks_nobody(
    client: MicrosoftClient, browser: Browser, standin: StandIn
) -> None:
    result = connect(client, browser)
    requests_before = standin.provider.token_requests
    again = run(client.refresh(result.token_cache, result.account_id, SCOPES))
    assert not again.refreshed and not again.cache_changed
    assert again.access_token == result.access_token
    assert (again.tenant_id, again.object_id) == (result.tenant_id, result.object_id)
    assert standin.provider.token_requests == requests_before


def refresh_tokens(token_cache: str) -> list[str]:
    return [entry["secret"] for entry in json.loads(token_cache)["RefreshToken"].values()]


def test_refresh_rotates_the_refresh_token(
    client: MicrosoftClient, browser: Browser, standin: StandIn
) -> None:
    standin.provider.access_token_lifetime = 120  # under msal's five minutes: refresh for real
    result = connect(client, browser)
    [old] = refresh_tokens(result.token_cache)
    fresh = run(client.refresh(result.token_cache, result.account_id, SCOPES))
    assert fresh.refreshed and fresh.cache_changed and fresh.access_token != result.access_token
    assert (fresh.tenant_id, fresh.object_id) == (ALICE_SSO.tenant_id, ALICE_SSO.object_id)
    [new] = refresh_tokens(fresh.token_cache)
    assert new != old
    assert not standin.provider.refresh_token_alive(old)
    assert standin.provider.refresh_redemptions[ALICE] == 1
    # The store must keep the new cache: the old one holds a dead refresh token.
    stale = failure(client.refresh(result.token_cache, result.account_id, SCOPES))
    assert (stale.kind, stale.code) == (ErrorKind.RECONSENT_REQUIRED, 50173)
    assert run(client.refresh(fresh.token_cache, fresh.account_id, SCOPES)).refreshed


def test_forced_refresh(client: MicrosoftClient, browser: Browser, standin: StandIn) -> None:
    result = connect(client, browser)
    fresh = run(client.refresh(result.token_cache, result.account_id, SCOPES, force=True))
    assert fresh.refreshed and standin.provider.refresh_redemptions[ALICE] == 1


def test_declined_consent(client: MicrosoftClient, browser: Browser) -> None:
    flow = start(client)
    error = failure(client.redeem(flow, browser.consent(flow["auth_uri"], decision="cancel")))
    assert (error.kind, error.code, error.error) == (ErrorKind.DECLINED, 65004, "access_denied")


def test_need_admin_approval(client: MicrosoftClient, browser: Browser) -> None:
    flow = start(client, BOB)
    page = browser.open(flow["auth_uri"])
    assert title(page) == "Need admin approval"
    error = failure(client.redeem(flow, callback_query(browser.submit(page, decision="back"))))
    assert (error.kind, error.code) == (ErrorKind.ADMIN_APPROVAL_REQUIRED, 65001)


def test_admin_consent_then_a_user_connects_without_a_consent_screen(
    client: MicrosoftClient, browser: Browser
) -> None:
    url = client.admin_consent_url("admin-state", SCOPES, tenant=FABRIKAM.id)
    query = browser.consent(url, user=ADMIN)
    assert query["state"] == "admin-state"
    assert admin_consent_outcome(query) == AdminConsent(
        FABRIKAM.id,
        (
            "https://graph.microsoft.com/Calendars.Read",
            "https://graph.microsoft.com/Contacts.Read",
            "openid", "profile", "offline_access",
        ),
    )  # fmt: skip
    flow = start(client, BOB)
    query = callback_query(browser.open(flow["auth_uri"]))  # straight back: no screen
    result = run(client.redeem(flow, query))
    assert result.tenant_id == FABRIKAM.id


def test_admin_consent_by_a_non_admin(client: MicrosoftClient, browser: Browser) -> None:
    query = browser.consent(client.admin_consent_url("s", SCOPES), user=BOB)
    with pytest.raises(MicrosoftError) as caught:
        admin_consent_outcome(query)
    assert (caught.value.error.kind, caught.value.error.code) == (
        ErrorKind.ADMIN_APPROVAL_REQUIRED,
        90094,
    )


def test_admin_consent_outcome_needs_the_flag_and_a_tenant() -> None:
    for query in ({"tenant": "x"}, {"admin_consent": "True"}, {}):
        with pytest.raises(MicrosoftError) as caught:
            admin_consent_outcome(query)
        assert caught.value.error.kind == ErrorKind.BAD_CALLBACK


@pytest.mark.parametrize(
    ("tenant", "override", "expected"),
    [
        ("organizations", None, "organizations"),
        ("common", None, "organizations"),
        ("contoso.example", None, "contoso.example"),
        ("common", FABRIKAM.id, FABRIKAM.id),
        ("organizations", "common", "organizations"),
    ],
)
def test_admin_consent_url_never_says_common(
    standin: StandIn, tenant: str, override: str | None, expected: str
) -> None:
    microsoft = MicrosoftClient(registration(standin, tenant=tenant), CALLBACK, threads=1)
    try:
        url = urlsplit(
            microsoft.admin_consent_url(
                "st", ["Calendars.Read", f"{EXCHANGE_ONLINE}/EWS.AccessAsUser.All"], tenant=override
            )
        )
    finally:
        microsoft.close()
    assert url.path == f"/{expected}/v2.0/adminconsent"
    query = dict(parse_qsl(url.query))
    assert query == {
        "client_id": DEMO_APP_ID,
        "scope": "https://graph.microsoft.com/Calendars.Read "
        "https://outlook.office365.com/EWS.AccessAsUser.All openid profile offline_access",
        "redirect_uri": CALLBACK,
        "state": "st",
    }


def test_admin_consent_url_refuses_a_strange_tenant(client: MicrosoftClient) -> None:
    with pytest.raises(ValueError):
        client.admin_consent_url("s", SCOPES, tenant="evil.example/../x")


@pytest.mark.parametrize(
    ("knob", "kind", "code"),
    [
        ("revoke_user", ErrorKind.RECONSENT_REQUIRED, 50173),
        ("expire_refresh_tokens", ErrorKind.RECONSENT_REQUIRED, 70008),
        ("require_mfa", ErrorKind.USER_ACTION, 50076),
        ("block", ErrorKind.BLOCKED, 53003),
    ],
)
def test_refresh_failures_are_classified(
    client: MicrosoftClient,
    browser: Browser,
    standin: StandIn,
    knob: str,
    kind: ErrorKind,
    code: int,
) -> None:
    result = connect(client, browser)
    getattr(standin.provider, knob)(ALICE)
    error = failure(client.refresh(result.token_cache, result.account_id, SCOPES, force=True))
    assert (error.kind, error.code, error.error) == (kind, code, "invalid_grant")
    assert error.correlation_id and error.trace_id


def test_revoked_consent_means_reconsent(
    client: MicrosoftClient, browser: Browser, standin: StandIn
) -> None:
    result = connect(client, browser)
    standin.provider.revoke_consent(DEMO_APP_ID, ALICE)
    error = failure(client.refresh(result.token_cache, result.account_id, SCOPES, force=True))
    assert (error.kind, error.code) == (ErrorKind.RECONSENT_REQUIRED, 65001)


def test_a_code_redeemed_twice_is_a_replay(client: MicrosoftClient, browser: Browser) -> None:
    flow = start(client)
    query = browser.consent(flow["auth_uri"])
    run(client.redeem(flow, query))
    error = failure(client.redeem(flow, query))
    assert (error.kind, error.code) == (ErrorKind.REPLAY, 54005)


def test_a_callback_for_another_flow_is_refused(client: MicrosoftClient, browser: Browser) -> None:
    flow = start(client)
    query = browser.consent(flow["auth_uri"])
    error = failure(client.redeem(flow, {**query, "state": "forged"}))
    assert error.kind == ErrorKind.BAD_CALLBACK
    other = start(client)  # same state, another verifier: a code injected into this flow
    other["state"] = flow["state"]
    injected = failure(client.redeem(other, query))
    assert (injected.kind, injected.code) == (ErrorKind.BAD_CALLBACK, 50148)


def test_prompt_none_without_consent(client: MicrosoftClient, browser: Browser) -> None:
    flow = start(client, prompt="none")
    error = failure(client.redeem(flow, callback_query(browser.open(flow["auth_uri"]))))
    assert (error.kind, error.code) == (ErrorKind.CONSENT_REQUIRED, 65001)


def test_a_flow_over_two_resources_is_redeemed_for_one(
    client: MicrosoftClient, browser: Browser
) -> None:
    ews = f"{EXCHANGE_ONLINE}/EWS.AccessAsUser.All"
    flow = start(client, scopes=["Calendars.Read", ews])
    query = browser.consent(flow["auth_uri"])
    error = failure(client.redeem(dict(flow), query))
    assert (error.kind, error.code) == (ErrorKind.CONFIG, 28000)
    flow = start(client, scopes=["Calendars.Read", ews])  # consented: no screen this time
    query = callback_query(browser.open(flow["auth_uri"]))
    assert run(client.redeem(flow, query, scopes=[ews])).scopes == (ews, "openid", "profile")


def test_a_server_error_is_transient_and_not_replayed_to_later_requests(
    client: MicrosoftClient, browser: Browser, standin: StandIn
) -> None:
    """msal would answer every token request of the next seconds from its cache of the
    5xx; the proxy serves many users with one client, so the retry must reach Microsoft
    (pacing retries is the proxy's job, per user)."""
    result = connect(client, browser)
    standin.provider.fail_token_requests(1)  # no Retry-After
    error = failure(client.refresh(result.token_cache, result.account_id, SCOPES, force=True))
    assert (error.kind, error.error) == (ErrorKind.TRANSIENT, "server_error")
    seen = standin.provider.token_requests
    again = run(client.refresh(result.token_cache, result.account_id, SCOPES, force=True))
    assert again.refreshed
    assert standin.provider.token_requests == seen + 1


def test_a_server_error_with_retry_after_zero_can_be_retried(
    client: MicrosoftClient, browser: Browser, standin: StandIn
) -> None:
    result = connect(client, browser)
    standin.provider.fail_token_requests(1, retry_after=0)
    assert (
        failure(client.refresh(result.token_cache, result.account_id, SCOPES, force=True)).kind
        == ErrorKind.TRANSIENT
    )
    assert run(client.refresh(result.token_cache, result.account_id, SCOPES, force=True)).refreshed


def test_microsoft_unreachable_is_transient(standin: StandIn) -> None:
    app = registration(standin, authority_host=f"https://127.0.0.1:{free_port()}")
    microsoft = MicrosoftClient(app, CALLBACK, threads=1, timeout=2)
    try:
        error = failure(microsoft.start_authorization(SCOPES, state="s", login_hint=ALICE))
    finally:
        microsoft.close()
    assert (error.kind, error.error) == (ErrorKind.TRANSIENT, "network_error")


def test_discovery_outage_is_transient(client: MicrosoftClient, standin: StandIn) -> None:
    standin.provider.outage = True
    error = failure(client.start_authorization(SCOPES, state="s", login_hint=ALICE))
    assert error.kind == ErrorKind.TRANSIENT


def test_an_untrusted_certificate_is_a_config_error(standin: StandIn, tmp_path: Path) -> None:
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(other_ca)
    microsoft = MicrosoftClient(registration(standin, ca_file=other_ca), CALLBACK, threads=1)
    try:
        error = failure(microsoft.start_authorization(SCOPES, state="s", login_hint=ALICE))
    finally:
        microsoft.close()
    assert (error.kind, error.error) == (ErrorKind.CONFIG, "tls_error")


def test_an_unknown_tenant_is_a_config_error(standin: StandIn) -> None:
    microsoft = MicrosoftClient(
        registration(standin, tenant="nowhere.example"), CALLBACK, threads=1
    )
    try:
        error = failure(microsoft.start_authorization(SCOPES, state="s", login_hint=ALICE))
    finally:
        microsoft.close()
    assert error.kind == ErrorKind.CONFIG


@pytest.mark.parametrize(
    ("changes", "expire", "code"),
    [
        ({"client_secret": {"value": "not-the-secret"}}, False, 7000215),
        ({}, True, 7000222),
    ],
)
def test_a_bad_secret_is_a_config_error(
    standin: StandIn, browser: Browser, changes: dict[str, Any], expire: bool, code: int
) -> None:
    microsoft = MicrosoftClient(registration(standin, **changes), CALLBACK, threads=1)
    try:
        flow = start(microsoft)
        query = browser.consent(flow["auth_uri"])
        if expire:
            standin.provider.expire_secret(DEMO_APP_ID)
        error = failure(microsoft.redeem(flow, query))
    finally:
        microsoft.close()
    assert (error.kind, error.code, error.error) == (ErrorKind.CONFIG, code, "invalid_client")


def test_an_unknown_client_is_a_config_error(standin: StandIn, browser: Browser) -> None:
    microsoft = MicrosoftClient(
        registration(standin, client_id="not-registered"), CALLBACK, threads=1
    )
    try:
        flow = start(microsoft)
        page = browser.open(flow["auth_uri"])
        assert page.status_code == 400 and "AADSTS700016" in page.text
        error = failure(microsoft.redeem(flow, {"state": flow["state"], "code": "x"}))
    finally:
        microsoft.close()
    assert (error.kind, error.code) == (ErrorKind.CONFIG, 700016)


def test_an_unregistered_redirect_uri_stops_at_microsofts_page(
    standin: StandIn, browser: Browser
) -> None:
    microsoft = MicrosoftClient(registration(standin), "https://app.example/elsewhere", threads=1)
    try:
        page = browser.open(start(microsoft)["auth_uri"])
    finally:
        microsoft.close()
    assert page.status_code == 400 and "AADSTS50011" in page.text
    assert "location" not in page.headers


def client_certificate() -> tuple[str, str, str]:
    """(private key PEM, certificate PEM, SHA-1 thumbprint hex) of a new RSA key: an app
    registration's certificate credential (Entra ID does not ask who issued it)."""
    rsa = trustme.KeyType.RSA
    leaf = trustme.CA(key_type=rsa).issue_cert("client.consent-proxy.test", key_type=rsa)
    cert_pem = leaf.cert_chain_pems[0].bytes().decode()
    certificate = x509.load_pem_x509_certificate(cert_pem.encode())
    der = certificate.public_bytes(serialization.Encoding.DER)
    return leaf.private_key_pem.bytes().decode(), cert_pem, hashlib.sha1(der).hexdigest().upper()


@pytest.mark.parametrize("registered", [True, False])
def test_certificate_credentials(
    standin: StandIn, browser: Browser, tmp_path: Path, registered: bool
) -> None:
    key_pem, cert_pem, thumbprint = client_certificate()
    if registered:
        standin.provider.add_app(demo_app(CALLBACK, secrets=(), certificates=(cert_pem,)))
    certificate_file = tmp_path / "client.pem"
    certificate_file.write_text(cert_pem)
    credential = {
        "private_key": {"value": key_pem},
        "thumbprint": thumbprint,
        "public_certificate": certificate_file,
    }
    app = registration(standin, client_secret=None, certificate=credential)
    microsoft = MicrosoftClient(app, CALLBACK, threads=1)
    try:
        flow = start(microsoft)
        query = browser.consent(flow["auth_uri"])
        if registered:
            assert run(microsoft.redeem(flow, query)).object_id == ALICE_SSO.object_id
        else:
            error = failure(microsoft.redeem(flow, query))
            assert (error.kind, error.error) == (ErrorKind.CONFIG, "invalid_client")
    finally:
        microsoft.close()


def test_a_secret_rotated_in_its_file_is_picked_up(
    standin: StandIn, browser: Browser, tmp_path: Path
) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("old-secret")
    app = registration(standin, client_secret={"file": secret_file})
    microsoft = MicrosoftClient(app, CALLBACK, threads=1)
    try:
        flow = start(microsoft)
        query = browser.consent(flow["auth_uri"])
        secret_file.write_text(DEMO_APP_SECRET)
        assert run(microsoft.redeem(flow, query)).username == ALICE
    finally:
        microsoft.close()


@pytest.mark.parametrize(
    ("cache", "account", "reason"),
    [("{not json", None, "unreadable_cache"), (None, "someone.else", "no_account")],
)
def test_a_lost_cache_means_connecting_again(
    client: MicrosoftClient, browser: Browser, cache: str | None, account: str | None, reason: str
) -> None:
    result = connect(client, browser)
    error = failure(
        client.refresh(cache or result.token_cache, account or result.account_id, SCOPES)
    )
    assert (error.kind, error.error) == (ErrorKind.RECONSENT_REQUIRED, reason)


def test_discovery_is_fetched_once_per_client(
    client: MicrosoftClient, browser: Browser, standin: StandIn
) -> None:
    standin.provider.access_token_lifetime = 120
    result = connect(client, browser)
    for _ in range(3):
        result = run(client.refresh(result.token_cache, result.account_id, SCOPES))
    start(client, BOB)
    assert standin.provider.discovery_fetches == 1


def test_concurrent_operations_share_the_bounded_pool(
    client: MicrosoftClient, browser: Browser, standin: StandIn
) -> None:
    results = [connect(client, browser, user) for user in (ALICE, ADMIN)]

    async def many() -> list[Any]:
        refreshes = [
            client.refresh(r.token_cache, r.account_id, SCOPES, force=True) for r in results
        ]
        starts = [
            client.start_authorization(SCOPES, state=f"s{i}", login_hint=ALICE) for i in range(20)
        ]
        return await asyncio.gather(*refreshes, *starts)

    answers = run(many())
    assert [a.refreshed for a in answers[:2]] == [True, True]
    assert len({a["state"] for a in answers[2:]}) == 20
    assert standin.provider.discovery_fetches <= 4  # at most one per worker thread


def test_logs_hold_no_secrets(
    client: MicrosoftClient, browser: Browser, standin: StandIn, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    flow = start(client)
    query = browser.consent(flow["auth_uri"])
    result = run(client.redeem(flow, query))
    failure(client.redeem(flow, {**query, "state": "forged"}))
    standin.provider.revoke_user(ALICE)
    failure(client.refresh(result.token_cache, result.account_id, SCOPES, force=True))
    [refresh_token] = refresh_tokens(result.token_cache)
    # What the proxy's side logs: its own records, msal's and its HTTP stack's (the test's
    # browser, httpx, logs what a browser sees, the code included).
    ours = "\n".join(
        r.getMessage()
        for r in caplog.records
        if r.name.split(".")[0] in ("proxy", "msal", "urllib3")
    )
    assert {r.name.split(".")[0] for r in caplog.records} >= {"proxy", "msal", "urllib3"}
    secrets = (DEMO_APP_SECRET, query["code"], result.access_token, refresh_token)
    for secret in (*secrets, flow["code_verifier"]):
        assert secret not in ours

"""The Microsoft identity platform stand-in over real HTTPS, driven by a browser-like httpx
client and raw token-endpoint calls (no msal here: tests/test_microsoft_client.py has msal).
The stand-in and the browser are fixtures in tests/fixtures/standin.py."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from proxy.demo.idp import DEMO_USERS as SSO_USERS
from proxy.demo.microsoft import (
    DEMO_APP_ID,
    DEMO_APP_SECRET,
    EXCHANGE_ONLINE,
    FABRIKAM,
    GRAPH,
    HYBRID,
    demo_app,
)

from .fixtures.pages import hidden_fields, title
from .fixtures.standin import ADMIN, ALICE, BOB, CALLBACK, CAROL, Browser, StandIn, callback_query
from .jose import b64url, claims_of

GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def s256(verifier: str) -> str:
    return b64url(hashlib.sha256(verifier.encode()).digest())


@dataclass
class Request:
    """An authorize request built by hand, with its PKCE verifier."""

    url: str
    verifier: str


def authorize(standin: StandIn, tenant: str = "organizations", **params: str | None) -> Request:
    verifier = secrets.token_urlsafe(48)
    query: dict[str, str | None] = {
        "client_id": DEMO_APP_ID,
        "response_type": "code",
        "redirect_uri": CALLBACK,
        "scope": "openid profile offline_access Calendars.Read",
        "state": "the-state",
        "nonce": "the-nonce",
        "code_challenge": s256(verifier),
        "code_challenge_method": "S256",
        "login_hint": ALICE,
        **params,
    }
    clean = {k: v for k, v in query.items() if v is not None}
    return Request(f"{standin.url}/{tenant}/oauth2/v2.0/authorize?{urlencode(clean)}", verifier)


def token(
    browser: Browser, standin: StandIn, tenant: str = "organizations", **data: str
) -> httpx.Response:
    form = {"client_id": DEMO_APP_ID, "client_secret": DEMO_APP_SECRET, "client_info": "1", **data}
    return browser.http.post(f"{standin.url}/{tenant}/oauth2/v2.0/token", data=form)


def redeem(
    browser: Browser, standin: StandIn, request: Request, code: str, **data: str
) -> httpx.Response:
    return token(
        browser,
        standin,
        grant_type="authorization_code",
        code=code,
        redirect_uri=CALLBACK,
        code_verifier=request.verifier,
        **data,
    )


def connect(browser: Browser, standin: StandIn, **params: str | None) -> dict[str, Any]:
    """Consent and redeem: the token endpoint's answer."""
    request = authorize(standin, **params)
    query = browser.consent(request.url)
    answer = redeem(browser, standin, request, query["code"])
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def assert_microsoft_error(response: httpx.Response, status: int, error: str, code: int) -> None:
    """Microsoft's token-endpoint error shape, exactly."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {
        "error", "error_description", "error_codes", "timestamp", "trace_id",
        "correlation_id", "error_uri",
    }  # fmt: skip
    assert body["error"] == error
    assert body["error_codes"] == [code]
    assert body["error_description"].startswith(f"AADSTS{code}: ")
    assert f"\r\nTrace ID: {body['trace_id']}\r\n" in body["error_description"]
    assert GUID.fullmatch(body["trace_id"]) and GUID.fullmatch(body["correlation_id"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ", body["timestamp"])
    assert response.headers["cache-control"] == "no-store"


# --- discovery ------------------------------------------------------------------------------


@pytest.mark.parametrize("segment", [FABRIKAM.id, "fabrikam.example", "FABRIKAM.onmicrosoft.com"])
def test_discovery_of_one_tenant_names_it_by_id(
    standin: StandIn, browser: Browser, segment: str
) -> None:
    document = browser.open(f"{standin.url}/{segment}/v2.0/.well-known/openid-configuration").json()
    base = f"{standin.url}/{FABRIKAM.id}"
    assert document["issuer"] == f"{base}/v2.0"
    assert document["authorization_endpoint"] == f"{base}/oauth2/v2.0/authorize"
    assert document["token_endpoint"] == f"{base}/oauth2/v2.0/token"
    assert document["jwks_uri"] == f"{base}/discovery/v2.0/keys"


@pytest.mark.parametrize("segment", ["organizations", "common"])
def test_multi_tenant_discovery_has_the_tenantid_template(
    standin: StandIn, browser: Browser, segment: str
) -> None:
    document = browser.open(f"{standin.url}/{segment}/v2.0/.well-known/openid-configuration").json()
    assert document["issuer"] == f"{standin.url}/{{tenantid}}/v2.0"
    assert document["token_endpoint"] == f"{standin.url}/{segment}/oauth2/v2.0/token"
    assert standin.provider.discovery_fetches == 1


def test_unknown_tenant_discovery_is_a_microsoft_error(standin: StandIn, browser: Browser) -> None:
    response = browser.open(f"{standin.url}/nowhere.example/v2.0/.well-known/openid-configuration")
    assert_microsoft_error(response, 400, "invalid_tenant", 90002)


def test_keys_publish_the_signing_key(standin: StandIn, browser: Browser) -> None:
    keys = browser.open(f"{standin.url}/common/discovery/v2.0/keys").json()["keys"]
    assert [k["kid"] for k in keys] == [standin.provider.signing_kid]
    assert all("d" not in k for k in keys)


def test_outage_makes_discovery_answer_503(standin: StandIn, browser: Browser) -> None:
    standin.provider.outage = True
    assert (
        browser.open(f"{standin.url}/common/v2.0/.well-known/openid-configuration").status_code
        == 503
    )


# --- authorize: requests refused ------------------------------------------------------------


def test_unknown_client_gets_an_error_page_not_a_redirect(
    standin: StandIn, browser: Browser
) -> None:
    page = browser.open(authorize(standin, client_id=str(uuid.uuid4())).url)
    assert page.status_code == 400 and "location" not in page.headers
    assert "AADSTS700016" in page.text


@pytest.mark.parametrize(
    "redirect_uri", ["https://evil.example/callback", CALLBACK + "/", CALLBACK.upper(), None]
)
def test_a_redirect_uri_not_registered_exactly_gets_an_error_page(
    standin: StandIn, browser: Browser, redirect_uri: str | None
) -> None:
    page = browser.open(authorize(standin, redirect_uri=redirect_uri).url)
    assert page.status_code == 400 and "location" not in page.headers
    assert "AADSTS50011" in page.text
    assert title(page) == "Sorry, but we're having trouble signing you in."


def test_unknown_scope_is_sent_back_as_invalid_scope(standin: StandIn, browser: Browser) -> None:
    query = callback_query(browser.open(authorize(standin, scope="openid Mail.Destroy").url))
    assert query["error"] == "invalid_scope"
    assert query["error_description"].startswith("AADSTS70011: ")
    assert "Mail.Destroy" in query["error_description"]
    assert query["state"] == "the-state"


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"code_challenge": None}, 9002325),
        ({"code_challenge_method": "plain"}, 9002325),
        ({"prompt": "admin_consent"}, 90023),
        ({"prompt": "login consent"}, 90023),
    ],
)
def test_pkce_and_valid_prompt_are_required(
    standin: StandIn, browser: Browser, params: dict[str, str | None], code: int
) -> None:
    query = callback_query(browser.open(authorize(standin, **params).url))
    assert query["error"] == "invalid_request"
    assert query["error_description"].startswith(f"AADSTS{code}: ")


def test_response_type_must_be_code(standin: StandIn, browser: Browser) -> None:
    query = callback_query(browser.open(authorize(standin, response_type="token").url))
    assert query["error"] == "unsupported_response_type"


def test_a_user_of_another_tenant_cannot_use_a_tenant_authority(
    standin: StandIn, browser: Browser
) -> None:
    page = browser.open(authorize(standin, tenant=FABRIKAM.id, login_hint=ALICE).url)
    assert page.status_code == 400 and "AADSTS50020" in page.text


def test_a_single_tenant_app_is_not_found_in_other_tenants(
    standin: StandIn, browser: Browser
) -> None:
    standin.provider.add_app(demo_app(CALLBACK, home_tenant=FABRIKAM.id))
    page = browser.open(authorize(standin, login_hint=ALICE).url)
    assert page.status_code == 400 and "AADSTS700016" in page.text


# --- authorize: the consent journey ---------------------------------------------------------


def test_consent_page_lists_the_permissions_accessibly(standin: StandIn, browser: Browser) -> None:
    page = browser.open(authorize(standin, scope="offline_access Calendars.Read Contacts.Read").url)
    assert page.status_code == 200
    assert '<html lang="en">' in page.text
    assert title(page) == "Permissions requested"
    assert f"Signed in as <strong>{ALICE}</strong>" in page.text
    listed = re.search(r'<ul aria-label="Permissions requested">(.*?)</ul>', page.text)
    assert listed is not None
    assert re.findall(r"<li>([^<]+) <small>", listed[1]) == [
        "Maintain access to data you have given it access to",
        "Read your calendars",
        "Read your contacts",
    ]
    assert '<button type="submit" name="decision" value="accept">Accept</button>' in page.text
    assert '<button type="submit" name="decision" value="cancel">Cancel</button>' in page.text
    assert "consent_for_org" not in page.text  # alice is no admin


def test_without_login_hint_the_user_picks_an_account(standin: StandIn, browser: Browser) -> None:
    page = browser.open(authorize(standin, tenant=FABRIKAM.id, login_hint=None).url)
    assert title(page) == "Pick an account"
    assert re.findall(r'name="user" value="([^"]+)"', page.text) == [BOB, ADMIN]
    page = browser.submit(page, user=BOB)
    assert title(page) == "Need admin approval"


def test_accepting_redirects_with_a_code_and_the_state(standin: StandIn, browser: Browser) -> None:
    query = browser.consent(authorize(standin).url)
    assert set(query) == {"code", "state", "session_state"}
    assert query["state"] == "the-state"


def test_tokens_carry_the_users_ids_and_the_granted_scopes(
    standin: StandIn, browser: Browser
) -> None:
    sso = SSO_USERS[0]
    standin.provider.access_token_lifetime = 4000
    answer = connect(browser, standin, scope="openid profile offline_access Calendars.Read")
    assert answer["token_type"] == "Bearer" and answer["expires_in"] == 4000
    assert answer["scope"] == "Calendars.Read openid profile"
    access = claims_of(answer["access_token"])
    assert access["aud"] == GRAPH and access["scp"] == "Calendars.Read"
    assert (access["tid"], access["oid"]) == (sso.tenant_id, sso.object_id)
    assert access["exp"] - access["iat"] == 4000
    identity = claims_of(answer["id_token"])
    assert identity["aud"] == DEMO_APP_ID and identity["nonce"] == "the-nonce"
    assert identity["iss"] == f"{standin.url}/{sso.tenant_id}/v2.0"
    assert (identity["tid"], identity["oid"]) == (sso.tenant_id, sso.object_id)
    assert identity["preferred_username"] == ALICE and identity["name"] == sso.name
    client_info = json.loads(base64.urlsafe_b64decode(answer["client_info"] + "=="))
    assert client_info == {"uid": sso.object_id, "utid": sso.tenant_id}


def test_once_consented_there_is_no_consent_screen(standin: StandIn, browser: Browser) -> None:
    browser.consent(authorize(standin).url)
    callback_query(browser.open(authorize(standin).url))  # straight back with a code


def test_prompt_consent_shows_the_page_again(standin: StandIn, browser: Browser) -> None:
    browser.consent(authorize(standin).url)
    assert title(browser.open(authorize(standin, prompt="consent").url)) == "Permissions requested"


def test_a_new_permission_asks_again(standin: StandIn, browser: Browser) -> None:
    browser.consent(authorize(standin).url)
    page = browser.open(authorize(standin, scope="openid Calendars.Read Contacts.Read").url)
    assert title(page) == "Permissions requested"


def test_declining_answers_access_denied_65004(standin: StandIn, browser: Browser) -> None:
    query = browser.consent(authorize(standin).url, decision="cancel")
    assert query["error"] == "access_denied" and query["error_subcode"] == "cancel"
    assert query["error_description"].startswith("AADSTS65004: ")
    assert query["state"] == "the-state"


@pytest.mark.parametrize("code", [65001, 90094])
def test_backing_out_of_need_admin_approval(standin: StandIn, browser: Browser, code: int) -> None:
    standin.provider.set_user_consent("fabrikam", False, admin_approval_code=code)
    page = browser.open(authorize(standin, login_hint=BOB).url)
    assert title(page) == "Need admin approval"
    assert "Return to the application without granting consent" in page.text
    query = callback_query(browser.submit(page, decision="back"))
    assert query["error"] == "access_denied"
    assert query["error_description"].startswith(f"AADSTS{code}: ")


def test_a_forged_accept_does_not_bypass_admin_approval(standin: StandIn, browser: Browser) -> None:
    page = browser.open(authorize(standin, login_hint=BOB).url)
    page = browser.submit(page, decision="accept")
    assert title(page) == "Need admin approval"


def test_user_consent_setting_is_a_knob(standin: StandIn, browser: Browser) -> None:
    standin.provider.set_user_consent("contoso.example", False)
    assert title(browser.open(authorize(standin).url)) == "Need admin approval"


def test_an_admin_can_consent_for_the_organization(standin: StandIn, browser: Browser) -> None:
    page = browser.open(authorize(standin, login_hint=ADMIN, prompt="consent").url)
    assert (
        '<label for="consent_for_org">Consent on behalf of your organization</label>' in page.text
    )
    callback_query(browser.submit(page, decision="accept", consent_for_org="yes"))
    callback_query(browser.open(authorize(standin, login_hint=BOB).url))  # no screen for bob


def test_an_admin_consenting_for_themselves_only_leaves_others_waiting(
    standin: StandIn, browser: Browser
) -> None:
    browser.consent(authorize(standin, login_hint=ADMIN, prompt="consent").url)
    assert title(browser.open(authorize(standin, login_hint=BOB).url)) == "Need admin approval"


def test_prompt_none_without_consent_answers_consent_required(
    standin: StandIn, browser: Browser
) -> None:
    query = callback_query(browser.open(authorize(standin, prompt="none").url))
    assert query["error"] == "consent_required"
    assert query["error_description"].startswith("AADSTS65001: ")
    browser.consent(authorize(standin).url)
    assert "code" in callback_query(browser.open(authorize(standin, prompt="none").url))


def test_form_post_response_mode_posts_the_answer(standin: StandIn, browser: Browser) -> None:
    standin.provider.grant_user_consent(
        DEMO_APP_ID, ALICE, ["openid", "profile", "offline_access", "Calendars.Read"]
    )
    page = browser.open(authorize(standin, response_mode="form_post").url)
    assert f'action="{CALLBACK}"' in page.text
    assert set(hidden_fields(page.text)) == {"code", "session_state", "state"}


# --- the token endpoint -------------------------------------------------------------------


def test_a_code_is_redeemed_once_54005(standin: StandIn, browser: Browser) -> None:
    request = authorize(standin)
    code = browser.consent(request.url)["code"]
    assert redeem(browser, standin, request, code).status_code == 200
    correlation = str(uuid.uuid4())
    again = browser.http.post(
        f"{standin.url}/organizations/oauth2/v2.0/token",
        data={
            "client_id": DEMO_APP_ID, "client_secret": DEMO_APP_SECRET,
            "grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK,
            "code_verifier": request.verifier,
        },
        headers={"client-request-id": correlation},
    )  # fmt: skip
    assert_microsoft_error(again, 400, "invalid_grant", 54005)
    assert again.json()["correlation_id"] == correlation


def test_codes_expire_after_ten_minutes(standin: StandIn, browser: Browser) -> None:
    request = authorize(standin)
    code = browser.consent(request.url)["code"]
    now = standin.provider.clock()
    standin.provider.clock = lambda: now + 601
    assert_microsoft_error(redeem(browser, standin, request, code), 400, "invalid_grant", 70008)


def test_the_pkce_verifier_is_checked(standin: StandIn, browser: Browser) -> None:
    request = authorize(standin)
    code = browser.consent(request.url)["code"]
    forged = Request(request.url, secrets.token_urlsafe(48))
    assert_microsoft_error(redeem(browser, standin, forged, code), 400, "invalid_grant", 50148)
    # A code tried with the wrong verifier is spent.
    assert_microsoft_error(redeem(browser, standin, request, code), 400, "invalid_grant", 54005)


@pytest.mark.parametrize(
    ("data", "status", "error", "code"),
    [
        ({"client_secret": "not-the-secret"}, 401, "invalid_client", 7000215),
        ({"client_secret": ""}, 401, "invalid_client", 7000218),
        ({"client_id": "0000-unknown"}, 400, "unauthorized_client", 700016),
        ({"grant_type": "password"}, 400, "unsupported_grant_type", 70003),
    ],
)
def test_client_authentication(
    standin: StandIn, browser: Browser, data: dict[str, str], status: int, error: str, code: int
) -> None:
    response = token(
        browser, standin, **{"grant_type": "refresh_token", "refresh_token": "x", **data}
    )
    assert_microsoft_error(response, status, error, code)


def test_an_expired_secret_is_7000222(standin: StandIn, browser: Browser) -> None:
    standin.provider.expire_secret(DEMO_APP_ID)
    response = token(browser, standin, grant_type="refresh_token", refresh_token="x")
    assert_microsoft_error(response, 401, "invalid_client", 7000222)


def test_a_secret_in_basic_auth_is_accepted(standin: StandIn, browser: Browser) -> None:
    response = browser.http.post(
        f"{standin.url}/organizations/oauth2/v2.0/token",
        data={"grant_type": "refresh_token", "refresh_token": "unknown"},
        auth=(DEMO_APP_ID, DEMO_APP_SECRET),
    )
    assert_microsoft_error(response, 400, "invalid_grant", 9002313)  # authenticated, then refused


def test_refresh_rotates_and_the_old_token_dies(standin: StandIn, browser: Browser) -> None:
    first = connect(browser, standin)["refresh_token"]
    answer = token(
        browser,
        standin,
        grant_type="refresh_token",
        refresh_token=first,
        scope="Calendars.Read offline_access",
    )
    assert answer.status_code == 200, answer.text
    second = answer.json()["refresh_token"]
    assert second != first
    assert standin.provider.refresh_token_alive(second)
    assert not standin.provider.refresh_token_alive(first)
    again = token(
        browser, standin, grant_type="refresh_token", refresh_token=first, scope="Calendars.Read"
    )
    assert_microsoft_error(again, 400, "invalid_grant", 50173)
    assert standin.provider.refresh_redemptions[ALICE] == 2


@pytest.mark.parametrize(
    ("knob", "code"),
    [
        ("revoke_user", 50173),
        ("expire_refresh_tokens", 70008),
        ("require_mfa", 50076),
        ("block", 53003),
    ],
)
def test_refresh_refusals(standin: StandIn, browser: Browser, knob: str, code: int) -> None:
    refresh = connect(browser, standin)["refresh_token"]
    getattr(standin.provider, knob)(ALICE)
    answer = token(
        browser, standin, grant_type="refresh_token", refresh_token=refresh, scope="Calendars.Read"
    )
    assert_microsoft_error(answer, 400, "invalid_grant", code)


def test_revoked_consent_refuses_refresh_with_65001(standin: StandIn, browser: Browser) -> None:
    refresh = connect(browser, standin)["refresh_token"]
    standin.provider.revoke_consent(DEMO_APP_ID, ALICE)
    answer = token(
        browser, standin, grant_type="refresh_token", refresh_token=refresh, scope="Calendars.Read"
    )
    assert_microsoft_error(answer, 400, "invalid_grant", 65001)


def test_transient_failures_then_recovery(standin: StandIn, browser: Browser) -> None:
    standin.provider.fail_token_requests(2, status=503, retry_after=7)
    for _ in range(2):
        failed = token(browser, standin, grant_type="refresh_token", refresh_token="x")
        assert_microsoft_error(failed, 503, "temporarily_unavailable", 90033)
        assert failed.headers["retry-after"] == "7"
    after = token(browser, standin, grant_type="refresh_token", refresh_token="x")
    assert after.json()["error_codes"] == [9002313]
    assert standin.provider.token_requests == 3


def test_exchange_online_ews_scope_gets_an_exchange_token(
    standin: StandIn, browser: Browser
) -> None:
    ews = f"{EXCHANGE_ONLINE}/EWS.AccessAsUser.All"
    answer = connect(browser, standin, scope=f"openid offline_access {ews}")
    assert answer["scope"] == f"{ews} openid"
    access = claims_of(answer["access_token"])
    assert access["aud"] == EXCHANGE_ONLINE and access["scp"] == "EWS.AccessAsUser.All"


def test_hybrid_on_premises_ews_host_is_a_resource(standin: StandIn, browser: Browser) -> None:
    host = f"https://{HYBRID.ews_hosts[0]}"
    answer = connect(
        browser,
        standin,
        login_hint=CAROL,
        scope=f"openid offline_access {host}/EWS.AccessAsUser.All",
    )
    assert claims_of(answer["access_token"])["aud"] == host


def test_one_token_request_names_one_resource(standin: StandIn, browser: Browser) -> None:
    ews = f"{EXCHANGE_ONLINE}/EWS.AccessAsUser.All"
    request = authorize(standin, scope=f"openid Calendars.Read {ews}")
    code = browser.consent(request.url)["code"]
    both = redeem(browser, standin, request, code, scope=f"openid Calendars.Read {ews}")
    assert_microsoft_error(both, 400, "invalid_request", 28000)


def test_default_scope_stands_for_the_apps_permissions(standin: StandIn, browser: Browser) -> None:
    answer = connect(browser, standin, scope=f"openid offline_access {GRAPH}/.default")
    assert claims_of(answer["access_token"])["scp"] == "User.Read Calendars.Read Contacts.Read"


# --- the tiny Graph -------------------------------------------------------------------------


def test_graph_events_with_a_calendar_token(standin: StandIn, browser: Browser) -> None:
    access = connect(browser, standin)["access_token"]
    response = browser.http.get(
        f"{standin.provider.graph_url}/me/events", headers={"authorization": f"Bearer {access}"}
    )
    assert response.status_code == 200
    events = response.json()["value"]
    assert [e["subject"] for e in events] == [
        "Weekly team sync",
        "Quarterly planning",
        "Customer lunch",
    ]
    assert events[0]["organizer"]["emailAddress"]["address"] == ALICE


def test_graph_contacts_need_a_contacts_scope(standin: StandIn, browser: Browser) -> None:
    access = connect(browser, standin)["access_token"]  # Calendars.Read only
    response = browser.http.get(
        f"{standin.provider.graph_url}/me/contacts", headers={"authorization": f"Bearer {access}"}
    )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "ErrorAccessDenied"


@pytest.mark.parametrize(
    "authorization", [None, "Bearer", "Bearer garbage", "Basic eDp5", "Bearer a.b.c"]
)
def test_graph_refuses_missing_and_garbage_tokens(
    standin: StandIn, browser: Browser, authorization: str | None
) -> None:
    headers = {"authorization": authorization} if authorization else {}
    response = browser.http.get(f"{standin.provider.graph_url}/me/events", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "InvalidAuthenticationToken"
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_graph_refuses_expired_and_foreign_audience_tokens(
    standin: StandIn, browser: Browser
) -> None:
    ews = connect(
        browser, standin, scope=f"openid offline_access {EXCHANGE_ONLINE}/EWS.AccessAsUser.All"
    )
    graph = connect(browser, standin)
    url = f"{standin.provider.graph_url}/me/events"
    for access in (ews["access_token"], graph["access_token"] + "x"):
        assert (
            browser.http.get(url, headers={"authorization": f"Bearer {access}"}).status_code == 401
        )
    now = standin.provider.clock()
    standin.provider.clock = lambda: now + 3601
    assert (
        browser.http.get(
            url, headers={"authorization": f"Bearer {graph['access_token']}"}
        ).status_code
        == 401
    )


# --- admin consent ----------------------------------------------------------------------------


def admin_consent_url(standin: StandIn, tenant: str = "organizations", **params: str) -> str:
    query = {
        "client_id": DEMO_APP_ID,
        "scope": f"{GRAPH}/Calendars.Read openid profile offline_access",
        "redirect_uri": CALLBACK,
        "state": "admin-state",
        **params,
    }
    return f"{standin.url}/{tenant}/v2.0/adminconsent?{urlencode(query)}"


def test_admin_consent_refuses_common(standin: StandIn, browser: Browser) -> None:
    page = browser.open(admin_consent_url(standin, tenant="common"))
    assert page.status_code == 400 and "location" not in page.headers
    assert "not 'common'" in page.text


def test_admin_consent_checks_client_and_redirect_uri(standin: StandIn, browser: Browser) -> None:
    assert "AADSTS700016" in browser.open(admin_consent_url(standin, client_id="nope")).text
    page = browser.open(admin_consent_url(standin, redirect_uri="https://evil.example/"))
    assert page.status_code == 400 and "AADSTS50011" in page.text


def test_a_non_admin_cannot_consent_for_the_tenant(standin: StandIn, browser: Browser) -> None:
    query = browser.consent(admin_consent_url(standin), user=BOB)
    assert query["error"] == "access_denied"
    assert query["error_description"].startswith("AADSTS90094: ")
    assert query["state"] == "admin-state"


def test_admin_consent_then_users_get_codes_without_a_screen(
    standin: StandIn, browser: Browser
) -> None:
    page = browser.open(admin_consent_url(standin, tenant=FABRIKAM.id))
    page = browser.submit(page, user=ADMIN)
    assert title(page) == "Permissions requested: accept for your organization"
    query = callback_query(browser.submit(page, decision="accept"))
    assert query == {
        "admin_consent": "True",
        "tenant": FABRIKAM.id,
        "scope": f"{GRAPH}/Calendars.Read openid profile offline_access",
        "state": "admin-state",
    }
    request = authorize(standin, login_hint=BOB)
    code = callback_query(browser.open(request.url))["code"]
    assert redeem(browser, standin, request, code).status_code == 200


def test_admin_consent_can_be_cancelled(standin: StandIn, browser: Browser) -> None:
    query = browser.consent(admin_consent_url(standin), decision="cancel", user=ADMIN)
    assert query["error"] == "access_denied"
    assert query["error_description"].startswith("AADSTS65004: ")


def test_reset_restores_the_initial_state(standin: StandIn, browser: Browser) -> None:
    standin.provider.set_user_consent("contoso", False)
    standin.provider.access_token_lifetime = 5
    connect(browser, standin, login_hint=ADMIN)
    standin.provider.reset()
    assert standin.provider.tenants[SSO_USERS[0].tenant_id or ""].user_consent
    assert standin.provider.access_token_lifetime == 3600
    assert not standin.provider.tenant_grants and not standin.provider.user_grants

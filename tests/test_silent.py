"""The silent leg of a code-flow sign-in, attacked: forged, replayed and mismatched
`state`, `nonce`, `iss`, `aud`, `tid` and `at_hash`; an attacker's `login_hint`; a
second user in the same browser; garbage at the callback. A `consent-proxy run` process
in front of a code-flow app, and a scripted OpenID provider over HTTPS with real keys
(tests/scripted_idp.py). Whatever fails, the browser lands where the app sent it, with
no proxy session; only a verified answer starts one."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from .scripted_idp import (
    CLIENT_ID,
    CLIENT_SECRET,
    OTHER_TENANT,
    TENANT,
    CodeFlowApp,
    ScriptedProvider,
    code_flow_config,
    silent,
)
from .servers import ProxyProcess, ThreadServer, free_port, running
from .stored import stored
from .tls import client_context, https_server

CALLBACK = "/.consent-proxy-sso/callback"
PROXY_COOKIE = "consent_proxy="


@dataclass
class Env:
    proxy: ProxyProcess
    provider: ScriptedProvider
    ca_file: Path

    def browser(self) -> httpx.Client:
        return httpx.Client(verify=client_context(self.ca_file), timeout=15)

    def sessions(self) -> list[dict[str, Any]]:
        return stored(self.proxy.config_path.parent / "store.sqlite3", "session")


@contextlib.contextmanager
def silent_env(work: Path, tenant_issuer: bool = False, **endpoint: Any) -> Iterator[Env]:
    port = free_port()
    provider = ScriptedProvider(f"https://127.0.0.1:{port}", tenant_issuer=tenant_issuer)
    idp_server, ca_file = https_server(provider.app(), work, port=port)
    proxy = ProxyProcess({}, work)
    with running(ThreadServer(CodeFlowApp().app())) as upstream, running(idp_server):
        endpoint = {
            "issuer": provider.issuer,
            "discovery_url": f"{provider.base}/.well-known/openid-configuration",
            "ca_file": str(ca_file),
            "silent": silent(CLIENT_ID, CLIENT_SECRET),
            **endpoint,
        }
        config = code_flow_config(work, upstream.url, proxy.url, endpoint)
        proxy.config_path.write_text(json.dumps(config))
        with running(proxy):
            yield Env(proxy, provider, ca_file)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    with silent_env(tmp_path_factory.mktemp("silent")) as env:
        yield env


@pytest.fixture
def env(shared: Env) -> Env:
    shared.provider.reset()
    return shared


def sign_in(env: Env, browser: httpx.Client, user: str = "alice", query: str = "") -> str:
    """The app's callback through the proxy; the IdP URL the proxy sends the browser to."""
    first = browser.get(f"{env.proxy.url}/auth/callback?code={user}{query}")
    assert first.status_code == 303, first.text
    location = first.headers["location"]
    assert location.startswith(env.provider.base + "/authorize?"), location
    return location


def at_idp(browser: httpx.Client, url: str) -> str:
    """The IdP's answer: the proxy callback URL it redirects the browser to."""
    answer = browser.get(url)
    assert answer.status_code == 302
    return str(answer.headers["location"])


def complete(env: Env, browser: httpx.Client, user: str = "alice") -> httpx.Response:
    """A whole sign-in; the proxy's answer at its callback."""
    return browser.get(at_idp(browser, sign_in(env, browser, user)))


def home(env: Env, browser: httpx.Client) -> dict[str, Any]:
    return dict(browser.get(f"{env.proxy.url}/home").json())


def test_silent_request_carries_prompt_none_pkce_state_nonce(env: Env) -> None:
    with env.browser() as browser:
        url = sign_in(env, browser)
        query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
        assert query["prompt"] == "none"
        assert query["client_id"] == CLIENT_ID
        assert query["response_type"] == "code"
        assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
        assert len(query["state"]) >= 43 and len(query["nonce"]) >= 43
        assert query["redirect_uri"] == env.proxy.url + CALLBACK
        assert "login_hint" not in query  # nothing known yet: no hint


def test_verified_answer_starts_a_session_and_keeps_the_apps_target(env: Env) -> None:
    with env.browser() as browser:
        answer = complete(env, browser)
        assert answer.status_code == 303
        assert answer.headers["location"] == "/home?signed=alice"
        assert PROXY_COOKIE in answer.headers.get("set-cookie", "")
        assert home(env, browser)["proxy_user"] == "Alice@Example.com"


@pytest.mark.parametrize(
    "error", ["login_required", "interaction_required", "consent_required", "access_denied"]
)
def test_idp_errors_fail_open(env: Env, error: str) -> None:
    env.provider.script.error = error
    with env.browser() as browser:
        answer = complete(env, browser)
        assert answer.status_code == 303
        assert answer.headers["location"] == "/home?signed=alice"  # where the app sent it
        assert PROXY_COOKIE not in answer.headers.get("set-cookie", "")
        seen = home(env, browser)
        assert seen["app_user"] == "alice" and seen["proxy_user"] is None
    assert f"the IdP answered {error!r}: no session this time" in env.proxy.logs()


def test_token_endpoint_failure_fails_open(env: Env) -> None:
    env.provider.script.token_status = 500
    with env.browser() as browser:
        answer = complete(env, browser)
        assert answer.headers["location"] == "/home?signed=alice"
        assert home(env, browser)["proxy_user"] is None
    assert "the token endpoint answered 500" in env.proxy.logs()


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"nonce": "not-the-nonce"}, "nonce does not match"),
        ({"nonce": None}, "nonce does not match"),
        ({"iss": "https://evil.example"}, "is not the configured"),
        ({"aud": "the-apps-client-id"}, "does not include 'consent-proxy'"),
        ({"at_hash": "AAAAAAAAAAAAAAAAAAAAAA"}, "at_hash does not match"),
        ({"exp": 1000}, "the token expired"),
    ],
)
def test_mismatched_tokens_start_nothing(env: Env, claims: dict[str, Any], reason: str) -> None:
    env.provider.script.claims = claims
    with env.browser() as browser:
        answer = complete(env, browser)
        assert answer.status_code == 303 and answer.headers["location"] == "/home?signed=alice"
        assert PROXY_COOKIE not in answer.headers.get("set-cookie", "")
        assert home(env, browser)["proxy_user"] is None
    assert reason in env.proxy.logs()


def test_forged_state_is_not_an_answer(env: Env) -> None:
    env.provider.script.state = "made-up-by-an-attacker"
    with env.browser() as browser:
        answer = complete(env, browser)
        assert answer.status_code == 400
        assert "Sign-in check not recognised" in answer.text
        assert home(env, browser)["proxy_user"] is None


def test_replayed_answer_is_refused(env: Env) -> None:
    with env.browser() as browser:
        callback = at_idp(browser, sign_in(env, browser))
        assert browser.get(callback).status_code == 303
        again = browser.get(callback)
        assert again.status_code == 400
        assert PROXY_COOKIE not in again.headers.get("set-cookie", "")


def test_answer_brought_by_another_browser_starts_nothing(env: Env) -> None:
    """Login CSRF: the attacker's own answer, for the attacker's identity, in the
    victim's browser (another app session) must not sign the victim's session in."""
    with env.browser() as attacker, env.browser() as victim:
        callback = at_idp(attacker, sign_in(env, attacker, "bob"))
        victim.get(f"{env.proxy.url}/auth/callback?code=alice", follow_redirects=False)
        answer = victim.get(callback)
        assert answer.status_code == 400
        assert home(env, victim)["proxy_user"] is None
    assert "not the one the request was made for" in env.proxy.logs()


def test_attacker_login_hint_is_not_passed_on(env: Env) -> None:
    with env.browser() as browser:
        url = sign_in(env, browser, query="&login_hint=mallory%40evil.example")
        assert "login_hint" not in parse_qs(urlsplit(url).query)
        browser.get(at_idp(browser, url))
        assert home(env, browser)["proxy_user"] == "Alice@Example.com"


def test_second_user_in_the_same_browser_carries_nothing_over(env: Env) -> None:
    with env.browser() as browser:
        complete(env, browser, "alice")
        assert home(env, browser)["proxy_user"] == "Alice@Example.com"
        env.provider.script.user = "bob"
        complete(env, browser, "bob")
        assert home(env, browser) | {"object_id": None} == {
            "app_user": "bob", "proxy_user": "bob@example.com", "object_id": None,
            "integration": "none",
        }  # fmt: skip
        env.provider.script.error = "login_required"
        complete(env, browser, "alice")
        seen = home(env, browser)
        assert seen["app_user"] == "alice" and seen["proxy_user"] is None


@pytest.mark.parametrize(
    "query",
    [
        "",
        "state=",
        "state=a&state=b&code=x",
        "state=" + "x" * 5000,
        "state=%ff%fe&code=%00",
        "error=login_required",
        "code=" + "c" * 20000,
    ],
)
def test_garbage_at_the_callback_is_a_clear_400(env: Env, query: str) -> None:
    with env.browser() as browser:
        answer = browser.get(f"{env.proxy.url}{CALLBACK}?{query}")
        assert answer.status_code == 400
        assert "Sign-in check not recognised" in answer.text
        assert answer.headers["cache-control"] == "no-store"
    assert "Traceback" not in env.proxy.logs()


def test_other_methods_at_the_callback_are_refused(env: Env) -> None:
    with env.browser() as browser:
        answer = browser.post(f"{env.proxy.url}{CALLBACK}", data={"state": "x"})
        assert answer.status_code == 405 and answer.headers["allow"] == "GET"


# --- Entra multi-tenant issuers ---------------------------------------------------------


@pytest.fixture(scope="module")
def entra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    work = tmp_path_factory.mktemp("silent-entra")
    with silent_env(work, tenant_issuer=True, tenants=[TENANT]) as env:
        yield env


def test_tenant_issuer_is_matched_against_the_tokens_tid(entra: Env) -> None:
    entra.provider.reset()
    with entra.browser() as browser:
        complete(entra, browser)
        seen = home(entra, browser)
        assert seen["proxy_user"] == "Alice@Example.com"
        assert seen["object_id"] == "a11ce000-0000-4000-8000-0000000000a1"


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"iss": f"https://127.0.0.1:1/{TENANT}/v2.0"}, "is not the configured"),
        ({"tid": OTHER_TENANT}, "not one of the endpoint's tenants"),
        ({"tid": None}, "is not a tenant GUID"),
        ({"tid": "organizations"}, "is not a tenant GUID"),
    ],
)
def test_tenant_mismatch_starts_nothing(entra: Env, claims: dict[str, Any], reason: str) -> None:
    entra.provider.reset()
    entra.provider.script.claims = dict(claims)
    with entra.browser() as browser:
        complete(entra, browser)
        assert home(entra, browser)["proxy_user"] is None
    assert reason in entra.proxy.logs()

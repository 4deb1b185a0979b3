"""Sign-ins recognised end to end: browser -> proxy (uvicorn process) -> app, with
assertions really signed by the demo IdP and really verified by the proxy."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from proxy.demo.idp import GROUPS_ATTRIBUTE, DemoIdentityProvider

from . import saml_forge as forge
from .fixtures.idp import AUDIENCE, IDP_ENTITY, attribute_settings
from .servers import ProxyProcess, ThreadServer, free_port, running
from .sso_app import SsoApp
from .stored import session_settings, stored


class Harness:
    def __init__(
        self, app: SsoApp, proxy: ProxyProcess, idp: DemoIdentityProvider, acs: str
    ) -> None:
        self.app, self.proxy, self.idp, self.acs = app, proxy, idp, acs

    def post(
        self,
        saml_response: str,
        relay_state: str = "/home",
        cookies: dict[str, str] | None = None,
        **params: str,
    ) -> httpx.Response:
        body = {"SAMLResponse": saml_response, "RelayState": relay_state}
        return httpx.post(f"{self.proxy.url}/saml/acs", data=body, params=params, cookies=cookies)

    def response(self, user: str = "alice", **kwargs: Any) -> str:
        return self.idp.response(user, audience=AUDIENCE, acs_url=self.acs, **kwargs)

    def sessions(self) -> list[dict[str, Any]]:
        return stored(self.proxy.config_path.parent / "store.sqlite3", "session")

    def received_unchanged(self, response: httpx.Response) -> bool:
        digest = hashlib.sha256(response.request.content).hexdigest()
        return self.app.bodies.get("/saml/acs", [])[-1:] == [digest]


@pytest.fixture(scope="module")
def saml(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    work = tmp_path_factory.mktemp("saml")
    app = SsoApp()
    with running(ThreadServer(app.app())) as upstream:
        proxy = ProxyProcess({}, work)
        acs = f"{proxy.url}/saml/acs"
        idp = DemoIdentityProvider(IDP_ENTITY, allowed_acs_urls=[acs])
        config = {
            "upstream": {"url": upstream.url},
            "session": session_settings(),
            "store": {"path": str(work / "store.sqlite3")},
            "ops": {"port": free_port()},
            "sso": {
                "max_body_bytes": 64 * 1024,
                "endpoints": [
                    {
                        "type": "saml",
                        "path": "/saml/acs",
                        "idp_certificates": [str(idp.write_certificate(work / "idp.pem"))],
                        "audience": AUDIENCE,
                        "destination": acs,
                        **attribute_settings(),
                        "attributes": [GROUPS_ATTRIBUTE],
                        "groups_attribute": GROUPS_ATTRIBUTE,
                    }
                ],
            },
        }
        proxy.config_path.write_text(json.dumps(config))
        with running(proxy):
            yield Harness(app, proxy, idp, acs)


def has_proxy_cookie(response: httpx.Response) -> bool:
    return any(
        h.startswith("consent_proxy=") and "Max-Age=0" not in h
        for h in response.headers.get_list("set-cookie")
    )


def test_saml_sign_in_starts_a_session(saml: Harness) -> None:
    response = saml.post(saml.response("alice"))
    assert response.status_code == 303
    assert response.headers["location"] == "/home"
    assert has_proxy_cookie(response)
    assert saml.received_unchanged(response)
    [session] = [s for s in saml.sessions() if s["email"] == "alice@contoso.example"]
    assert session["method"] == "saml"
    assert session["name"] == "Alice Johnson"
    assert session["tenant_id"] and session["object_id"]
    assert session["user_key"] == f"{session['tenant_id']}.{session['object_id']}"
    assert session["attributes"][GROUPS_ATTRIBUTE]
    assert session["attributes"]["groups"] == session["attributes"][GROUPS_ATTRIBUTE]


def test_signed_response_rather_than_assertion(saml: Harness) -> None:
    response = saml.post(saml.response("bob", sign="response"))
    assert has_proxy_cookie(response)


def test_replayed_assertion_is_not_a_sign_in(saml: Harness) -> None:
    once = saml.response("carol")
    assert has_proxy_cookie(saml.post(once))
    again = saml.post(once)
    assert again.status_code == 303  # the app decides for itself ...
    assert not has_proxy_cookie(again)  # ... but the proxy learns nothing from a replay
    assert saml.received_unchanged(again)
    assert "assertion already used (replay)" in saml.proxy.logs()


def test_app_refusing_a_valid_assertion_is_not_a_sign_in(saml: Harness) -> None:
    response = saml.post(saml.response("alice"), reject="1")
    assert response.status_code == 403
    assert not has_proxy_cookie(response)


BAD_RESPONSES = {
    "unsigned": lambda h, tmp: h.response("alice", sign=None),
    "other key": lambda h, tmp: DemoIdentityProvider(IDP_ENTITY).response(
        "alice", audience=AUDIENCE, acs_url=h.acs
    ),
    "wrapped": lambda h, tmp: forge.inject_assertion(h.response("alice"), "before"),
    "wrapped in extensions": lambda h, tmp: forge.wrap_in_extensions(h.response("alice")),
    "tampered": lambda h, tmp: forge.tamper(
        h.response("alice"), "alice@contoso.example", "mallory@contoso.example"
    ),
    "expired": lambda h, tmp: h.response("alice", not_on_or_after_offset=-3600),
    "wrong audience": lambda h, tmp: h.idp.response(
        "alice", audience="https://other.example", acs_url=h.acs
    ),
    "wrong destination": lambda h, tmp: h.idp.response(
        "alice", audience=AUDIENCE, acs_url="https://evil.example/acs"
    ),
    "xxe": lambda h, tmp: forge.xxe(tmp),
    "billion laughs": lambda h, tmp: forge.billion_laughs(),
    "not base64": lambda h, tmp: "%%% not base64 %%%",
    "not xml": lambda h, tmp: base64.b64encode(b"hello, not xml").decode(),
    "empty": lambda h, tmp: "",
}


@pytest.mark.parametrize("kind", sorted(BAD_RESPONSES))
def test_bad_assertions_are_forwarded_unchanged_but_start_no_session(
    saml: Harness, kind: str, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-FILE-CONTENT")
    before = len(saml.sessions())
    response = saml.post(BAD_RESPONSES[kind](saml, secret))
    assert response.status_code == 303  # this app accepts anything: the proxy must not
    assert not has_proxy_cookie(response)
    assert saml.received_unchanged(response)
    assert len(saml.sessions()) == before
    logs = saml.proxy.logs()
    assert "sign-in not recognised at /saml/acs" in logs
    assert "Traceback" not in logs
    assert "TOP-SECRET-FILE-CONTENT" not in logs


def test_oversized_post_is_forwarded_whole_and_unread(saml: Harness) -> None:
    big = saml.response("alice") + "A" * (200 * 1024)
    response = saml.post(big)
    assert response.status_code == 303
    assert not has_proxy_cookie(response)
    assert saml.received_unchanged(response)
    assert "larger than sso.max_body_bytes" in saml.proxy.logs()


def test_not_a_form_post_is_forwarded_and_ignored(saml: Harness) -> None:
    response = httpx.post(f"{saml.proxy.url}/saml/acs", json={"SAMLResponse": saml.response()})
    assert response.status_code == 303
    assert not has_proxy_cookie(response)
    assert saml.received_unchanged(response)


def test_two_saml_fields_are_refused(saml: Harness) -> None:
    value = saml.response("alice")
    response = httpx.post(
        f"{saml.proxy.url}/saml/acs",
        content=f"SAMLResponse={value}&SAMLResponse={value}".replace("+", "%2B"),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert not has_proxy_cookie(response)
    assert "expected one SAMLResponse field, got 2" in saml.proxy.logs()


def test_other_users_sessions_survive_garbage(saml: Harness) -> None:
    good = saml.post(saml.response("bob"))
    jar = {
        c.split("=", 1)[0]: c.split("=", 1)[1].split(";")[0]
        for c in good.headers.get_list("set-cookie")
    }
    for garbage in ["", "x", "%00" * 100]:
        saml.post(garbage)
    page = httpx.get(f"{saml.proxy.url}/page", cookies=jar)
    assert page.status_code == 200
    assert not any("Max-Age=0" in h for h in page.headers.get_list("set-cookie"))


def cookie_jar(response: httpx.Response) -> dict[str, str]:
    return {
        c.split("=", 1)[0]: c.split("=", 1)[1].split(";")[0]
        for c in response.headers.get_list("set-cookie")
    }


def identity_header(saml: Harness, jar: dict[str, str]) -> str | None:
    page = httpx.get(f"{saml.proxy.url}/page", cookies=jar)
    assert page.status_code == 200
    user: str | None = page.json()["headers"].get("x-consent-proxy-user")
    return user


def sessions_ended_unverified(saml: Harness) -> float:
    ops = yaml.safe_load(saml.proxy.config_path.read_text())["ops"]["port"]
    metric = 'consent_proxy_sessions_ended_total{reason="unverified_sign_in"}'
    for line in httpx.get(f"http://127.0.0.1:{ops}/metrics").text.splitlines():
        if line.startswith(metric):
            return float(line.split()[-1])
    return 0.0


UNVERIFIABLE = {
    "a key the proxy does not pin": lambda h: DemoIdentityProvider(IDP_ENTITY).response(
        "bob", audience=AUDIENCE, acs_url=h.acs
    ),
    "larger than sso.max_body_bytes": lambda h: h.response("bob") + "A" * (200 * 1024),
}


@pytest.mark.parametrize("kind", sorted(UNVERIFIABLE))
def test_an_unverifiable_sign_in_ends_the_session_the_browser_had(saml: Harness, kind: str) -> None:
    jar = cookie_jar(saml.post(saml.response("alice")))
    assert identity_header(saml, jar) == "alice@contoso.example"
    before, ended = len(saml.sessions()), sessions_ended_unverified(saml)
    # The app accepts a sign-in the proxy cannot verify and keeps its session cookie.
    response = saml.post(UNVERIFIABLE[kind](saml), cookies=jar, keep="1")
    assert response.status_code == 303
    assert "app_session" not in cookie_jar(response)
    assert "Max-Age=0" in response.headers.get("set-cookie", "")
    # Whoever the browser is now, it is not Alice to the proxy: not even with her old cookie.
    assert identity_header(saml, jar) is None
    assert len(saml.sessions()) == before - 1
    assert sessions_ended_unverified(saml) == ended + 1
    logs = saml.proxy.logs()
    assert "the app accepted a sign-in at /saml/acs that could not be verified" in logs
    assert "Traceback" not in logs


def test_an_unverifiable_sign_in_the_app_refuses_changes_nothing(saml: Harness) -> None:
    jar = cookie_jar(saml.post(saml.response("alice")))
    forged = UNVERIFIABLE["a key the proxy does not pin"](saml)
    response = saml.post(forged, cookies=jar, keep="1", reject="1")
    assert response.status_code == 403
    assert identity_header(saml, jar) == "alice@contoso.example"


# --- OIDC: an id_token posted to the app's callback (response_mode=form_post) --------------


class OidcHarness:
    def __init__(self, app: SsoApp, proxy: ProxyProcess, provider: Any) -> None:
        self.app, self.proxy, self.provider = app, proxy, provider

    def post(self, id_token: str) -> httpx.Response:
        return httpx.post(
            f"{self.proxy.url}/oidc/callback", data={"id_token": id_token, "state": "s"}
        )

    def sessions(self) -> list[dict[str, Any]]:
        return stored(self.proxy.config_path.parent / "store.sqlite3", "session")


@pytest.fixture(scope="module")
def oidc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcHarness]:
    from proxy.demo.oidc_provider import DemoOpenIdProvider

    from .tls import https_server, https_url

    work = tmp_path_factory.mktemp("oidc")
    app = SsoApp()
    idp_server, ca_file = https_server(None, work)
    provider = DemoOpenIdProvider(https_url(idp_server) + "/tenant-a/v2.0")
    idp_server.server.config.app = provider.app()
    with running(ThreadServer(app.app())) as upstream, running(idp_server):
        config = {
            "upstream": {"url": upstream.url},
            "session": session_settings(),
            "store": {"path": str(work / "store.sqlite3")},
            "sso": {
                "endpoints": [
                    {
                        "type": "oidc",
                        "path": "/oidc/callback",
                        "issuer": provider.issuer,
                        "audience": "app-client-id",
                        "ca_file": str(ca_file),
                        "attributes": ["groups"],
                    }
                ]
            },
        }
        with running(ProxyProcess(config, work)) as proxy:
            yield OidcHarness(app, proxy, provider)


def test_oidc_form_post_sign_in(oidc: OidcHarness) -> None:
    user = next(iter(oidc.provider.users.values()))
    response = oidc.post(oidc.provider.id_token(user, "app-client-id"))
    assert response.status_code == 303
    assert has_proxy_cookie(response)
    [session] = [s for s in oidc.sessions() if s["email"] == user.email]
    assert session["method"] == "oidc"
    assert session["tenant_id"] == user.tenant_id


def test_oidc_bad_tokens_start_no_session(oidc: OidcHarness) -> None:
    user = next(iter(oidc.provider.users.values()))
    good = oidc.provider.id_token(user, "app-client-id")
    header, payload, signature = good.split(".")
    for bad in [
        oidc.provider.id_token(user, "another-client"),
        oidc.provider.id_token(user, "app-client-id", lifetime=-600),
        f"{header}.{payload}.{signature[::-1]}",
        "not.a.token",
        "",
    ]:
        response = oidc.post(bad)
        assert response.status_code == 303
        assert not has_proxy_cookie(response)
    assert "Traceback" not in oidc.proxy.logs()
    assert "sign-in not recognised at /oidc/callback" in oidc.proxy.logs()


def test_oidc_replayed_token_is_not_a_sign_in(oidc: OidcHarness) -> None:
    token = oidc.provider.id_token(list(oidc.provider.users.values())[-1], "app-client-id")
    assert has_proxy_cookie(oidc.post(token))
    assert not has_proxy_cookie(oidc.post(token))

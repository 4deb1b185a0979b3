"""One person, one connection: the same person signs in by SAML, then by OIDC. With both
endpoints trusted for linking by email (`link_by: email`) that is one user key and one
integration, and `consent-proxy status` lists both identities; with linking off, two
integrations, as before; and an endpoint not trusted for linking never joins a linked
person, whatever email it asserts."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.demo.idp import EMAIL_ATTRIBUTE, NAME_ATTRIBUTE, DemoIdentityProvider
from proxy.demo.oidc_provider import DemoOpenIdProvider
from proxy.demo.users import DemoUser

from .servers import free_port, running
from .stored import stored
from .test_consent import ALICE as SAML_ALICE
from .test_consent import AUDIENCE, IDP_ENTITY, IDP_USERS, MODES, Env, consent_env, sso_user
from .tls import client_context, https_server

OIDC_AUDIENCE = "demo-app"
# Alice at the OpenID provider: her address in other case, another subject, no tenant.
OIDC_ALICE = DemoUser("alice-oidc", "ALICE@Contoso.example", "Alice J.")
SAML_USER = sso_user(SAML_ALICE, "mode-never").id
assert "never" in MODES


def endpoints(idp_cert: Path, provider: DemoOpenIdProvider, ca: Path, link: bool) -> dict[str, Any]:
    linking = {"link_by": "email"} if link else {}
    return {
        "endpoints": [
            {
                "type": "saml",
                "path": "/saml/acs",
                "idp_certificates": [str(idp_cert)],
                "audience": AUDIENCE,
                "email_attribute": EMAIL_ATTRIBUTE,
                "name_attribute": NAME_ATTRIBUTE,
                **linking,
            },
            {
                "type": "oidc",
                "path": "/oidc/callback",
                "issuer": provider.issuer,
                "audience": OIDC_AUDIENCE,
                "ca_file": str(ca),
                **linking,
            },
        ]
    }


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DemoOpenIdProvider, Path]]:
    port = free_port()
    oidc = DemoOpenIdProvider(f"https://127.0.0.1:{port}", [OIDC_ALICE])
    server, ca = https_server(oidc.app(), tmp_path_factory.mktemp("oidc"), port=port)
    with running(server):
        yield oidc, ca


SAML_IDP = DemoIdentityProvider(IDP_ENTITY, IDP_USERS)


def environment(work: Path, provider: tuple[DemoOpenIdProvider, Path], link: bool) -> Any:
    cert = SAML_IDP.write_certificate(work / "linking-idp.pem")
    return consent_env(work, sso=endpoints(cert, provider[0], provider[1], link))


def sign_in_both(env: Env, provider: DemoOpenIdProvider) -> None:
    with httpx.Client(verify=client_context(env.ca_file), timeout=15) as browser:
        saml = SAML_IDP.response(SAML_USER, audience=AUDIENCE, acs_url=env.acs)
        assert browser.post(env.acs, data={"SAMLResponse": saml}).status_code == 303
    with httpx.Client(timeout=15) as browser:
        token = provider.id_token(OIDC_ALICE, OIDC_AUDIENCE)
        answer = browser.post(f"{env.proxy.url}/oidc/callback", data={"id_token": token})
        assert answer.status_code == 303


def integrations(env: Env) -> list[dict[str, Any]]:
    return stored(env.proxy.config_path.parent / "store.sqlite3", "integration")


def sessions(env: Env) -> list[dict[str, Any]]:
    return stored(env.proxy.config_path.parent / "store.sqlite3", "session")


def test_linking_on_makes_one_integration(
    tmp_path: Path, provider: tuple[DemoOpenIdProvider, Path]
) -> None:
    with environment(tmp_path, provider, link=True) as env:
        sign_in_both(env, provider[0])
        assert len({s["user_key"] for s in sessions(env)}) == 1
        assert len(integrations(env)) == 1
        status = subprocess.run(
            [sys.executable, "-m", "proxy.cli", "status", "--config", str(env.proxy.config_path),
             "--user", "alice@contoso.example", "--json"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        (record,) = json.loads(status.stdout)
        methods = sorted((i["method"], i["subject"]) for i in record["linked_identities"])
        assert methods == [("oidc", "alice-oidc"), ("saml", "alice@contoso.example")]
        text = subprocess.run(
            [sys.executable, "-m", "proxy.cli", "status", "--config", str(env.proxy.config_path),
             "--user", "alice@contoso.example"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        assert "  linked: saml " in text and "  linked: oidc " in text


def test_linking_off_keeps_two_integrations(
    tmp_path: Path, provider: tuple[DemoOpenIdProvider, Path]
) -> None:
    with environment(tmp_path, provider, link=False) as env:
        sign_in_both(env, provider[0])
        assert len({s["user_key"] for s in sessions(env)}) == 2
        assert len(integrations(env)) == 2
        assert not any(s["user_key"].startswith("link.") for s in sessions(env))


def test_an_untrusted_endpoint_never_joins_a_linked_person(
    tmp_path: Path, provider: tuple[DemoOpenIdProvider, Path]
) -> None:
    """Only the SAML endpoint is trusted for linking: the OpenID provider's token for the
    same address stays a person of its own (it might assert anyone's address)."""
    cert = SAML_IDP.write_certificate(tmp_path / "linking-idp.pem")
    sso = endpoints(cert, provider[0], provider[1], link=False)
    sso["endpoints"][0]["link_by"] = "email"
    with consent_env(tmp_path, sso=sso) as env:
        sign_in_both(env, provider[0])
        keys = {s["method"]: s["user_key"] for s in sessions(env)}
        assert keys["saml"].startswith("link.") and not keys["oidc"].startswith("link.")
        assert len(integrations(env)) == 2

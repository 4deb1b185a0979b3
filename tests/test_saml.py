"""SAML sign-in verification: real signatures from the demo IdP, real attacks on them."""

from __future__ import annotations

import base64
import copy
import datetime as dt
import html
import logging
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from proxy.config import SamlEndpoint
from proxy.demo.idp import (
    GROUPS_ATTRIBUTE,
    NAME_ATTRIBUTE,
    OBJECT_ID_ATTRIBUTE,
    DemoIdentityProvider,
    DemoUser,
)
from proxy.errors import ConfigError
from proxy.identity.sso import SignIn, SignInRejected, saml
from proxy.identity.sso.saml import MAX_RESPONSE_BYTES, SamlVerifier

from . import saml_forge as forge
from .fixtures.idp import AUDIENCE, IDP_ENTITY, attribute_settings
from .servers import ThreadServer, running

ACS = "https://app.example.com/saml/acs"
SKEW = 120.0


@pytest.fixture(scope="module")
def idp() -> DemoIdentityProvider:
    return DemoIdentityProvider(IDP_ENTITY, allowed_acs_urls=[ACS])


@pytest.fixture(scope="module")
def other_idp() -> DemoIdentityProvider:
    """Same entity ID, another key: what an attacker signing for the IdP has."""
    return DemoIdentityProvider(IDP_ENTITY)


@pytest.fixture
def cert_file(idp: DemoIdentityProvider, tmp_path: Path) -> Path:
    return idp.write_certificate(tmp_path / "idp.pem")


def endpoint(certificates: tuple[Path, ...] = (), **settings: Any) -> SamlEndpoint:
    values: dict[str, Any] = {
        "type": "saml",
        "path": "/saml/acs",
        "idp_certificates": certificates,
        "audience": AUDIENCE,
        "destination": ACS,
    }
    return SamlEndpoint.model_validate(values | settings)


@pytest.fixture
def verifier(cert_file: Path) -> SamlVerifier:
    return SamlVerifier(
        endpoint((cert_file,), **attribute_settings(), attributes=(GROUPS_ATTRIBUTE, "not-sent")),
        SKEW,
    )


def response(idp: DemoIdentityProvider, user: str = "alice", **options: Any) -> str:
    return idp.response(user, **({"audience": AUDIENCE, "acs_url": ACS} | options))


def rejected(verifier: SamlVerifier, saml_response: str, **options: Any) -> str:
    with pytest.raises(SignInRejected) as caught:
        verifier.verify(saml_response, **options)
    return caught.value.description


# --- accepted --------------------------------------------------------------------------------


def test_signed_assertion_gives_who_signed_in(
    idp: DemoIdentityProvider, verifier: SamlVerifier
) -> None:
    now = time.time()
    saml_response = response(idp, now=now, not_on_or_after_offset=300)
    sign_in = verifier.verify(saml_response, now=now + 5)
    assert sign_in == SignIn(
        subject="alice@contoso.example",
        email="alice@contoso.example",
        name="Alice Johnson",
        tenant_id="5b8f3c1e-2d4a-4f6b-9c7e-1a2b3c4d5e6f",
        object_id="0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
        attributes={GROUPS_ATTRIBUTE: ("Sales", "All Staff")},
        method="saml",
        issuer=IDP_ENTITY,
        replay_key=forge.assertion_of(forge.decode(saml_response)).get("ID"),
        replay_until=float(int(now + 300)),
    )


@pytest.mark.parametrize("sign", ["response", "both"])
def test_signed_response_is_accepted_too(
    idp: DemoIdentityProvider, verifier: SamlVerifier, sign: str
) -> None:
    sign_in = verifier.verify(response(idp, "bob", sign=sign))
    assert (sign_in.subject, sign_in.name) == ("bob@fabrikam.example", "Bob Lindqvist")
    assert sign_in.tenant_id == "9d2e7f4a-6b1c-4e3d-8a5f-7c6b5a4d3e2f"


def test_replay_data_is_the_same_for_the_same_response(
    idp: DemoIdentityProvider, verifier: SamlVerifier
) -> None:
    saml_response = response(idp, "carol")
    first, second = verifier.verify(saml_response), verifier.verify(saml_response)
    assert first.replay_key and first.replay_key == second.replay_key
    assert first.replay_until == second.replay_until
    assert first.replay_key != verifier.verify(response(idp, "carol")).replay_key


def test_identity_from_an_attribute(idp: DemoIdentityProvider, cert_file: Path) -> None:
    verifier = SamlVerifier(endpoint((cert_file,), identity=OBJECT_ID_ATTRIBUTE), SKEW)
    sign_in = verifier.verify(response(idp, "carol"))
    assert sign_in.subject == "2c3d4e5f-6a7b-4c8d-ae9f-1a2b3c4d5e6f"
    assert sign_in.email == "carol@hybrid.example"  # the NameID looks like an email
    assert sign_in.attributes == {}


def test_email_from_the_attribute_over_the_name_id(cert_file: Path, tmp_path: Path) -> None:
    users = [DemoUser("svc", email="svc-42", name="Service")]
    idp = DemoIdentityProvider(IDP_ENTITY, users)
    pem = idp.write_certificate(tmp_path / "svc.pem")
    plain = SamlVerifier(endpoint((pem,)), SKEW).verify(response(idp, "svc"))
    assert (plain.subject, plain.email) == ("svc-42", None)  # not an email: not guessed

    mapped = SamlVerifier(endpoint((pem,), email_attribute=NAME_ATTRIBUTE), SKEW)
    assert mapped.verify(response(idp, "svc")).email == "Service"


def test_certificates_from_metadata(idp: DemoIdentityProvider, tmp_path: Path) -> None:
    metadata = tmp_path / "idp-metadata.xml"
    metadata.write_text(idp.metadata_xml("https://idp.demo.example/sso"))
    verifier = SamlVerifier(endpoint(idp_metadata=metadata), SKEW)
    assert verifier.verify(response(idp)).subject == "alice@contoso.example"


def test_metadata_binds_the_key_to_its_entity_id(idp: DemoIdentityProvider, tmp_path: Path) -> None:
    metadata = tmp_path / "idp-metadata.xml"
    metadata.write_text(idp.metadata_xml())
    verifier = SamlVerifier(endpoint(idp_metadata=metadata), SKEW)
    impostor = DemoIdentityProvider("https://other-idp.example")
    impostor.private_key, impostor.certificate = idp.private_key, idp.certificate
    assert "its signing key belongs to" in rejected(verifier, response(impostor))


def test_every_pinned_certificate_is_tried(
    idp: DemoIdentityProvider, other_idp: DemoIdentityProvider, tmp_path: Path
) -> None:
    old = other_idp.write_certificate(tmp_path / "old.pem")
    new = idp.write_certificate(tmp_path / "new.pem")
    verifier = SamlVerifier(endpoint((old, new)), SKEW)  # a key rollover in progress
    assert verifier.verify(response(idp)).subject == "alice@contoso.example"
    assert verifier.verify(response(other_idp)).subject == "alice@contoso.example"


def test_unreadable_certificates_fail_loudly(tmp_path: Path) -> None:
    garbage = tmp_path / "idp.pem"
    garbage.write_text("not a certificate")
    metadata = tmp_path / "metadata.xml"
    metadata.write_text(
        '<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" '
        'entityID="https://idp.example"><md:IDPSSODescriptor/></md:EntityDescriptor>'
    )
    with pytest.raises(ConfigError) as caught:
        SamlVerifier(endpoint((garbage,), idp_metadata=metadata), SKEW)
    assert caught.value.problems == [
        f"idp_certificates: {garbage}: not a PEM certificate file: save the IdP's signing "
        "certificate as PEM (-----BEGIN CERTIFICATE-----)",
        f"idp_metadata: {metadata}: no IdP signing certificate in it "
        '(IDPSSODescriptor/KeyDescriptor with use="signing" or no use)',
    ]


def test_encryption_keys_in_metadata_are_not_trusted_for_signatures(
    idp: DemoIdentityProvider, tmp_path: Path
) -> None:
    metadata = tmp_path / "metadata.xml"
    metadata.write_text(idp.metadata_xml().replace('use="signing"', 'use="encryption"'))
    with pytest.raises(ConfigError, match="no IdP signing certificate"):
        SamlVerifier(endpoint(idp_metadata=metadata), SKEW)


# --- signatures ------------------------------------------------------------------------------


def test_an_expired_pinned_certificate_still_pins_its_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The SAML metadata interoperability profile trusts the key, not the certificate's
    dates: an IdP that forgot its rollover must not silently stop sign-ins being seen."""
    idp = DemoIdentityProvider(IDP_ENTITY)
    long_ago = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    idp.certificate = (
        x509.CertificateBuilder()
        .subject_name(idp.certificate.subject)
        .issuer_name(idp.certificate.issuer)
        .public_key(idp.private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(long_ago)
        .not_valid_after(long_ago + dt.timedelta(days=365))
        .sign(idp.private_key, hashes.SHA256())
    )
    with caplog.at_level(logging.WARNING, "consent_proxy.sso"):
        verifier = SamlVerifier(endpoint((idp.write_certificate(tmp_path / "old.pem"),)), SKEW)
    assert "expired on 2020-12-31" in caplog.text
    assert verifier.verify(response(idp)).subject == "alice@contoso.example"


def test_verify_is_safe_from_many_threads(
    idp: DemoIdentityProvider, verifier: SamlVerifier, other_idp: DemoIdentityProvider
) -> None:
    good = [response(idp, user) for user in ("alice", "bob", "carol")] * 10
    bad = [response(other_idp) for _ in range(10)]

    def outcome(value: str) -> str:
        try:
            return verifier.verify(value).subject
        except SignInRejected:
            return "rejected"

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(outcome, good + bad))
    assert outcomes[: len(good)] == [verifier.verify(v).subject for v in good]
    assert outcomes[len(good) :] == ["rejected"] * len(bad)


def test_unsigned_is_rejected(idp: DemoIdentityProvider, verifier: SamlVerifier) -> None:
    assert "is not signed" in rejected(verifier, response(idp, sign=None))


@pytest.mark.parametrize("sign", ["assertion", "response"])
def test_signed_by_another_key_is_rejected(
    other_idp: DemoIdentityProvider, verifier: SamlVerifier, sign: str
) -> None:
    reason = rejected(verifier, response(other_idp, sign=sign))
    assert "signature is not made with a trusted IdP key" in reason


@pytest.mark.parametrize("where", ["before", "after"])
def test_wrapping_with_a_second_assertion_is_rejected(
    idp: DemoIdentityProvider, verifier: SamlVerifier, where: str
) -> None:
    for sign in ("assertion", "response"):
        forged = forge.inject_assertion(response(idp, sign=sign), where)
        assert "more than one Assertion (2)" in rejected(verifier, forged)


def test_wrapping_under_extensions_is_rejected(
    idp: DemoIdentityProvider, verifier: SamlVerifier
) -> None:
    forged = forge.wrap_in_extensions(response(idp))
    assert "more than one Assertion (2)" in rejected(verifier, forged)


def test_wrapping_inside_the_signature_is_rejected(
    idp: DemoIdentityProvider, verifier: SamlVerifier
) -> None:
    forged = forge.wrap_in_signature_object(response(idp))
    assert "more than one Assertion (2)" in rejected(verifier, forged)


def test_wrapping_a_signed_response_is_rejected(
    idp: DemoIdentityProvider, verifier: SamlVerifier
) -> None:
    forged = forge.wrap_response(response(idp, sign="response"))
    assert "more than one Assertion (2)" in rejected(verifier, forged)


def test_wrapping_fails_even_without_the_one_assertion_rule(
    idp: DemoIdentityProvider, verifier: SamlVerifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defence in depth: identity is read only from what the signature covers, so with the
    one-Assertion rule switched off no forgery yields the attacker's identity."""
    monkeypatch.setattr(saml, "_single_assertion", lambda root: None)
    forgeries = [
        forge.inject_assertion(response(idp, sign=sign), where)
        for sign in ("assertion", "response")
        for where in ("before", "after")
    ]
    forgeries += [
        forge.wrap_in_extensions(response(idp)),
        forge.wrap_in_signature_object(response(idp)),
        forge.wrap_response(response(idp, sign="response")),
    ]
    outcomes = []
    for forged in forgeries:
        try:
            outcomes.append(verifier.verify(forged).subject)
        except SignInRejected as exc:
            outcomes.append(exc.description)
    assert forge.EVIL_EMAIL not in " ".join(outcomes)
    assert outcomes.count("alice@contoso.example") == 1  # the signed one, after the twin
    assert "the signature in the Response does not cover that Response" in outcomes[-1]
    assert "the signature in the Assertion does not cover that Assertion" in outcomes[-2]


def test_a_signature_must_cover_the_element_it_is_in(
    idp: DemoIdentityProvider, verifier: SamlVerifier
) -> None:
    forged = forge.signature_for_other_element(idp, "alice", audience=AUDIENCE, acs_url=ACS)
    reason = rejected(verifier, forged)
    assert reason == (
        "the signature in the Assertion does not cover that Assertion (signature wrapping?)"
    )


def test_a_second_signature_is_rejected(idp: DemoIdentityProvider, verifier: SamlVerifier) -> None:
    root = forge.decode(response(idp))
    signature = forge.assertion_of(root).find(forge.q(forge.DS, "Signature"))
    assert signature is not None
    signature.addnext(copy.deepcopy(signature))
    reason = rejected(verifier, forge.encode(root))
    assert reason == "the Assertion has 2 signatures; one is accepted"


@pytest.mark.parametrize("sign", ["assertion", "response", "both"])
def test_tampered_content_is_rejected(
    idp: DemoIdentityProvider, verifier: SamlVerifier, sign: str
) -> None:
    forged = forge.tamper(
        response(idp, sign=sign), ">alice@contoso.example<", ">mallory@contoso.example<"
    )
    assert "digest mismatch: the signed content was changed" in rejected(verifier, forged)


def test_a_comment_cannot_cut_the_name_id_short(cert_file: Path, tmp_path: Path) -> None:
    users = [DemoUser("m", email="alice@contoso.example.evil.example", name="Mallory")]
    idp = DemoIdentityProvider(IDP_ENTITY, users)
    pem = idp.write_certificate(tmp_path / "idp.pem")
    forged = forge.comment_in_name_id(response(idp, "m"), "alice@contoso.example")
    assert b"<!---->" in base64.b64decode(forged)
    sign_in = SamlVerifier(endpoint((pem,)), SKEW).verify(forged)
    assert sign_in.subject == "alice@contoso.example.evil.example"


def test_sha1_signatures_are_rejected(idp: DemoIdentityProvider, verifier: SamlVerifier) -> None:
    forged = forge.sha1_signed(idp, "alice", audience=AUDIENCE, acs_url=ACS)
    assert rejected(verifier, forged) == (
        "the signature cannot be accepted: Signature method RSA_SHA1 forbidden by configuration"
    )


# --- conditions ------------------------------------------------------------------------------


def test_expired_is_rejected(idp: DemoIdentityProvider, verifier: SamlVerifier) -> None:
    now = time.time()
    saml_response = response(idp, now=now, not_on_or_after_offset=300)
    verifier.verify(saml_response, now=now + 300 + SKEW - 1)  # within the skew
    reason = rejected(verifier, saml_response, now=now + 300 + SKEW + 1)
    assert "has expired (NotOnOrAfter" in reason


def test_not_yet_valid_is_rejected(idp: DemoIdentityProvider, verifier: SamlVerifier) -> None:
    now = time.time()
    saml_response = response(idp, now=now)
    verifier.verify(saml_response, now=now - SKEW + 1)  # the IdP's clock a little ahead
    assert "is not yet valid" in rejected(verifier, saml_response, now=now - SKEW - 1)


def test_wrong_audience_is_rejected(idp: DemoIdentityProvider, verifier: SamlVerifier) -> None:
    reason = rejected(verifier, response(idp, audience="https://other-app.example"))
    assert reason == (
        f"wrong audience: the Assertion is for 'https://other-app.example', not {AUDIENCE!r}"
    )


def test_wrong_destination_is_rejected(idp: DemoIdentityProvider, verifier: SamlVerifier) -> None:
    other = "https://other-app.example/saml/acs"
    reason = rejected(verifier, response(idp, acs_url=other))
    assert reason == f"wrong destination: the Response is for {other!r}, not {ACS!r}"


def test_wrong_recipient_is_rejected(idp: DemoIdentityProvider, verifier: SamlVerifier) -> None:
    other = "https://other-app.example/saml/acs"
    root = forge.decode(response(idp, acs_url=other))
    root.set("Destination", ACS)  # unsigned when only the Assertion is signed
    reason = rejected(verifier, forge.encode(root))
    assert reason == f"wrong destination: the Assertion's Recipient is {other!r}, not {ACS!r}"


def test_destination_is_not_checked_unless_configured(
    idp: DemoIdentityProvider, cert_file: Path
) -> None:
    verifier = SamlVerifier(endpoint((cert_file,), destination=None), SKEW)
    assert verifier.verify(response(idp, acs_url="https://elsewhere.example/acs")).subject


def test_status_not_success_is_rejected(idp: DemoIdentityProvider, verifier: SamlVerifier) -> None:
    forged = forge.with_status(response(idp), "urn:oasis:names:tc:SAML:2.0:status:Responder")
    assert rejected(verifier, forged) == (
        "the IdP did not report success: status 'urn:oasis:names:tc:SAML:2.0:status:Responder'"
    )


# --- hostile input ---------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16"])
def test_external_entities_are_never_read(
    verifier: SamlVerifier, tmp_path: Path, encoding: str
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET-7f3a9c")
    with pytest.raises(SignInRejected) as caught:
        verifier.verify(forge.xxe(secret, encoding))
    assert "a DTD is not allowed" in caught.value.description
    assert "TOPSECRET" not in repr(caught.value) + str(caught.value.__context__)


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16"])
def test_billion_laughs_is_rejected_quickly(verifier: SamlVerifier, encoding: str) -> None:
    started = time.perf_counter()
    reason = rejected(verifier, forge.billion_laughs(encoding=encoding))
    # UTF-8: refused on sight of the DTD; UTF-16 gets past that byte scan, and libxml2's
    # own amplification limit stops it while parsing (nothing is expanded either way).
    assert reason.startswith("the SAMLResponse is refused: ")
    if encoding == "utf-8":
        assert "a DTD is not allowed" in reason
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "the SAMLResponse is empty"),
        ("  \n ", "the SAMLResponse is empty"),
        ("not base64!", "the SAMLResponse is not base64"),
        ("é" * 8, "the SAMLResponse is not base64"),
        (base64.b64encode(b"<samlp:Response").decode(), "it is not well-formed XML"),
        (base64.b64encode(b"\x89PNG\r\n\x1a\n").decode(), "it is not well-formed XML"),
        (base64.b64encode(b"<html><body/></html>").decode(), "not a SAML Response"),
    ],
)
def test_garbage_is_rejected(verifier: SamlVerifier, value: str, reason: str) -> None:
    assert reason in rejected(verifier, value)


def test_huge_input_is_rejected_before_decoding(verifier: SamlVerifier) -> None:
    huge = base64.b64encode(b"<" + b"a" * (MAX_RESPONSE_BYTES + 10) + b"/>").decode()
    started = time.perf_counter()
    assert "too large" in rejected(verifier, huge)
    assert time.perf_counter() - started < 0.5


def test_base64_with_line_breaks_is_accepted(
    idp: DemoIdentityProvider, verifier: SamlVerifier
) -> None:
    saml_response = response(idp)
    wrapped = "\r\n".join(saml_response[i : i + 76] for i in range(0, len(saml_response), 76))
    assert verifier.verify(wrapped).subject == "alice@contoso.example"


def test_encrypted_assertions_are_rejected(
    idp: DemoIdentityProvider, verifier: SamlVerifier
) -> None:
    root = forge.decode(response(idp, sign="response"))
    assertion = forge.assertion_of(root)
    encrypted = forge.q(forge.SAML, "EncryptedAssertion")
    assertion.addnext(root.makeelement(encrypted))
    root.remove(assertion)
    assert "the Assertion is encrypted" in rejected(verifier, forge.encode(root))


# --- the demo IdP over HTTP ------------------------------------------------------------------


@pytest.fixture(scope="module")
def idp_server(idp: DemoIdentityProvider) -> Any:
    with running(ThreadServer(idp.app())) as server:
        yield server


def test_demo_idp_sign_in_journey(idp_server: ThreadServer, verifier: SamlVerifier) -> None:
    with httpx.Client(base_url=idp_server.url) as client:
        page = client.get(
            "/sso", params={"acs": ACS, "audience": AUDIENCE, "RelayState": "/inbox?x=1"}
        )
        assert page.status_code == 200
        assert page.headers["cache-control"] == "no-store"
        for user in ("Alice Johnson", "Bob Lindqvist", "Carol Okafor"):
            assert user in page.text
        assert '<button type="submit" name="user" value="bob">' in page.text
        assert 'value="/inbox?x=1"' in page.text

        login = client.post(
            "/sso/login",
            data={"acs": ACS, "audience": AUDIENCE, "RelayState": "/inbox?x=1", "user": "bob"},
        )
    assert login.status_code == 200
    assert f'<form method="post" action="{ACS}">' in login.text
    assert "<noscript><button" in login.text
    assert "document.forms[0].submit()" in login.text
    fields = dict(re.findall(r'name="(\w+)" value="([^"]*)"', login.text))
    assert html.unescape(fields["RelayState"]) == "/inbox?x=1"
    sign_in = verifier.verify(fields["SAMLResponse"])
    assert (sign_in.subject, sign_in.name) == ("bob@fabrikam.example", "Bob Lindqvist")


def test_demo_idp_refuses_other_acs_urls(idp_server: ThreadServer) -> None:
    evil = "https://evil.example/acs"
    with httpx.Client(base_url=idp_server.url) as client:
        page = client.get("/sso", params={"acs": evil, "audience": AUDIENCE})
        login = client.post("/sso/login", data={"acs": evil, "audience": AUDIENCE, "user": "alice"})
        unknown = client.post("/sso/login", data={"acs": ACS, "audience": AUDIENCE, "user": "eve"})
        missing = client.get("/sso")
    assert {page.status_code, login.status_code, unknown.status_code, missing.status_code} == {400}
    assert "does not sign users in to https://evil.example/acs" in page.text
    assert "SAMLResponse" not in login.text
    assert "Choose one of the demo users" in unknown.text


def test_demo_idp_metadata_configures_the_verifier(
    idp_server: ThreadServer, idp: DemoIdentityProvider, tmp_path: Path
) -> None:
    metadata = httpx.get(f"{idp_server.url}/metadata")
    assert metadata.headers["content-type"] == "application/samlmetadata+xml"
    assert f'Location="{idp_server.url}/sso"' in metadata.text
    path = tmp_path / "metadata.xml"
    path.write_bytes(metadata.content)
    verifier = SamlVerifier(endpoint(idp_metadata=path), SKEW)
    assert verifier.verify(response(idp, "carol")).issuer == IDP_ENTITY


def test_demo_idp_keeps_its_key_in_files(tmp_path: Path) -> None:
    key, cert = tmp_path / "idp.key", tmp_path / "idp.pem"
    first = DemoIdentityProvider(IDP_ENTITY, key_file=key, certificate_file=cert)
    again = DemoIdentityProvider(IDP_ENTITY, key_file=key, certificate_file=cert)
    assert first.certificate_pem == again.certificate_pem == cert.read_text()
    assert key.stat().st_mode & 0o077 == 0

"""A demo SAML identity provider that signs real responses.

It stands in for Entra ID / ADFS / Okta in `consent-proxy demo` and in the tests: a real
RSA key and self-signed certificate, real XML signatures (signxml, RSA-SHA256, exclusive
canonicalisation), and Entra ID's attribute names. It is not an IdP to run for real: there
is no password, anyone may pick any demo user. It does refuse to post to an ACS URL that
is not on its allow-list, because a demo that hands out signed assertions to any URL is a
bad example to copy.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import secrets
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qs

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from lxml import etree
from signxml.algorithms import CanonicalizationMethod
from signxml.signer import XMLSigner
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from proxy.demo.html import page, user_choices
from proxy.demo.users import DEMO_USERS, DemoUser

__all__ = [
    "DEMO_USERS",
    "EMAIL_ATTRIBUTE",
    "GROUPS_ATTRIBUTE",
    "NAME_ATTRIBUTE",
    "OBJECT_ID_ATTRIBUTE",
    "TENANT_ATTRIBUTE",
    "DemoIdentityProvider",
    "DemoUser",
    "SignWhat",
    "sign_enveloped",
]

SAMLP = "urn:oasis:names:tc:SAML:2.0:protocol"
SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
MD = "urn:oasis:names:tc:SAML:2.0:metadata"
DS = "http://www.w3.org/2000/09/xmldsig#"
NSMAP = {"samlp": SAMLP, "saml": SAML}

# The claim names Entra ID puts in its SAML tokens, so a demo config reads like a real one.
EMAIL_ATTRIBUTE = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress"
NAME_ATTRIBUTE = "http://schemas.microsoft.com/identity/claims/displayname"
TENANT_ATTRIBUTE = "http://schemas.microsoft.com/identity/claims/tenantid"
OBJECT_ID_ATTRIBUTE = "http://schemas.microsoft.com/identity/claims/objectidentifier"
GROUPS_ATTRIBUTE = "http://schemas.microsoft.com/ws/2008/06/identity/claims/groups"

STATUS_SUCCESS = "urn:oasis:names:tc:SAML:2.0:status:Success"
BEARER = "urn:oasis:names:tc:SAML:2.0:cm:bearer"
EMAIL_FORMAT = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"
AUTHN_CONTEXT = "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport"
MAX_FORM_BYTES = 16 * 1024
EXCLUSIVE_C14N = CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0

SignWhat = Literal["assertion", "response", "both"] | None


def _q(namespace: str, name: str) -> str:
    return f"{{{namespace}}}{name}"


def _instant(moment: float) -> str:
    return dt.datetime.fromtimestamp(moment, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _new_id() -> str:
    return "_" + secrets.token_hex(16)  # an xs:ID starts with a letter or "_"


def sign_enveloped(
    root: etree._Element,
    target: etree._Element,
    key: rsa.RSAPrivateKey,
    certificate: x509.Certificate,
    signer: XMLSigner | None = None,
) -> etree._Element:
    """Sign `target` (inside `root`) by its ID, the Signature right after its Issuer as SAML
    wants it; return the new document root (signxml signs a copy)."""
    placeholder = etree.Element(_q(DS, "Signature"), Id="placeholder", nsmap={"ds": DS})
    issuer = target.find(_q(SAML, "Issuer"))
    if issuer is not None:
        issuer.addnext(placeholder)
    else:
        target.insert(0, placeholder)
    signer = signer or XMLSigner(
        c14n_algorithm=CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0
    )
    return signer.sign(root, key=key, cert=[certificate], reference_uri=target.get("ID"))


class DemoIdentityProvider:
    """A SAML IdP with a real signing key, demo users and an ACS allow-list."""

    def __init__(
        self,
        entity_id: str,
        users: Sequence[DemoUser] = DEMO_USERS,
        *,
        allowed_acs_urls: Iterable[str] = (),
        key_file: Path | None = None,
        certificate_file: Path | None = None,
    ) -> None:
        """Generate a key and certificate, or, given both files, load them (creating them
        first when neither exists, so a demo keeps its certificate across restarts)."""
        self.entity_id = entity_id
        self.users = {user.id: user for user in users}
        self.allowed_acs_urls = frozenset(allowed_acs_urls)
        if (key_file is None) != (certificate_file is None):
            raise ValueError("give both key_file and certificate_file, or neither")
        if key_file is not None and certificate_file is not None:
            self.private_key, self.certificate = _key_pair_from_files(
                entity_id, key_file, certificate_file
            )
        else:
            self.private_key, self.certificate = _new_key_pair(entity_id)

    @property
    def certificate_pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")

    def write_certificate(self, path: Path | str) -> Path:
        path = Path(path)
        path.write_text(self.certificate_pem, encoding="ascii")
        return path

    def metadata_xml(self, sso_url: str | None = None) -> str:
        """IdP metadata: the entity ID, the signing certificate, the SSO endpoint."""
        entity = etree.Element(
            _q(MD, "EntityDescriptor"), entityID=self.entity_id, nsmap={"md": MD, "ds": DS}
        )
        descriptor = etree.SubElement(
            entity,
            _q(MD, "IDPSSODescriptor"),
            protocolSupportEnumeration=SAMLP,
            WantAuthnRequestsSigned="false",
        )
        key = etree.SubElement(descriptor, _q(MD, "KeyDescriptor"), use="signing")
        data = etree.SubElement(etree.SubElement(key, _q(DS, "KeyInfo")), _q(DS, "X509Data"))
        der = self.certificate.public_bytes(serialization.Encoding.DER)
        etree.SubElement(data, _q(DS, "X509Certificate")).text = base64.b64encode(der).decode()
        etree.SubElement(descriptor, _q(MD, "NameIDFormat")).text = EMAIL_FORMAT
        if sso_url is not None:
            etree.SubElement(
                descriptor,
                _q(MD, "SingleSignOnService"),
                Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect",
                Location=sso_url,
            )
        return etree.tostring(entity, xml_declaration=True, encoding="UTF-8").decode()

    def response(
        self,
        user_id: str,
        *,
        audience: str,
        acs_url: str,
        in_response_to: str | None = None,
        relay_state: str | None = None,
        not_on_or_after_offset: float = 300,
        sign: SignWhat = "assertion",
        now: float | None = None,
    ) -> str:
        """A base64 SAMLResponse for one demo user (HTTP-POST binding). `relay_state`
        travels beside it in the form, not inside it; it is accepted here for symmetry."""
        user = self.users.get(user_id)
        if user is None:
            raise KeyError(f"no demo user {user_id!r}")
        now = time.time() if now is None else now
        root, assertion = self._response_xml(
            user, audience, acs_url, in_response_to, now, now + not_on_or_after_offset
        )
        if sign in ("assertion", "both"):
            root = sign_enveloped(root, assertion, self.private_key, self.certificate)
        if sign in ("response", "both"):
            root = sign_enveloped(root, root, self.private_key, self.certificate)
        return base64.b64encode(etree.tostring(root, encoding="UTF-8")).decode("ascii")

    def _response_xml(
        self,
        user: DemoUser,
        audience: str,
        acs_url: str,
        in_response_to: str | None,
        now: float,
        expires: float,
    ) -> tuple[etree._Element, etree._Element]:
        answer = {"InResponseTo": in_response_to} if in_response_to else {}
        header = {"ID": _new_id(), "Version": "2.0", "IssueInstant": _instant(now)}
        root = etree.Element(
            _q(SAMLP, "Response"), header | {"Destination": acs_url} | answer, nsmap=NSMAP
        )
        etree.SubElement(root, _q(SAML, "Issuer")).text = self.entity_id
        status = etree.SubElement(root, _q(SAMLP, "Status"))
        etree.SubElement(status, _q(SAMLP, "StatusCode"), Value=STATUS_SUCCESS)
        assertion = etree.SubElement(
            root, _q(SAML, "Assertion"), ID=_new_id(), Version="2.0", IssueInstant=_instant(now)
        )
        etree.SubElement(assertion, _q(SAML, "Issuer")).text = self.entity_id
        subject = etree.SubElement(assertion, _q(SAML, "Subject"))
        etree.SubElement(subject, _q(SAML, "NameID"), Format=EMAIL_FORMAT).text = user.email
        confirmation = etree.SubElement(subject, _q(SAML, "SubjectConfirmation"), Method=BEARER)
        etree.SubElement(
            confirmation,
            _q(SAML, "SubjectConfirmationData"),
            {"NotOnOrAfter": _instant(expires), "Recipient": acs_url} | answer,
        )
        conditions = etree.SubElement(
            assertion,
            _q(SAML, "Conditions"),
            NotBefore=_instant(now),
            NotOnOrAfter=_instant(expires),
        )
        restriction = etree.SubElement(conditions, _q(SAML, "AudienceRestriction"))
        etree.SubElement(restriction, _q(SAML, "Audience")).text = audience
        authn = etree.SubElement(
            assertion,
            _q(SAML, "AuthnStatement"),
            AuthnInstant=_instant(now),
            SessionIndex=_new_id(),
        )
        context = etree.SubElement(authn, _q(SAML, "AuthnContext"))
        etree.SubElement(context, _q(SAML, "AuthnContextClassRef")).text = AUTHN_CONTEXT
        _add_attributes(assertion, user)
        return root, assertion

    # -- the web pages ------------------------------------------------------------------------

    def app(self) -> Starlette:
        """GET /sso (pick a user), POST /sso/login (auto-posts to the ACS), GET /metadata."""
        return Starlette(
            routes=[
                Route("/sso", self._sso_page, methods=["GET"], name="sso"),
                Route("/sso/login", self._login, methods=["POST"], name="login"),
                Route("/metadata", self._metadata, methods=["GET"], name="metadata"),
            ]
        )

    async def _sso_page(self, request: Request) -> Response:
        params = request.query_params
        problem = self._bad_request(params.get("acs"), params.get("audience"))
        if problem:
            return _page("Sign-in refused", f"<p>{html.escape(problem)}</p>", 400)
        hidden = _hidden(
            acs=params["acs"],
            audience=params["audience"],
            RelayState=params.get("RelayState", ""),
        )
        buttons = user_choices(self.users.values())
        body = (
            f"<p>This is a demo identity provider: there is no password. Choose who you are "
            f"to sign in to <strong>{html.escape(params['audience'])}</strong>.</p>"
            f'<form method="post" action="{html.escape(str(request.url_for("login")))}">'
            f'{hidden}<ul class="users">{buttons}</ul></form>'
        )
        return _page("Sign in", body)

    async def _login(self, request: Request) -> Response:
        form = await _form(request)
        acs, audience, user_id = form.get("acs", ""), form.get("audience", ""), form.get("user", "")
        problem = self._bad_request(acs, audience)
        if problem is None and user_id not in self.users:
            problem = "Choose one of the demo users listed on the sign-in page."
        if problem is not None:
            return _page("Sign-in refused", f"<p>{html.escape(problem)}</p>", 400)
        saml_response = self.response(user_id, audience=audience, acs_url=acs)
        fields = {"SAMLResponse": saml_response}
        if form.get("RelayState"):
            fields["RelayState"] = form["RelayState"]
        body = (
            f"<p>Signing you in as {html.escape(self.users[user_id].name)}…</p>"
            f'<form method="post" action="{html.escape(acs)}">{_hidden(**fields)}'
            '<noscript><button type="submit">Continue</button></noscript></form>'
            "<script>document.forms[0].submit()</script>"
        )
        return _page("Signing you in", body)

    async def _metadata(self, request: Request) -> Response:
        xml = self.metadata_xml(str(request.url_for("sso")))
        return Response(xml, media_type="application/samlmetadata+xml")

    def _bad_request(self, acs: str | None, audience: str | None) -> str | None:
        if not acs or not audience:
            return "The request must name the application (acs and audience)."
        if acs not in self.allowed_acs_urls:
            return f"This identity provider does not sign users in to {acs}: it is not allowed."
        return None


def _add_attributes(assertion: etree._Element, user: DemoUser) -> None:
    statement = etree.SubElement(assertion, _q(SAML, "AttributeStatement"))
    values: dict[str, tuple[str, ...]] = {
        EMAIL_ATTRIBUTE: (user.email,),
        NAME_ATTRIBUTE: (user.name,),
        TENANT_ATTRIBUTE: (user.tenant_id,) if user.tenant_id else (),
        OBJECT_ID_ATTRIBUTE: (user.object_id,) if user.object_id else (),
        GROUPS_ATTRIBUTE: user.groups,
    }
    for name, items in values.items():
        if not items:
            continue
        attribute = etree.SubElement(statement, _q(SAML, "Attribute"), Name=name)
        for item in items:
            etree.SubElement(attribute, _q(SAML, "AttributeValue")).text = item


def _new_key_pair(entity_id: str) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, entity_id[:64] or "demo idp")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, certificate


def _key_pair_from_files(
    entity_id: str, key_file: Path, certificate_file: Path
) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    if not key_file.exists() and not certificate_file.exists():
        key, certificate = _new_key_pair(entity_id)
        key_file.touch(mode=0o600)
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        certificate_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        return key, certificate
    loaded = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    if not isinstance(loaded, rsa.RSAPrivateKey):
        raise ValueError(f"{key_file}: the demo IdP signs with an RSA key")
    return loaded, x509.load_pem_x509_certificate(certificate_file.read_bytes())


async def _form(request: Request) -> dict[str, str]:
    """A small urlencoded form, read without python-multipart."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return {}
    try:
        parsed = parse_qs(body.decode("utf-8"), max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        return {}
    return {name: values[0] for name, values in parsed.items()}


def _hidden(**fields: str) -> str:
    return "".join(
        f'<input type="hidden" name="{html.escape(name)}" value="{html.escape(value)}">'
        for name, value in fields.items()
    )


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    style = (
        "ul.users{list-style:none;padding:0}ul.users li{margin:.5rem 0}"
        "button{font:inherit;padding:.5rem 1rem;width:100%;text-align:left}"
    )
    return page(title, body, status, site="Demo identity provider", style=style)

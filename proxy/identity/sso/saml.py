"""Who signed in, from a SAML 2.0 Response the browser POSTs to the app's ACS endpoint.

The proxy is not the service provider: it observes the HTTP-POST binding on its way to the
app and believes a sign-in only when the IdP's signature holds. What it checks, and why:

- Trust is pinned. Signatures are checked against the IdP certificates from the config
  (PEM files and/or the IdP metadata), never against a certificate the message carries.
  As in the SAML metadata interoperability profile, the pinned *key* is what is trusted:
  the certificate's own validity dates are not enforced (an IdP whose certificate expired
  but still signs is a rotation to do, not an attack).
- See what is signed. Identity is read only from the element the signature covers (the
  canonicalised copy signxml returns), and that element must be the Response or its one
  Assertion, referenced by its own ID from the signature enveloped in it. A Response with
  more than one Assertion, or an encrypted one the proxy cannot read, is refused: that is
  where signature-wrapping attacks hide.
- Hostile XML is refused before it costs anything: no DTD, no entities (XXE, billion
  laughs), no network, a size limit, and SHA-1 signature or digest algorithms are refused.
- The assertion must be for this app (Audience, and Destination / Recipient when
  configured) and within its validity window, give or take the configured clock skew.

Replay is the caller's job: `SignIn.replay_key` (the assertion ID) must be accepted once
until `replay_until`, in the shared store so that replicas agree.

`SamlVerifier.verify` is synchronous CPU work (base64, XML parsing, RSA): callers on the
event loop run it in a thread (``await asyncio.to_thread(verifier.verify, value)``). A
verifier holds no per-call state and may be used from several threads at once.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from lxml import etree
from signxml.algorithms import DigestAlgorithm, SignatureMethod
from signxml.exceptions import InvalidDigest, InvalidInput, InvalidSignature, SignXMLException
from signxml.verifier import SignatureConfiguration, VerifyResult, XMLVerifier

from proxy.config import SamlEndpoint
from proxy.errors import ConfigError
from proxy.identity.sso import SignIn, SignInRejected, kept_attributes

__all__ = ["MAX_RESPONSE_BYTES", "SamlVerifier", "TrustedCertificate", "load_certificates"]

log = logging.getLogger("consent_proxy.sso")

SAMLP = "urn:oasis:names:tc:SAML:2.0:protocol"
SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
MD = "urn:oasis:names:tc:SAML:2.0:metadata"
DS = "http://www.w3.org/2000/09/xmldsig#"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
XML_NS = "http://www.w3.org/XML/1998/namespace"
STATUS_SUCCESS = "urn:oasis:names:tc:SAML:2.0:status:Success"
BEARER = "urn:oasis:names:tc:SAML:2.0:cm:bearer"

# Real responses are a few KiB; a large group list makes tens. Anything near this is abuse.
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
_MAX_ENCODED_CHARS = 4 * (MAX_RESPONSE_BYTES // 3 + 1)

# Explicit, so that a future signxml default cannot widen it: SHA-2 only, never SHA-1.
SIGNATURE_METHODS = frozenset(
    {
        SignatureMethod.RSA_SHA256,
        SignatureMethod.RSA_SHA384,
        SignatureMethod.RSA_SHA512,
        SignatureMethod.SHA256_RSA_MGF1,
        SignatureMethod.SHA384_RSA_MGF1,
        SignatureMethod.SHA512_RSA_MGF1,
        SignatureMethod.ECDSA_SHA256,
        SignatureMethod.ECDSA_SHA384,
        SignatureMethod.ECDSA_SHA512,
    }
)
DIGEST_ALGORITHMS = frozenset(
    {DigestAlgorithm.SHA256, DigestAlgorithm.SHA384, DigestAlgorithm.SHA512}
)

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_REASON_CHARS = 160


def _q(namespace: str, name: str) -> str:
    return f"{{{namespace}}}{name}"


# signxml's `location`: where the enveloped Signature must sit (a child of the Assertion).
_ASSERTION_SIG = f"./{_q(SAML, 'Assertion')}/"


def _parser() -> etree.XMLParser:
    # A new parser per call: lxml parsers must not be shared between threads.
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
    )


def _parse_xml(data: bytes) -> etree._Element:
    """Parse untrusted XML; raise ValueError for anything with a DTD or entities."""
    # Cheap refusal before libxml2 sees a DTD at all (billion laughs costs nothing);
    # the docinfo check below catches the same in encodings this scan cannot read.
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise ValueError("a DTD is not allowed (entities and external references are refused)")
    try:
        root = etree.fromstring(data, parser=_parser())
    except etree.XMLSyntaxError:
        raise ValueError("it is not well-formed XML") from None
    docinfo = root.getroottree().docinfo
    if docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise ValueError("a DTD is not allowed (entities and external references are refused)")
    if any(True for _ in root.iter(etree.Entity)):
        raise ValueError("entity references are not allowed")
    return root


# --- trusted certificates --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TrustedCertificate:
    """An IdP signing certificate, where it came from, and (from metadata) whose it is."""

    certificate: x509.Certificate
    source: str
    entity_id: str | None = None


def load_certificates(endpoint: SamlEndpoint) -> tuple[TrustedCertificate, ...]:
    """The IdP signing certificates of one endpoint; ConfigError naming every bad file."""
    found: list[TrustedCertificate] = []
    problems: list[str] = []
    for path in endpoint.idp_certificates:
        try:
            found.extend(_from_pem_file(path))
        except ValueError as exc:
            problems.append(f"idp_certificates: {path}: {exc}")
    if endpoint.idp_metadata is not None:
        try:
            found.extend(_from_metadata_file(endpoint.idp_metadata))
        except ValueError as exc:
            problems.append(f"idp_metadata: {endpoint.idp_metadata}: {exc}")
    if not found and not problems:
        problems.append("no IdP signing certificate given (idp_certificates or idp_metadata)")
    if problems:
        raise ConfigError(problems, f"sso endpoint {endpoint.path}")
    for trusted in found:
        if trusted.certificate.not_valid_after_utc < datetime.now(UTC):
            log.warning(
                "the IdP certificate from %s expired on %s; its key is still trusted, but "
                "the IdP is due a certificate rollover",
                trusted.source,
                trusted.certificate.not_valid_after_utc.date(),
            )
    return tuple(found)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read the file: {exc.strerror or exc}") from None


def _from_pem_file(path: Path) -> list[TrustedCertificate]:
    try:
        certificates = x509.load_pem_x509_certificates(_read(path))
    except ValueError:
        raise ValueError(
            "not a PEM certificate file: save the IdP's signing certificate as PEM "
            "(-----BEGIN CERTIFICATE-----)"
        ) from None
    return [TrustedCertificate(c, str(path)) for c in certificates]


def _from_metadata_file(path: Path) -> list[TrustedCertificate]:
    try:
        root = _parse_xml(_read(path))
    except ValueError as exc:
        raise ValueError(f"not usable as SAML metadata: {exc}") from None
    found: list[TrustedCertificate] = []
    for entity in root.iter(_q(MD, "EntityDescriptor")):
        for text in _signing_certificates(entity):
            try:
                der = base64.b64decode("".join(text.split()), validate=True)
                certificate = x509.load_der_x509_certificate(der)
            except (binascii.Error, ValueError):
                raise ValueError("an X509Certificate in the metadata cannot be read") from None
            found.append(TrustedCertificate(certificate, str(path), entity.get("entityID")))
    if not found:
        raise ValueError(
            "no IdP signing certificate in it (IDPSSODescriptor/KeyDescriptor with "
            'use="signing" or no use)'
        )
    return found


def _signing_certificates(entity: etree._Element) -> Iterator[str]:
    for descriptor in entity.iterfind(f"{_q(MD, 'IDPSSODescriptor')}/{_q(MD, 'KeyDescriptor')}"):
        if descriptor.get("use") not in (None, "signing"):
            continue
        for element in descriptor.iter(_q(DS, "X509Certificate")):
            yield element.text or ""


# --- verification ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Signed:
    """An element as its signature covers it, and the certificate that verified it."""

    element: etree._Element
    trusted: TrustedCertificate


class SamlVerifier:
    """Verifies the SAML Responses posted to one ACS endpoint. Thread-safe."""

    def __init__(self, endpoint: SamlEndpoint, clock_skew: float) -> None:
        self.endpoint = endpoint
        self.clock_skew = clock_skew
        self.certificates = load_certificates(endpoint)

    def verify(self, saml_response_b64: str, now: float | None = None) -> SignIn:
        """The sign-in a base64 SAMLResponse proves, or SignInRejected saying why not.

        Synchronous CPU work: run it in a thread from async code.
        """
        now = time.time() if now is None else now
        root = _parse_response(_decode(saml_response_b64))
        _check_status(root)  # an IdP's error answer carries no assertion: say so first
        _single_assertion(root)
        signed_response = self._signed(root, root, "./", now)
        signed_assertion = self._signed(root, _child(root, SAML, "Assertion"), _ASSERTION_SIG, now)
        response = signed_response.element if signed_response is not None else root
        if signed_assertion is not None:
            assertion, trusted = signed_assertion.element, signed_assertion.trusted
        elif signed_response is not None:
            assertion = _child(response, SAML, "Assertion")
            trusted = signed_response.trusted
        else:
            raise SignInRejected("the SAML Response is not signed (neither Response nor Assertion)")
        self._check_destination(response, assertion)
        return self._sign_in(assertion, trusted, now)

    # -- signatures

    def _signed(
        self, root: etree._Element, element: etree._Element, location: str, now: float
    ) -> _Signed | None:
        """The element as signed by a pinned certificate; None when it carries no signature."""
        what = _local(element.tag)
        signatures = len(element.findall(_q(DS, "Signature")))
        if signatures == 0:
            return None
        if signatures > 1:
            raise SignInRejected(f"the {what} has {signatures} signatures; one is accepted")
        for trusted in self.certificates:
            result = self._verify_with(root, trusted, location, now)
            if result is not None:
                return _Signed(_signed_element(root, element, result), trusted)
        raise SignInRejected(
            f"the {what} signature is not made with a trusted IdP key "
            f"({len(self.certificates)} pinned certificate(s) tried)"
        )

    def _verify_with(
        self, root: etree._Element, trusted: TrustedCertificate, location: str, now: float
    ) -> VerifyResult | None:
        """signxml's verdict for one certificate: None when this is not the signing key."""
        config = SignatureConfiguration(
            location=location,
            expect_references=True,  # any number: counted below, with a clear reason
            signature_methods=SIGNATURE_METHODS,
            digest_algorithms=DIGEST_ALGORITHMS,
            verification_time=_within_validity(trusted.certificate, now),
        )
        try:
            # A new XMLVerifier per call: verify() keeps its settings on the instance.
            results = XMLVerifier().verify(
                root, x509_cert=trusted.certificate, parser=_parser(), expect_config=config
            )
        except InvalidDigest:
            raise SignInRejected(
                "digest mismatch: the signed content was changed after the IdP signed it"
            ) from None
        except InvalidSignature:
            return None  # a valid signature needs this key, or another pinned one
        except InvalidInput as exc:
            if "does not match specified signature algorithm" in str(exc):
                return None  # e.g. an EC certificate tried on an RSA signature
            raise SignInRejected(f"the signature cannot be accepted: {_short(exc)}") from None
        except (SignXMLException, etree.LxmlError, ValueError, KeyError) as exc:
            raise SignInRejected(f"the signature cannot be checked: {_short(exc)}") from None
        if isinstance(results, VerifyResult) or len(results) != 1:
            raise SignInRejected("the signature must have exactly one Reference, as SAML requires")
        return results[0]

    # -- the Response

    def _check_destination(self, response: etree._Element, assertion: etree._Element) -> None:
        """Response@Destination must match; each Recipient is checked with its confirmation.

        When only the Assertion is signed, Destination is unsigned: the signed Recipient is
        the binding check, Destination a consistency one (as every SP does it).
        """
        expected = self.endpoint.destination
        if expected is None:
            return
        destination = response.get("Destination")
        if destination is not None and destination != expected:
            raise SignInRejected(
                f"wrong destination: the Response is for {_short(destination)!r}, not {expected!r}"
            )
        recipients = assertion.iterfind(f".//{_q(SAML, 'SubjectConfirmationData')}[@Recipient]")
        if destination is None and next(recipients, None) is None:
            raise SignInRejected(
                "wrong destination: neither a Destination nor a Recipient says where the "
                f"Response is for, and {expected!r} is required"
            )

    # -- the Assertion

    def _sign_in(
        self, assertion: etree._Element, trusted: TrustedCertificate, now: float
    ) -> SignIn:
        issuer = _text(assertion.find(_q(SAML, "Issuer")))
        if not issuer:
            raise SignInRejected("the Assertion has no Issuer")
        if trusted.entity_id is not None and issuer != trusted.entity_id:
            raise SignInRejected(
                f"the Assertion is issued by {_short(issuer)!r}, but its signing key belongs "
                f"to {trusted.entity_id!r} in the IdP metadata"
            )
        assertion_id = assertion.get("ID")
        if not assertion_id:
            raise SignInRejected("the Assertion has no ID")
        self._check_issue_instant(assertion, now)
        expiries = [*self._check_conditions(assertion, now), *self._check_subject(assertion, now)]
        if not expiries:
            raise SignInRejected(
                "the Assertion has no NotOnOrAfter: it would be valid, and replayable, forever"
            )
        values = _attribute_values(assertion)
        name_id = _text(assertion.find(f"{_q(SAML, 'Subject')}/{_q(SAML, 'NameID')}"))
        return SignIn(
            subject=self._subject(name_id, values),
            email=_first(values, self.endpoint.email_attribute) or _email_like(name_id),
            name=_first(values, self.endpoint.name_attribute),
            tenant_id=_first(values, self.endpoint.tenant_attribute),
            object_id=_first(values, self.endpoint.object_id_attribute),
            attributes=kept_attributes(
                values, self.endpoint.attributes, self.endpoint.groups_attribute
            ),
            method="saml",
            issuer=issuer,
            replay_key=assertion_id,
            replay_until=min(expiries),
        )

    def _subject(self, name_id: str | None, values: Mapping[str, tuple[str, ...]]) -> str:
        if self.endpoint.identity == "name_id":
            if not name_id:
                raise SignInRejected("the Assertion has no NameID (an encrypted one is unreadable)")
            return name_id
        subject = _first(values, self.endpoint.identity)
        if not subject:
            raise SignInRejected(f"the Assertion has no {self.endpoint.identity!r} attribute")
        return subject

    def _check_issue_instant(self, assertion: etree._Element, now: float) -> None:
        issued = assertion.get("IssueInstant")
        if issued is not None and _instant(issued, "IssueInstant") > now + self.clock_skew:
            raise SignInRejected(f"the Assertion is not yet valid: issued at {issued} (future)")

    def _check_conditions(self, assertion: etree._Element, now: float) -> list[float]:
        conditions = assertion.find(_q(SAML, "Conditions"))
        if conditions is None:
            raise SignInRejected("the Assertion has no Conditions (so no audience)")
        expiry = self._check_window(conditions, "the Assertion", now)
        restrictions = conditions.findall(_q(SAML, "AudienceRestriction"))
        if not restrictions:
            raise SignInRejected("the Assertion has no AudienceRestriction: it names no audience")
        for restriction in restrictions:
            audiences = [_text(a) or "" for a in restriction.iter(_q(SAML, "Audience"))]
            if self.endpoint.audience not in audiences:
                given, wanted = _short(", ".join(audiences)), self.endpoint.audience
                raise SignInRejected(
                    f"wrong audience: the Assertion is for {given!r}, not {wanted!r}"
                )
        return [expiry] if expiry is not None else []

    def _check_subject(self, assertion: etree._Element, now: float) -> list[float]:
        confirmations = [
            c
            for c in assertion.iterfind(f"{_q(SAML, 'Subject')}/{_q(SAML, 'SubjectConfirmation')}")
            if c.get("Method") == BEARER
        ]
        if not confirmations:
            raise SignInRejected("the Assertion has no bearer SubjectConfirmation")
        problems: list[SignInRejected] = []
        for confirmation in confirmations:
            try:
                return self._check_confirmation(confirmation, now)
            except SignInRejected as exc:
                problems.append(exc)
        raise problems[0]

    def _check_confirmation(self, confirmation: etree._Element, now: float) -> list[float]:
        data = confirmation.find(_q(SAML, "SubjectConfirmationData"))
        if data is None:
            return []
        expiry = self._check_window(data, "the SubjectConfirmation", now)
        recipient, expected = data.get("Recipient"), self.endpoint.destination
        if expected is not None and recipient is not None and recipient != expected:
            raise SignInRejected(
                f"wrong destination: the Assertion's Recipient is {_short(recipient)!r}, "
                f"not {expected!r}"
            )
        return [expiry] if expiry is not None else []

    def _check_window(self, element: etree._Element, what: str, now: float) -> float | None:
        not_before, not_on_or_after = element.get("NotBefore"), element.get("NotOnOrAfter")
        if not_before is not None and _instant(not_before, "NotBefore") > now + self.clock_skew:
            raise SignInRejected(f"{what} is not yet valid (NotBefore {_short(not_before)})")
        if not_on_or_after is None:
            return None
        expiry = _instant(not_on_or_after, "NotOnOrAfter")
        if expiry <= now - self.clock_skew:
            raise SignInRejected(f"{what} has expired (NotOnOrAfter {_short(not_on_or_after)})")
        return expiry


def _decode(value: str) -> bytes:
    compact = "".join(value.split())
    if not compact:
        raise SignInRejected("the SAMLResponse is empty")
    if len(compact) > _MAX_ENCODED_CHARS:
        raise SignInRejected(f"the SAMLResponse is too large (over {MAX_RESPONSE_BYTES} bytes)")
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise SignInRejected("the SAMLResponse is not base64") from None


def _parse_response(data: bytes) -> etree._Element:
    try:
        root = _parse_xml(data)
    except ValueError as exc:
        raise SignInRejected(f"the SAMLResponse is refused: {exc}") from None
    if root.tag != _q(SAMLP, "Response"):
        raise SignInRejected(f"not a SAML Response: the document is a {_short(_local(root.tag))}")
    return root


def _single_assertion(root: etree._Element) -> None:
    if next(root.iter(_q(SAML, "EncryptedAssertion")), None) is not None:
        raise SignInRejected(
            "the Assertion is encrypted: the proxy cannot read it (ask the IdP to sign, not "
            "encrypt, assertions for this app, or use the upstream identity method)"
        )
    count = sum(1 for _ in root.iter(_q(SAML, "Assertion")))
    if count != 1:
        detail = "no Assertion" if count == 0 else f"more than one Assertion ({count})"
        raise SignInRejected(f"the Response has {detail}; exactly one is accepted")
    if root.find(_q(SAML, "Assertion")) is None:
        raise SignInRejected("the Assertion is not a child of the Response (signature wrapping?)")


def _signed_element(
    root: etree._Element, element: etree._Element, result: VerifyResult
) -> etree._Element:
    """What the signature covers, which must be the element it is enveloped in, by its
    unique ID; returned as signxml re-read it from the canonical form (comments gone)."""
    element_id = element.get("ID")
    signed = result.signed_xml
    references = result.signature_xml.findall(f"{_q(DS, 'SignedInfo')}/{_q(DS, 'Reference')}")
    ok = (
        element_id is not None
        and signed is not None
        and signed.tag == element.tag
        and signed.get("ID") == element_id
        and [r.get("URI") for r in references] == [f"#{element_id}"]
        and _count_ids(root, element_id) == 1
    )
    if not ok or signed is None:
        raise SignInRejected(
            f"the signature in the {_local(element.tag)} does not cover that {_local(element.tag)} "
            "(signature wrapping?)"
        )
    return signed


def _count_ids(root: etree._Element, value: str) -> int:
    return sum(
        1
        for e in root.iter()
        if value in (e.get("ID"), e.get("Id"), e.get("id"), e.get(_q(XML_NS, "id")))
    )


def _check_status(response: etree._Element) -> None:
    code = response.find(f"{_q(SAMLP, 'Status')}/{_q(SAMLP, 'StatusCode')}")
    value = code.get("Value") if code is not None else None
    if value != STATUS_SUCCESS:
        shown = repr(_short(value)) if value is not None else "(none given)"
        raise SignInRejected(f"the IdP did not report success: status {shown}")


def _attribute_values(assertion: etree._Element) -> dict[str, tuple[str, ...]]:
    values: dict[str, list[str]] = {}
    path = f"{_q(SAML, 'AttributeStatement')}/{_q(SAML, 'Attribute')}"
    for attribute in assertion.iterfind(path):
        name = attribute.get("Name")
        if not name:
            continue
        for value in attribute.iterfind(_q(SAML, "AttributeValue")):
            if value.get(_q(XSI, "nil")) not in ("true", "1"):
                values.setdefault(name, []).append("".join(value.itertext()).strip())
    return {name: tuple(v) for name, v in values.items()}


def _first(values: Mapping[str, tuple[str, ...]], name: str | None) -> str | None:
    found = values.get(name, ()) if name is not None else ()
    return next((v for v in found if v), None)


def _email_like(value: str | None) -> str | None:
    return value if value is not None and _EMAIL.fullmatch(value) else None


def _child(element: etree._Element, namespace: str, name: str) -> etree._Element:
    found = element.find(_q(namespace, name))
    if found is None:
        raise SignInRejected(f"the {_local(element.tag)} has no {name}")
    return found


def _text(element: etree._Element | None) -> str | None:
    return "".join(element.itertext()).strip() if element is not None else None


def _instant(value: str, what: str) -> float:
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise SignInRejected(f"{what} is not a valid time: {_short(value)!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # SAML times are UTC
    return moment.timestamp()


def _within_validity(certificate: x509.Certificate, now: float) -> datetime:
    """`now`, moved inside the certificate's dates: the pinned key is trusted, not its dates."""
    moment = datetime.fromtimestamp(now, UTC)
    return min(max(moment, certificate.not_valid_before_utc), certificate.not_valid_after_utc)


def _local(tag: object) -> str:
    return etree.QName(str(tag)).localname if isinstance(tag, str) else "node"


def _short(value: object) -> str:
    text = str(value)
    return text if len(text) <= _REASON_CHARS else text[:_REASON_CHARS] + "…"

"""Which SAML signatures the proxy believes: pinned IdP keys, hostile XML refused first.

Trust is pinned: signatures are checked against the IdP certificates from the config (PEM
files and/or the IdP metadata), never against a certificate the message carries; as in the
SAML metadata interoperability profile the pinned *key* is trusted, not the certificate's
dates. Untrusted XML is parsed with no DTD, no entities and no network. Only SHA-2
signature and digest algorithms are accepted, and a signature counts only for the element
it is enveloped in, referenced by that element's unique ID.

The SAML Response rules (audience, destination, validity, who signed in) are in `saml`.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Iterator
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
from proxy.identity.sso import SignInRejected

__all__ = [
    "Signed",
    "TrustedCertificate",
    "load_certificates",
    "local_name",
    "parse_xml",
    "qname",
    "short",
    "verify_signature",
]

log = logging.getLogger("consent_proxy.sso")

MD = "urn:oasis:names:tc:SAML:2.0:metadata"
DS = "http://www.w3.org/2000/09/xmldsig#"
XML_NS = "http://www.w3.org/XML/1998/namespace"

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

# Reasons quote what a message says; an attacker decides how long that is.
REASON_CHARS = 160


def qname(namespace: str, name: str) -> str:
    return f"{{{namespace}}}{name}"


def local_name(tag: object) -> str:
    return etree.QName(str(tag)).localname if isinstance(tag, str) else "node"


def short(value: object) -> str:
    text = str(value)
    return text if len(text) <= REASON_CHARS else text[:REASON_CHARS] + "…"


def _parser() -> etree.XMLParser:
    # A new parser per call: lxml parsers must not be shared between threads.
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
    )


def parse_xml(data: bytes) -> etree._Element:
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
        root = parse_xml(_read(path))
    except ValueError as exc:
        raise ValueError(f"not usable as SAML metadata: {exc}") from None
    found: list[TrustedCertificate] = []
    for entity in root.iter(qname(MD, "EntityDescriptor")):
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
    path = f"{qname(MD, 'IDPSSODescriptor')}/{qname(MD, 'KeyDescriptor')}"
    for descriptor in entity.iterfind(path):
        if descriptor.get("use") not in (None, "signing"):
            continue
        for element in descriptor.iter(qname(DS, "X509Certificate")):
            yield element.text or ""


# --- verification ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Signed:
    """An element as its signature covers it, and the certificate that verified it."""

    element: etree._Element
    trusted: TrustedCertificate


def verify_signature(
    certificates: tuple[TrustedCertificate, ...],
    root: etree._Element,
    element: etree._Element,
    location: str,
    now: float,
) -> Signed | None:
    """The element as signed by a pinned certificate; None when it carries no signature."""
    what = local_name(element.tag)
    signatures = len(element.findall(qname(DS, "Signature")))
    if signatures == 0:
        return None
    if signatures > 1:
        raise SignInRejected(f"the {what} has {signatures} signatures; one is accepted")
    for trusted in certificates:
        result = _verify_with(root, trusted, location, now)
        if result is not None:
            return Signed(_signed_element(root, element, result), trusted)
    raise SignInRejected(
        f"the {what} signature is not made with a trusted IdP key "
        f"({len(certificates)} pinned certificate(s) tried)"
    )


def _verify_with(
    root: etree._Element, trusted: TrustedCertificate, location: str, now: float
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
        raise SignInRejected(f"the signature cannot be accepted: {short(exc)}") from None
    except (SignXMLException, etree.LxmlError, ValueError, KeyError) as exc:
        raise SignInRejected(f"the signature cannot be checked: {short(exc)}") from None
    if isinstance(results, VerifyResult) or len(results) != 1:
        raise SignInRejected("the signature must have exactly one Reference, as SAML requires")
    return results[0]


def _signed_element(
    root: etree._Element, element: etree._Element, result: VerifyResult
) -> etree._Element:
    """What the signature covers, which must be the element it is enveloped in, by its
    unique ID; returned as signxml re-read it from the canonical form (comments gone)."""
    element_id = element.get("ID")
    signed = result.signed_xml
    path = f"{qname(DS, 'SignedInfo')}/{qname(DS, 'Reference')}"
    references = result.signature_xml.findall(path)
    ok = (
        element_id is not None
        and signed is not None
        and signed.tag == element.tag
        and signed.get("ID") == element_id
        and [r.get("URI") for r in references] == [f"#{element_id}"]
        and _count_ids(root, element_id) == 1
    )
    if not ok or signed is None:
        what = local_name(element.tag)
        raise SignInRejected(
            f"the signature in the {what} does not cover that {what} (signature wrapping?)"
        )
    return signed


def _count_ids(root: etree._Element, value: str) -> int:
    return sum(
        1
        for e in root.iter()
        if value in (e.get("ID"), e.get("Id"), e.get("id"), e.get(qname(XML_NS, "id")))
    )


def _within_validity(certificate: x509.Certificate, now: float) -> datetime:
    """`now`, moved inside the certificate's dates: the pinned key is trusted, not its dates."""
    moment = datetime.fromtimestamp(now, UTC)
    return min(max(moment, certificate.not_valid_before_utc), certificate.not_valid_after_utc)

"""Who signed in, from a SAML 2.0 Response the browser POSTs to the app's ACS endpoint.

The proxy is not the service provider: it observes the HTTP-POST binding on its way to the
app and believes a sign-in only when the IdP's signature holds. What it checks, and why:

- Trust is pinned. Signatures are checked against the IdP certificates from the config
  (PEM files and/or the IdP metadata), never against a certificate the message carries.
  As in the SAML metadata interoperability profile, the pinned *key* is what is trusted:
  the certificate's own validity dates are not enforced (an IdP whose certificate expired
  but still signs is a rotation to do, not an attack). `saml_signature` does this part,
  with the safe XML parsing.
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
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime

from lxml import etree

from proxy.config import SamlEndpoint
from proxy.identity.sso import SignIn, SignInRejected, kept_attributes
from proxy.identity.sso.saml_signature import (
    Signed,
    TrustedCertificate,
    load_certificates,
    local_name,
    parse_xml,
    qname,
    short,
    verify_signature,
)

__all__ = ["MAX_RESPONSE_BYTES", "SamlVerifier", "TrustedCertificate", "load_certificates"]

SAMLP = "urn:oasis:names:tc:SAML:2.0:protocol"
SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
STATUS_SUCCESS = "urn:oasis:names:tc:SAML:2.0:status:Success"
BEARER = "urn:oasis:names:tc:SAML:2.0:cm:bearer"

# Real responses are a few KiB; a large group list makes tens. Anything near this is abuse.
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
_MAX_ENCODED_CHARS = 4 * (MAX_RESPONSE_BYTES // 3 + 1)

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")

# signxml's `location`: where the enveloped Signature must sit (a child of the Assertion).
_ASSERTION_SIG = f"./{qname(SAML, 'Assertion')}/"


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

    def _signed(
        self, root: etree._Element, element: etree._Element, location: str, now: float
    ) -> Signed | None:
        return verify_signature(self.certificates, root, element, location, now)

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
                f"wrong destination: the Response is for {short(destination)!r}, not {expected!r}"
            )
        recipients = assertion.iterfind(f".//{qname(SAML, 'SubjectConfirmationData')}[@Recipient]")
        if destination is None and next(recipients, None) is None:
            raise SignInRejected(
                "wrong destination: neither a Destination nor a Recipient says where the "
                f"Response is for, and {expected!r} is required"
            )

    # -- the Assertion

    def _sign_in(
        self, assertion: etree._Element, trusted: TrustedCertificate, now: float
    ) -> SignIn:
        issuer = _text(assertion.find(qname(SAML, "Issuer")))
        if not issuer:
            raise SignInRejected("the Assertion has no Issuer")
        if trusted.entity_id is not None and issuer != trusted.entity_id:
            raise SignInRejected(
                f"the Assertion is issued by {short(issuer)!r}, but its signing key belongs "
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
        name_id = _text(assertion.find(f"{qname(SAML, 'Subject')}/{qname(SAML, 'NameID')}"))
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
        conditions = assertion.find(qname(SAML, "Conditions"))
        if conditions is None:
            raise SignInRejected("the Assertion has no Conditions (so no audience)")
        expiry = self._check_window(conditions, "the Assertion", now)
        restrictions = conditions.findall(qname(SAML, "AudienceRestriction"))
        if not restrictions:
            raise SignInRejected("the Assertion has no AudienceRestriction: it names no audience")
        for restriction in restrictions:
            audiences = [_text(a) or "" for a in restriction.iter(qname(SAML, "Audience"))]
            if self.endpoint.audience not in audiences:
                given, wanted = short(", ".join(audiences)), self.endpoint.audience
                raise SignInRejected(
                    f"wrong audience: the Assertion is for {given!r}, not {wanted!r}"
                )
        return [expiry] if expiry is not None else []

    def _check_subject(self, assertion: etree._Element, now: float) -> list[float]:
        confirmations = [
            c
            for c in assertion.iterfind(
                f"{qname(SAML, 'Subject')}/{qname(SAML, 'SubjectConfirmation')}"
            )
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
        data = confirmation.find(qname(SAML, "SubjectConfirmationData"))
        if data is None:
            return []
        expiry = self._check_window(data, "the SubjectConfirmation", now)
        recipient, expected = data.get("Recipient"), self.endpoint.destination
        if expected is not None and recipient is not None and recipient != expected:
            raise SignInRejected(
                f"wrong destination: the Assertion's Recipient is {short(recipient)!r}, "
                f"not {expected!r}"
            )
        return [expiry] if expiry is not None else []

    def _check_window(self, element: etree._Element, what: str, now: float) -> float | None:
        not_before, not_on_or_after = element.get("NotBefore"), element.get("NotOnOrAfter")
        if not_before is not None and _instant(not_before, "NotBefore") > now + self.clock_skew:
            raise SignInRejected(f"{what} is not yet valid (NotBefore {short(not_before)})")
        if not_on_or_after is None:
            return None
        expiry = _instant(not_on_or_after, "NotOnOrAfter")
        if expiry <= now - self.clock_skew:
            raise SignInRejected(f"{what} has expired (NotOnOrAfter {short(not_on_or_after)})")
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
        root = parse_xml(data)
    except ValueError as exc:
        raise SignInRejected(f"the SAMLResponse is refused: {exc}") from None
    if root.tag != qname(SAMLP, "Response"):
        raise SignInRejected(
            f"not a SAML Response: the document is a {short(local_name(root.tag))}"
        )
    return root


def _single_assertion(root: etree._Element) -> None:
    if next(root.iter(qname(SAML, "EncryptedAssertion")), None) is not None:
        raise SignInRejected(
            "the Assertion is encrypted: the proxy cannot read it (ask the IdP to sign, not "
            "encrypt, assertions for this app, or use the upstream identity method)"
        )
    count = sum(1 for _ in root.iter(qname(SAML, "Assertion")))
    if count != 1:
        detail = "no Assertion" if count == 0 else f"more than one Assertion ({count})"
        raise SignInRejected(f"the Response has {detail}; exactly one is accepted")
    if root.find(qname(SAML, "Assertion")) is None:
        raise SignInRejected("the Assertion is not a child of the Response (signature wrapping?)")


def _check_status(response: etree._Element) -> None:
    code = response.find(f"{qname(SAMLP, 'Status')}/{qname(SAMLP, 'StatusCode')}")
    value = code.get("Value") if code is not None else None
    if value != STATUS_SUCCESS:
        shown = repr(short(value)) if value is not None else "(none given)"
        raise SignInRejected(f"the IdP did not report success: status {shown}")


def _attribute_values(assertion: etree._Element) -> dict[str, tuple[str, ...]]:
    values: dict[str, list[str]] = {}
    path = f"{qname(SAML, 'AttributeStatement')}/{qname(SAML, 'Attribute')}"
    for attribute in assertion.iterfind(path):
        name = attribute.get("Name")
        if not name:
            continue
        for value in attribute.iterfind(qname(SAML, "AttributeValue")):
            if value.get(qname(XSI, "nil")) not in ("true", "1"):
                values.setdefault(name, []).append("".join(value.itertext()).strip())
    return {name: tuple(v) for name, v in values.items()}


def _first(values: Mapping[str, tuple[str, ...]], name: str | None) -> str | None:
    found = values.get(name, ()) if name is not None else ()
    return next((v for v in found if v), None)


def _email_like(value: str | None) -> str | None:
    return value if value is not None and _EMAIL.fullmatch(value) else None


def _child(element: etree._Element, namespace: str, name: str) -> etree._Element:
    found = element.find(qname(namespace, name))
    if found is None:
        raise SignInRejected(f"the {local_name(element.tag)} has no {name}")
    return found


def _text(element: etree._Element | None) -> str | None:
    return "".join(element.itertext()).strip() if element is not None else None


def _instant(value: str, what: str) -> float:
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise SignInRejected(f"{what} is not a valid time: {short(value)!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # SAML times are UTC
    return moment.timestamp()

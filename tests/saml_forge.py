"""What an attacker does to a SAML Response, for the tests of `proxy.identity.sso.saml`.

Each helper takes a real SAMLResponse signed by the demo IdP (base64, as posted) and returns
the forgery: signature wrapping variants, tampering, hostile XML. They edit the XML with
lxml as an attacker would edit the bytes, and never touch the verifier.
"""

from __future__ import annotations

import base64
import copy
from pathlib import Path

from lxml import etree
from signxml.algorithms import CanonicalizationMethod
from signxml.signer import XMLSigner

from proxy.demo.idp import EMAIL_ATTRIBUTE, DemoIdentityProvider, sign_enveloped

SAMLP = "urn:oasis:names:tc:SAML:2.0:protocol"
SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
DS = "http://www.w3.org/2000/09/xmldsig#"
EVIL_EMAIL = "mallory@evil.example"


def q(namespace: str, name: str) -> str:
    return f"{{{namespace}}}{name}"


def decode(saml_response: str) -> etree._Element:
    return etree.fromstring(base64.b64decode(saml_response))


def encode(root: etree._Element | bytes) -> str:
    data = root if isinstance(root, bytes) else etree.tostring(root)
    return base64.b64encode(data).decode("ascii")


def assertion_of(root: etree._Element) -> etree._Element:
    found = root.find(q(SAML, "Assertion"))
    assert found is not None
    return found


def evil_twin(assertion: etree._Element, email: str = EVIL_EMAIL) -> etree._Element:
    """The assertion, unsigned, with a new ID and someone else's identity."""
    twin = copy.deepcopy(assertion)
    for signature in twin.findall(q(DS, "Signature")):
        twin.remove(signature)
    twin.set("ID", "_evil" + (assertion.get("ID") or ""))
    name_id = twin.find(f"{q(SAML, 'Subject')}/{q(SAML, 'NameID')}")
    assert name_id is not None
    name_id.text = email
    for attribute in twin.iter(q(SAML, "Attribute")):
        if attribute.get("Name") == EMAIL_ATTRIBUTE:
            for value in attribute:
                value.text = email
    return twin


def inject_assertion(saml_response: str, where: str) -> str:
    """XSW: a second, unsigned Assertion before or after the signed one."""
    root = decode(saml_response)
    signed = assertion_of(root)
    twin = evil_twin(signed)
    if where == "before":
        signed.addprevious(twin)
    else:
        signed.addnext(twin)
    return encode(root)


def wrap_in_extensions(saml_response: str) -> str:
    """XSW: the signed Assertion hidden under samlp:Extensions, an evil one in its place."""
    root = decode(saml_response)
    signed = assertion_of(root)
    twin = evil_twin(signed)
    signed.addprevious(twin)
    extensions = etree.Element(q(SAMLP, "Extensions"))
    extensions.append(signed)  # moves it
    issuer = root.find(q(SAML, "Issuer"))
    assert issuer is not None
    issuer.addnext(extensions)
    return encode(root)


def wrap_in_signature_object(saml_response: str) -> str:
    """XSW (the "XSW8" shape): the evil Assertion carries the original Signature, and the
    original Assertion, its Signature removed, sits in a ds:Object inside that Signature,
    where the Reference still finds it by ID and its digest still matches."""
    root = decode(saml_response)
    signed = assertion_of(root)
    signature = signed.find(q(DS, "Signature"))
    assert signature is not None
    twin = evil_twin(signed)
    signed.addprevious(twin)
    signed.remove(signature)
    twin_issuer = twin.find(q(SAML, "Issuer"))
    assert twin_issuer is not None
    twin_issuer.addnext(signature)
    obj = etree.SubElement(signature, q(DS, "Object"))
    obj.append(signed)  # moves the original out of the Response
    return encode(root)


def wrap_response(saml_response: str) -> str:
    """XSW on a signed Response ("XSW1"): a new evil Response around the original one,
    which hides in a ds:Object of the original Signature, now the evil root's."""
    original = decode(saml_response)
    signature = original.find(q(DS, "Signature"))
    assert signature is not None
    evil = copy.deepcopy(original)
    evil.set("ID", "_evil" + (original.get("ID") or ""))
    evil_signature = evil.find(q(DS, "Signature"))
    assert evil_signature is not None
    evil.remove(evil_signature)
    evil_assertion = assertion_of(evil)
    evil_assertion.addnext(evil_twin(evil_assertion))
    evil.remove(evil_assertion)
    original.remove(signature)
    issuer = evil.find(q(SAML, "Issuer"))
    assert issuer is not None
    issuer.addnext(signature)
    etree.SubElement(signature, q(DS, "Object")).append(original)
    return encode(evil)


def tamper(saml_response: str, old: str, new: str) -> str:
    """Edit signed content in place, leaving the Signature as it was."""
    data = base64.b64decode(saml_response)
    assert old.encode() in data
    return encode(data.replace(old.encode(), new.encode()))


def with_status(saml_response: str, code: str) -> str:
    root = decode(saml_response)
    status = root.find(f"{q(SAMLP, 'Status')}/{q(SAMLP, 'StatusCode')}")
    assert status is not None
    status.set("Value", code)
    return encode(root)


def comment_in_name_id(saml_response: str, after: str) -> str:
    """Split the NameID text with a comment (CVE-2017-11427 and friends): exclusive c14n
    leaves comments out of the digest, so the signature still holds."""
    data = base64.b64decode(saml_response)
    marker = f">{after}".encode()
    assert marker in data
    return encode(data.replace(marker, marker + b"<!---->", 1))


class _Sha1Signer(XMLSigner):
    """signxml refuses to sign with SHA-1; an attacker (or an old IdP) does not."""

    def check_deprecated_methods(self) -> None:
        return None


def sha1_signed(idp: DemoIdentityProvider, user_id: str, *, audience: str, acs_url: str) -> str:
    unsigned = decode(idp.response(user_id, audience=audience, acs_url=acs_url, sign=None))
    signer = _Sha1Signer(
        signature_algorithm="rsa-sha1",
        digest_algorithm="sha1",
        c14n_algorithm=CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0,
    )
    root = sign_enveloped(
        unsigned, assertion_of(unsigned), idp.private_key, idp.certificate, signer
    )
    return encode(root)


def signature_for_other_element(
    idp: DemoIdentityProvider, user_id: str, *, audience: str, acs_url: str
) -> str:
    """A real IdP signature enveloped in the Assertion but referencing the Response."""
    root = decode(idp.response(user_id, audience=audience, acs_url=acs_url, sign=None))
    assertion = assertion_of(root)
    placeholder = etree.Element(q(DS, "Signature"), Id="placeholder", nsmap={"ds": DS})
    issuer = assertion.find(q(SAML, "Issuer"))
    assert issuer is not None
    issuer.addnext(placeholder)
    signer = XMLSigner(c14n_algorithm=CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0)
    signed = signer.sign(
        root, key=idp.private_key, cert=[idp.certificate], reference_uri=root.get("ID")
    )
    return encode(signed)


def xxe(secret_file: Path, encoding: str = "utf-8") -> str:
    """An external entity reading a local file into the NameID."""
    document = (
        f'<?xml version="1.0" encoding="{encoding}"?>'
        f'<!DOCTYPE r [<!ENTITY xxe SYSTEM "file://{secret_file}">]>'
        f'<samlp:Response xmlns:samlp="{SAMLP}" xmlns:saml="{SAML}" ID="_x" Version="2.0">'
        "<saml:Assertion><saml:Subject><saml:NameID>&xxe;</saml:NameID></saml:Subject>"
        "</saml:Assertion></samlp:Response>"
    )
    return encode(document.encode(encoding))


def billion_laughs(levels: int = 10, encoding: str = "utf-8") -> str:
    entities = ['<!ENTITY lol0 "lol">'] + [
        f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, levels)
    ]
    document = (
        f'<?xml version="1.0" encoding="{encoding}"?>'
        f"<!DOCTYPE r [{''.join(entities)}]>"
        f'<samlp:Response xmlns:samlp="{SAMLP}">&lol{levels - 1};</samlp:Response>'
    )
    return encode(document.encode(encoding))

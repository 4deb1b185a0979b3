"""pysaml2, imported and configured the way both our third-party servers need it.

pysaml2 imports a cipher mode that `cryptography` has deprecated; the suite turns warnings
into errors, so the import is done here, once, with that one warning silenced. Metadata is
written by pysaml2 itself from each side's configuration, then handed to the other side.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="CFB has been moved")
    import saml2
    from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT
    from saml2.client import Saml2Client
    from saml2.config import Config, IdPConfig, SPConfig
    from saml2.metadata import entity_descriptor
    from saml2.saml import NAME_FORMAT_URI, NAMEID_FORMAT_PERSISTENT, NameID
    from saml2.server import Server

XMLSEC = shutil.which("xmlsec1") or "/usr/bin/xmlsec1"
SHA256 = {
    "sign_alg": "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
    "digest_alg": "http://www.w3.org/2001/04/xmlenc#sha256",
}


def common(entity_id: str, metadata: Path | None) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "entityid": entity_id,
        "xmlsec_binary": XMLSEC,
        "delete_tmpfiles": True,
        "accepted_time_diff": 60,
    }
    if metadata is not None:
        settings["metadata"] = {"local": [str(metadata)]}
    return settings


async def form_fields(request: Request) -> dict[str, str]:
    """A url-encoded form (starlette's `form()` needs python-multipart, not installed)."""
    return dict(parse_qsl((await request.body()).decode()))


def write_metadata(config: Config, path: Path) -> Path:
    """The entity's SAML metadata, as pysaml2 writes it from `config`."""
    path.write_text(str(entity_descriptor(config)))
    return path


__all__ = [
    "BINDING_HTTP_POST",
    "BINDING_HTTP_REDIRECT",
    "NAMEID_FORMAT_PERSISTENT",
    "NAME_FORMAT_URI",
    "SHA256",
    "IdPConfig",
    "NameID",
    "SPConfig",
    "Saml2Client",
    "Server",
    "common",
    "form_fields",
    "saml2",
    "write_metadata",
]

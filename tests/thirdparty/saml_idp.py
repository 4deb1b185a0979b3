"""A SAML identity provider on pysaml2's `Server`: it reads the AuthnRequest (HTTP-Redirect
binding), shows who may sign in, and answers with a Response whose Assertion and Response
pysaml2 signs (RSA-SHA256, through xmlsec1), POSTed by the browser to the SP's ACS.

Like most IdPs, it sends no Entra tenant or object id: only a persistent NameID, the
user's email (`mail`) and display name, under their `urn:oid:` names. Its signing key and
self-signed certificate come from the openssl command line, as an IdP admin's would."""

from __future__ import annotations

import html
import subprocess
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from proxy.demo.users import DEMO_USERS, DemoUser

from .pysaml import (
    BINDING_HTTP_POST,
    BINDING_HTTP_REDIRECT,
    NAME_FORMAT_URI,
    NAMEID_FORMAT_PERSISTENT,
    SHA256,
    IdPConfig,
    NameID,
    Server,
    common,
    form_fields,
    write_metadata,
)

ENTITY = "https://idp.thirdparty.example/saml/metadata"
MAIL = "urn:oid:0.9.2342.19200300.100.1.3"
DISPLAY_NAME = "urn:oid:2.16.840.1.113730.3.1.241"


class PySamlIdp:
    def __init__(self, url: str, folder: Path, users: tuple[DemoUser, ...] = DEMO_USERS) -> None:
        self.url = url
        self.users = {u.id: u for u in users}
        self.key_file, self.cert_file = folder / "idp.key", folder / "idp.pem"
        subprocess.run(
            [
                *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
                *("-subj", "/CN=idp.thirdparty.example", "-keyout", str(self.key_file)),
                *("-out", str(self.cert_file)),
            ],
            check=True,
            capture_output=True,
        )
        self.folder = folder
        self.server: Server | None = None

    def config(self, sp_metadata: Path | None) -> IdPConfig:
        settings = common(ENTITY, sp_metadata) | {
            "key_file": str(self.key_file),
            "cert_file": str(self.cert_file),
            "service": {
                "idp": {
                    "name": "pysaml2 IdP",
                    "endpoints": {
                        "single_sign_on_service": [(f"{self.url}/sso", BINDING_HTTP_REDIRECT)]
                    },
                    "policy": {
                        "default": {
                            "lifetime": {"minutes": 5},
                            "attribute_restrictions": None,
                            "name_form": NAME_FORMAT_URI,
                        }
                    },
                    "name_id_format": [NAMEID_FORMAT_PERSISTENT],
                }
            },
        }
        config = IdPConfig()
        config.load(settings)
        return config

    def metadata(self) -> Path:
        return write_metadata(self.config(None), self.folder / "idp-metadata.xml")

    def trust(self, sp_metadata: Path) -> None:
        self.server = Server(config=self.config(sp_metadata))

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/sso", self.ask),
                Route("/sso", self.answer, methods=["POST"]),
            ]
        )

    async def ask(self, request: Request) -> Response:
        """Who are you? (one button per user; the request rides along, unchanged)."""
        assert self.server is not None
        saml_request = request.query_params.get("SAMLRequest", "")
        self.server.parse_authn_request(saml_request, BINDING_HTTP_REDIRECT)  # refuses junk
        fields = {
            n: html.escape(request.query_params.get(n, "")) for n in ("SAMLRequest", "RelayState")
        }
        hidden = "".join(
            f'<input type="hidden" name="{name}" value="{value}">' for name, value in fields.items()
        )
        buttons = "".join(
            f'<li><button type="submit" name="user" value="{u.id}">'
            f"{html.escape(u.name)}</button></li>"
            for u in self.users.values()
        )
        body = (
            "<h1>pysaml2 IdP: sign in</h1>"
            f'<form method="post" action="/sso">{hidden}<ul>{buttons}</ul></form>'
        )
        return HTMLResponse(f"<!doctype html><html><body>{body}</body></html>")

    async def answer(self, request: Request) -> Response:
        assert self.server is not None
        form = await form_fields(request)
        user = self.users[form["user"]]
        parsed = self.server.parse_authn_request(form["SAMLRequest"], BINDING_HTTP_REDIRECT)
        authn_request = parsed.message
        sp = authn_request.issuer.text
        acs = authn_request.assertion_consumer_service_url
        response = self.server.create_authn_response(
            identity={"mail": [user.email], "displayName": [user.name]},
            in_response_to=authn_request.id,
            destination=acs,
            sp_entity_id=sp,
            name_id=NameID(format=NAMEID_FORMAT_PERSISTENT, text=f"pysaml-{user.id}"),
            authn={"class_ref": "urn:oasis:names:tc:SAML:2.0:ac:classes:Password"},
            sign_response=True,
            sign_assertion=True,
            **SHA256,
        )
        binding = self.server.apply_binding(
            BINDING_HTTP_POST, str(response), acs, form.get("RelayState", ""), response=True
        )
        return HTMLResponse(binding["data"])


__all__ = ["DISPLAY_NAME", "ENTITY", "MAIL", "PySamlIdp"]

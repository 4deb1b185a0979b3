"""Servers built on maintained third-party libraries (identity providers, apps' SSO
clients), so the proxy is tested against implementations that are not its own: among
them a SAML IdP and a SAML service provider on pysaml2 (which signs and checks with
Debian's xmlsec1), each a small Starlette app around the library's own server and client,
started with tests/servers.py like any other server."""

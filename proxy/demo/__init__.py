"""Stand-ins that make consent-proxy runnable and testable on one machine, offline: the
demo app (`upstream`, a SAML service provider listing meetings and contacts), the demo
identity providers (`idp` for SAML, `oidc_provider` for OpenID Connect), the Microsoft
identity platform stand-in (`microsoft`, with a tiny Graph), the one list of demo users
they all sign in from (`users`), certificates (`tls`), the demo policy (`policy.yaml`) and
`run`, which wires them and the proxy together for `consent-proxy demo`. Code here may
import anything; the product never imports it, except the CLI starting `run`.
"""

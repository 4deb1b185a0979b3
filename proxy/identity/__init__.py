"""Who is this browser: the proxy session bound to the app's own session, and SSO sign-ins.

`session` keeps the signed cookie and its store record; `sso/` verifies what the app
accepted (SAML, OIDC form_post, the code flow by the proxy's own silent request,
upstream-asserted) and watches the sign-in endpoints; `links` remembers the identities
joined into one person by a linking claim; `headers` adds identity and token headers to
forwarded requests; `assertion` signs the same claims as a JWT; `forward_auth` answers an
ingress's auth subrequest through the same session and headers layers. It may import
`proxy.store`, `proxy.config`, `proxy.microsoft` and `proxy.ops`; tokens reach it
through a small protocol, so it never imports the consent journey.
"""

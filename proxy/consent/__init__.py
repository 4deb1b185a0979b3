"""After a sign-in: decide, send the user to Microsoft's consent page, and keep what comes back.

The journey (policy at sign-in, the authorize redirect, the callback, admin consent), the
reserved pages on a small starlette Router with their Jinja2 templates, the integration
records, and token freshness (single-flight refresh). It may import `proxy.policy`,
`proxy.microsoft`, `proxy.store`, `proxy.identity` and `proxy.ops`.
"""

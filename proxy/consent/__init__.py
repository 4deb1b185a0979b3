"""After a sign-in: decide, send the user to Microsoft's consent page, and keep what comes back.

`journey` asks the policy at sign-in and starts authorizations (the one-time state);
`pages` serves the reserved prefix on a small starlette Router, with `forms` (strict form
and query reading, CSRF), `render` (Jinja2 templates, strict headers, redirects) and
`next_url` (destinations stay on this site); `callback` takes Microsoft's answer, with
`admin` (what an organization's consent records) and `handoff` (the signed link a user
sends to an administrator); `integration` holds the records and `tokens` keeps tokens
fresh (single-flight refresh). It may import `proxy.policy`, `proxy.microsoft`,
`proxy.store`, `proxy.identity` and `proxy.ops`; those never import it back (identity and
ops see tokens through protocols).
"""

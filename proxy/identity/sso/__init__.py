"""Recognising a completed SSO sign-in, and who it was for.

Each kind of evidence has its own module: `saml` (a signed SAML Response posted to the
app's ACS endpoint; pinned keys and safe XML parsing in `saml_signature`), `oidc` (an
id_token posted to the app's callback; the IdP's keys in `jwks`), `silent` (the code
flow: the proxy's own `prompt=none` request to the same IdP), `asserted` (the upstream
app itself says who signed in); `watch` is the middleware that uses them, and `observed`
what it saw that `check` should warn about. Each produces the same `SignIn`, or raises
`SignInRejected` with a reason for the log. The proxy never answers for the app: a
rejected assertion is forwarded unchanged and the app decides for itself; it only means
the proxy learns nothing from it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from proxy.errors import ConsentProxyError


@dataclass(frozen=True, slots=True)
class SignIn:
    """Who signed in, as far as a verified assertion (or the upstream) says."""

    subject: str
    email: str | None = None
    name: str | None = None
    tenant_id: str | None = None
    object_id: str | None = None
    attributes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    method: str = ""  # "saml", "oidc", "upstream-header", "upstream-whoami"
    issuer: str = ""
    # An identifier to accept only once (SAML assertion ID, id_token jti), and until when.
    replay_key: str | None = None
    replay_until: float | None = None
    # Who this person is across endpoints trusted for linking (`link_by`), else None.
    link: str | None = None


class SignInRejected(ConsentProxyError):
    """The assertion is not a sign-in the proxy can trust; `description` says why."""

    code = "sign_in_rejected"
    status = 400
    title = "Sign-in not recognised"


def link_key(link_by: str | None, sign_in: SignIn) -> str | None:
    """The key that makes one person of sign-ins at endpoints the admin trusts to assert
    `link_by` (today: the case-folded email/UPN); None without it."""
    if link_by != "email" or not sign_in.email:
        return None
    email = sign_in.email.strip().casefold()
    return "link." + hashlib.sha256(f"email\0{email}".encode()).hexdigest()[:40]


def kept_attributes(
    found: Mapping[str, tuple[str, ...]], names: tuple[str, ...], groups: str | None
) -> dict[str, tuple[str, ...]]:
    """The attributes policy may match on: the configured names, and the groups attribute
    under the name "groups" whatever the IdP calls it."""
    kept = {name: found[name] for name in names if name in found}
    if groups is not None and groups in found:
        kept["groups"] = found[groups]
    return kept

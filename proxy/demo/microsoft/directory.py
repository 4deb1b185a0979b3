"""Whom the stand-in knows: tenants, accounts and app registrations, and the demo's own
(contoso, fabrikam and hybrid; the demo users; the demo app)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from proxy.demo.microsoft.scopes import GRAPH
from proxy.demo.users import (
    CONTOSO_TENANT_ID,
    FABRIKAM_ADMIN,
    FABRIKAM_TENANT_ID,
    HYBRID_TENANT_ID,
    DemoUser,
)
from proxy.demo.users import DEMO_USERS as PEOPLE

# An account of the stand-in is a demo user whose `id` is the `sub` Entra sends.
MicrosoftUser = DemoUser


@dataclass(frozen=True, slots=True)
class Tenant:
    id: str
    name: str
    domains: tuple[str, ...]
    # False: users who are not admins get "Need admin approval" instead of a consent page.
    user_consent: bool = True
    # What backing out of "Need admin approval" answers: 65001, or 90094.
    admin_approval_code: int = 65001
    # On-premises EWS hosts registered for Hybrid Modern Auth.
    ews_hosts: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AppRegistration:
    client_id: str
    name: str
    redirect_uris: tuple[str, ...]
    secrets: tuple[str, ...] = ()
    certificates: tuple[str, ...] = ()  # PEM certificates whose keys sign client assertions
    home_tenant: str | None = None  # a tenant id for a single-tenant app; None: multi-tenant
    permissions: tuple[str, ...] = (  # what `{resource}/.default` stands for
        f"{GRAPH}/User.Read",
        f"{GRAPH}/Calendars.Read",
        f"{GRAPH}/Contacts.Read",
    )


CONTOSO = Tenant(CONTOSO_TENANT_ID, "contoso", ("contoso.example", "contoso.onmicrosoft.com"))
FABRIKAM = Tenant(
    FABRIKAM_TENANT_ID, "fabrikam", ("fabrikam.example", "fabrikam.onmicrosoft.com"), False
)
HYBRID = Tenant(
    HYBRID_TENANT_ID,
    "hybrid",
    ("hybrid.example", "hybrid.onmicrosoft.com"),
    ews_hosts=("mail.hybrid.example",),
)
DEMO_TENANTS = (CONTOSO, FABRIKAM, HYBRID)


def account(user: DemoUser) -> MicrosoftUser:
    """The user as an Entra account: the same tenant and object ids, a `sub` of its own
    (Entra's is pairwise), and no groups (Entra leaves them out unless configured)."""
    return DemoUser(
        f"{user.id}-{user.object_id[:8]}",
        user.email,
        user.name,
        tenant_id=user.tenant_id,
        object_id=user.object_id,
        admin=user.admin,
    )


# The demo users, and an administrator of fabrikam.
DEMO_USERS: tuple[MicrosoftUser, ...] = tuple(map(account, (*PEOPLE, FABRIKAM_ADMIN)))
DEMO_APP_ID = "c0115e47-0000-4000-8000-00000000a991"
DEMO_APP_SECRET = "demo-client-secret-not-for-production"  # noqa: S105 - a demo's


def demo_app(*redirect_uris: str, **changes: Any) -> AppRegistration:
    """The demo app registration: multi-tenant, one secret, the given redirect URIs."""
    app = AppRegistration(DEMO_APP_ID, "Consent Proxy Demo", redirect_uris, (DEMO_APP_SECRET,))
    return replace(app, **changes)

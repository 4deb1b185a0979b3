"""The demo's people, in one list that every demo server signs in from.

The SAML IdP and the OpenID provider offer `DEMO_USERS` on their pages; the Microsoft
identity platform stand-in knows the same people as accounts of their tenants (same
tenant and object ids), and `FABRIKAM_ADMIN`, who approves apps for fabrikam on
Microsoft's pages but never signs in to the demo app. Each demo user walks one consent
journey (see the comments below), so a change here changes what the demo shows.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "CONTOSO_TENANT_ID",
    "DEMO_USERS",
    "FABRIKAM_ADMIN",
    "FABRIKAM_TENANT_ID",
    "HYBRID_TENANT_ID",
    "DemoUser",
]

CONTOSO_TENANT_ID = "5b8f3c1e-2d4a-4f6b-9c7e-1a2b3c4d5e6f"
FABRIKAM_TENANT_ID = "9d2e7f4a-6b1c-4e3d-8a5f-7c6b5a4d3e2f"
HYBRID_TENANT_ID = "3e4f5a6b-7c8d-4e9f-a0b1-c2d3e4f5a6b7"


@dataclass(frozen=True, slots=True)
class DemoUser:
    """A person as the demo identity providers describe them. `id` is whom a provider's
    page signs in and the OpenID `sub`; `tenant_id` and `object_id` are the Entra ids
    ("" when a user has none: the SAML IdP then sends no such attribute)."""

    id: str
    email: str
    name: str
    groups: tuple[str, ...] = ()
    tenant_id: str = ""
    object_id: str = ""
    admin: bool = False  # a Global Administrator of its Entra tenant

    @property
    def sub(self) -> str:
        return self.id


DEMO_USERS: tuple[DemoUser, ...] = (
    # Consents for herself on Microsoft's page.
    DemoUser(
        id="alice",
        email="alice@contoso.example",
        name="Alice Johnson",
        groups=("Sales", "All Staff"),
        tenant_id=CONTOSO_TENANT_ID,
        object_id="0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
    ),
    # His tenant only lets an administrator approve the app.
    DemoUser(
        id="bob",
        email="bob@fabrikam.example",
        name="Bob Lindqvist",
        groups=("Engineering",),
        tenant_id=FABRIKAM_TENANT_ID,
        object_id="1b2c3d4e-5f6a-4b7c-9d8e-0f1a2b3c4d5e",
    ),
    # Her mailbox is on-premises: a hybrid Exchange (EWS) rule applies to her.
    DemoUser(
        id="carol",
        email="carol@hybrid.example",
        name="Carol Okafor",
        groups=("Support", "Exchange On-Premises"),
        tenant_id=HYBRID_TENANT_ID,
        object_id="2c3d4e5f-6a7b-4c8d-ae9f-1a2b3c4d5e6f",
    ),
)

# Approves the app for bob's tenant (admin consent, or consent on behalf of fabrikam).
FABRIKAM_ADMIN = DemoUser(
    id="admin",
    email="admin@fabrikam.example",
    name="Fabrikam Administrator",
    tenant_id=FABRIKAM_TENANT_ID,
    object_id="ad000000-0000-4000-8000-00000000fab1",
    admin=True,
)

"""Scopes as Entra reads them: OpenID scopes, Graph permissions, Exchange's EWS permission,
`{resource}/.default`; and the words its consent page uses for each."""

from __future__ import annotations

from collections.abc import Iterable

from proxy.demo.microsoft.refusals import Refusal

GRAPH = "https://graph.microsoft.com"
EXCHANGE_ONLINE = "https://outlook.office365.com"
EWS_PERMISSION = "EWS.AccessAsUser.All"
OIDC_SCOPES = ("openid", "profile", "email", "offline_access")
GRAPH_PERMISSIONS = (
    "User.Read", "Calendars.Read", "Calendars.ReadWrite", "Contacts.Read",
    "Contacts.ReadWrite", "People.Read",
)  # fmt: skip
DESCRIPTIONS = {
    "openid": "Sign you in",
    "profile": "View your basic profile",
    "email": "View your email address",
    "offline_access": "Maintain access to data you have given it access to",
    "User.Read": "Sign you in and read your profile",
    "Calendars.Read": "Read your calendars",
    "Calendars.ReadWrite": "Have full access to your calendars",
    "Contacts.Read": "Read your contacts",
    "Contacts.ReadWrite": "Have full access to your contacts",
    "People.Read": "Read your relevant people list",
    EWS_PERMISSION: "Access your mailboxes as you, through Exchange Web Services",
}


def resource_of(scope: str) -> str | None:
    """The resource a full scope names (`https://graph.microsoft.com`); None for OIDC."""
    return scope.rpartition("/")[0] if "://" in scope else None


def canonical(scope: str, ews_hosts: Iterable[str]) -> str | None:
    """A scope in full (`https://graph.microsoft.com/Calendars.Read`), OIDC scopes as they
    are; None for one Entra would reject (AADSTS70011). `ews_hosts`: the on-premises
    Exchange hosts registered for Hybrid Modern Auth."""
    if scope.lower() in OIDC_SCOPES:
        return scope.lower()
    resource, _, permission = scope.rpartition("/") if "://" in scope else (GRAPH, "", scope)
    if resource == GRAPH:
        known = {p.lower(): p for p in (*GRAPH_PERMISSIONS, ".default")}
        name = known.get(permission.lower())
        return f"{GRAPH}/{name}" if name else None
    ews = {EXCHANGE_ONLINE, *(f"https://{h}" for h in ews_hosts)}
    if resource in ews and permission.lower() in (EWS_PERMISSION.lower(), ".default"):
        return f"{resource}/{EWS_PERMISSION}"
    return None


def canonical_all(
    scopes: Iterable[str], permissions: Iterable[str], ews_hosts: Iterable[str]
) -> list[str]:
    """Canonical scopes, `.default` expanded to the app's `permissions`; a refusal
    (AADSTS70011) names the first scope Entra would not know."""
    hosts = tuple(ews_hosts)
    out: list[str] = []
    for scope in scopes:
        full = canonical(scope, hosts)
        if full is None:
            raise Refusal(70011, scope=scope)
        if full.endswith("/.default"):
            named = full.removesuffix("/.default")
            out.extend(p for p in permissions if resource_of(p) == named)
        else:
            out.append(full)
    return list(dict.fromkeys(out))

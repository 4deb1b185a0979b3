"""Strict parsing of what admins write in a policy file and what users present at sign-in.

Each checker returns the normalised value or raises ValueError saying how to fix it; the
model (`proxy.policy.model`) reports that under the YAML path of the field. The annotated
types at the end are the field types the model is built from.

Email domains are matched only on a strictly parsed address: ASCII, exactly one ``@``, a
non-empty dot-atom local part (no quotes, no whitespace) and a valid domain without a
trailing dot. Anything else matches no `email_domain` entry at all, so ``a@b.com@evil.com``,
``a@contoso.com.`` and look-alike Unicode cannot pass for a listed domain (the
oauth2-proxy advisory GHSA-c5c4-8r6x-56w3).
"""

from __future__ import annotations

import re
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, BeforeValidator, Field

DEFAULTS_RULE = "defaults"
GRAPH_RESOURCE = "https://graph.microsoft.com/"
GRAPH_SCOPES = (
    "User.Read",
    "Calendars.Read",
    "Calendars.ReadBasic",
    "Calendars.ReadWrite",
    "Contacts.Read",
    "Contacts.ReadWrite",
    "People.Read",
    "MailboxSettings.Read",
)
ADDED_BY_MSAL = ("openid", "profile", "offline_access")
EWS_PATH = "/ews/exchange.asmx"
EWS_PERMISSION = "EWS.AccessAsUser.All"

_KNOWN_SCOPES = {s.lower(): s for s in GRAPH_SCOPES}
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DOMAIN = re.compile(rf"(?:{_LABEL}\.)+{_LABEL}")
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LOCAL_PART = re.compile(rf"{_ATOM}(?:\.{_ATOM})*")
_GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _is_domain(value: str) -> bool:
    """A lowercase ASCII DNS name of two labels or more, no trailing dot, not an IP."""
    return (
        len(value) <= 253
        and _DOMAIN.fullmatch(value) is not None
        and not value.rsplit(".", 1)[-1].isdigit()
    )


def email_domain(email: object) -> str | None:
    """The lowercased domain of a plain email address, or None when it is not one.

    Strict on purpose: a policy matches on this domain, so anything ambiguous (two ``@``,
    quotes, whitespace, a trailing dot, non-ASCII look-alikes) is no address at all.
    ASCII is checked before lowercasing: ``str.lower`` turns some non-ASCII letters
    (the Kelvin sign) into ASCII ones.
    """
    if not isinstance(email, str) or not email.isascii() or len(email) > 254:
        return None
    if email.count("@") != 1:
        return None
    local, _, domain = email.partition("@")
    if len(local) > 64 or _LOCAL_PART.fullmatch(local) is None:
        return None
    domain = domain.lower()
    return domain if _is_domain(domain) else None


def tenant_key(value: object) -> str | None:
    """The lowercased tenant id when the value is one (a GUID), else None."""
    if not isinstance(value, str) or not value.isascii():
        return None
    value = value.lower()
    return value if _GUID.fullmatch(value) else None


def _domain_pattern(value: str) -> str:
    if not value.isascii():
        raise ValueError(
            f"must be ASCII; write an internationalised domain in its xn-- form, got {value!r}"
        )
    if "@" in value:
        raise ValueError(f"write the domain only, without '@' (e.g. contoso.com), got {value!r}")
    base = value.lower().removeprefix("*.")
    if "*" in base:
        raise ValueError(
            "a wildcard is only allowed as a leading '*.' (e.g. *.contoso.com, which "
            f"matches subdomains only), got {value!r}"
        )
    if base != value.lower() and "." not in base:
        raise ValueError(
            f"a wildcard needs a domain of two labels or more after '*.', got {value!r}"
        )
    if not _is_domain(base):
        raise ValueError(f"must be a domain such as contoso.com or *.contoso.com, got {value!r}")
    return value.lower()


def _tenant_id(value: str) -> str:
    key = tenant_key(value)
    if key is None:
        raise ValueError(
            "must be a tenant id, a GUID such as 72f988bf-86f1-41af-91ab-2d7cd011db47 "
            f"(not a domain), got {value!r}"
        )
    return key


def _graph_scope(value: str) -> str:
    name = value[len(GRAPH_RESOURCE) :] if value.lower().startswith(GRAPH_RESOURCE) else value
    if name.lower() in ADDED_BY_MSAL:
        raise ValueError(
            f"{name!r} is added automatically (with the other OpenID scopes); remove it"
        )
    known = _KNOWN_SCOPES.get(name.lower())
    if known is None:
        hint = ""
        if EWS_PERMISSION.lower() in value.lower():
            hint = "; EWS is not a Graph permission: use type ews with an ews_url"
        raise ValueError(f"unknown Graph scope {value!r}; known: {', '.join(GRAPH_SCOPES)}{hint}")
    return known


def _ews_url(value: str) -> str:
    problem = f"must be https://HOST/EWS/Exchange.asmx, got {value!r}"
    parts = urlsplit(value)
    try:
        parts.port  # noqa: B018 - only to refuse a malformed port
    except ValueError:
        raise ValueError(problem) from None
    if (
        parts.scheme.lower() != "https"
        or not _is_domain(parts.hostname or "")
        or parts.username is not None
        or parts.query
        or parts.fragment
        or parts.path.lower() != EWS_PATH
    ):
        raise ValueError(problem)
    return value


def _unique(values: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


def _not_empty(values: Any) -> Any:
    if not values:
        raise ValueError("give at least one value (leave the criterion out to match everyone)")
    return values


def _rule_name(value: str) -> str:
    if not value or len(value) > 100 or not value.isprintable():
        raise ValueError(f"must be 1 to 100 printable characters, got {value!r}")
    if value == DEFAULTS_RULE:
        raise ValueError(f"{DEFAULTS_RULE!r} is reserved for the defaults; choose another name")
    return value


def _version(value: Any) -> int:
    if type(value) is not int or value != 1:
        raise ValueError(f"must be 1 (the only policy format so far), got {value!r}")
    return value


# The field types of the policy model: each value checked, and normalised, as above.

Version = Annotated[int, BeforeValidator(_version)]
Text = Annotated[str, Field(min_length=1)]
DomainPattern = Annotated[str, AfterValidator(_domain_pattern)]
TenantId = Annotated[str, AfterValidator(_tenant_id)]
GraphScope = Annotated[str, AfterValidator(_graph_scope)]
EwsUrl = Annotated[str, AfterValidator(_ews_url)]
RuleName = Annotated[str, AfterValidator(_rule_name)]
AppName = Text
DomainList = Annotated[
    tuple[DomainPattern, ...], AfterValidator(_not_empty), AfterValidator(_unique)
]
TenantList = Annotated[tuple[TenantId, ...], AfterValidator(_not_empty), AfterValidator(_unique)]
TextList = Annotated[tuple[Text, ...], AfterValidator(_not_empty), AfterValidator(_unique)]
AttributeMap = Annotated[dict[Text, TextList], AfterValidator(_not_empty)]
ScopeList = Annotated[tuple[GraphScope, ...], AfterValidator(_not_empty), AfterValidator(_unique)]

"""Which rule applies to a signed-in user.

A `PolicyUser` holds the facts rules match on; `check_rules` tries the rules in order,
one criterion at a time so that `explain` can show each, and stops at the first rule
whose every criterion holds. Email domains and tenant ids are compared only once strictly
parsed (`proxy.policy.values`): what does not parse matches nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from proxy.errors import ConfigError
from proxy.policy.model import Match, Policy
from proxy.policy.values import email_domain, tenant_key


class SignInFacts(Protocol):
    """What a verified sign-in tells the policy (`proxy.identity.sso.SignIn` has it).

    A Protocol, so that the policy needs nothing from the identity package.
    """

    @property
    def subject(self) -> str: ...
    @property
    def email(self) -> str | None: ...
    @property
    def tenant_id(self) -> str | None: ...
    @property
    def attributes(self) -> Mapping[str, tuple[str, ...]]: ...


@dataclass(frozen=True, slots=True)
class PolicyUser:
    """The facts about a signed-in user that rules can match on."""

    email: str | None
    tenant_id: str | None = None
    groups: tuple[str, ...] = ()
    attributes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def from_sign_in(cls, sign_in: SignInFacts) -> PolicyUser:
        """The email, else the subject (often the UPN): either must still parse strictly."""
        attributes = {k: tuple(v) for k, v in sign_in.attributes.items()}
        return cls(
            email=sign_in.email if sign_in.email is not None else sign_in.subject,
            tenant_id=sign_in.tenant_id,
            groups=attributes.get("groups", ()),
            attributes=attributes,
        )


def user_from_options(
    email: str, tenant_id: str | None = None, attrs: Sequence[str] = ()
) -> PolicyUser:
    """A user from `explain`'s options: ``--attr name=value``, repeatable (groups=... too)."""
    attributes: dict[str, tuple[str, ...]] = {}
    for item in attrs:
        name, eq, value = item.partition("=")
        if not eq or not name.strip():
            raise ConfigError([f"--attr {item!r}: write name=value, e.g. groups=Sales"], "options")
        attributes[name.strip()] = (*attributes.get(name.strip(), ()), value)
    return PolicyUser(email, tenant_id, attributes.get("groups", ()), attributes)


@dataclass(frozen=True, slots=True)
class CriterionCheck:
    criterion: str  # email_domain, tenant_id, groups, attributes.NAME
    accepted: tuple[str, ...]
    matched: bool
    found: str  # what the user had, for people


@dataclass(frozen=True, slots=True)
class RuleCheck:
    index: int
    name: str
    matched: bool
    criteria: tuple[CriterionCheck, ...]


def check_rules(policy: Policy, user: PolicyUser) -> tuple[RuleCheck, ...]:
    """The rules tried for this user, in order, up to and including the first match."""
    tried: list[RuleCheck] = []
    for index, rule in enumerate(policy.rules):
        criteria = _criteria(rule.match, user)
        tried.append(RuleCheck(index, rule.name, all(c.matched for c in criteria), criteria))
        if tried[-1].matched:
            break
    return tuple(tried)


def _criteria(match: Match, user: PolicyUser) -> tuple[CriterionCheck, ...]:
    checks: list[CriterionCheck] = []
    if match.email_domain is not None:
        checks.append(_check_domain(match.email_domain, user.email))
    if match.tenant_id is not None:
        checks.append(_check_tenant(match.tenant_id, user.tenant_id))
    if match.groups is not None:
        checks.append(_check_values("groups", match.groups, user.groups))
    for name, accepted in (match.attributes or {}).items():
        found = user.attributes.get(name, ())
        checks.append(_check_values(f"attributes.{name}", accepted, found))
    return tuple(checks)


def _domain_matches(pattern: str, domain: str) -> bool:
    if pattern.startswith("*."):
        return domain.endswith(pattern[1:])
    return domain == pattern


def _check_domain(accepted: tuple[str, ...], email: str | None) -> CriterionCheck:
    domain = email_domain(email)
    if domain is None:
        found = "no email" if email is None else f"{email!r} is not a plain email address"
        return CriterionCheck("email_domain", accepted, False, found)
    matched = any(_domain_matches(p, domain) for p in accepted)
    return CriterionCheck("email_domain", accepted, matched, f"domain {domain}")


def _check_tenant(accepted: tuple[str, ...], tenant_id: str | None) -> CriterionCheck:
    key = tenant_key(tenant_id)
    if key is None:
        found = "no tenant id" if tenant_id is None else f"{tenant_id!r} is not a tenant id"
        return CriterionCheck("tenant_id", accepted, False, found)
    return CriterionCheck("tenant_id", accepted, key in accepted, f"tenant {key}")


def _check_values(
    criterion: str, accepted: tuple[str, ...], found: Iterable[object]
) -> CriterionCheck:
    have = tuple(v for v in found if isinstance(v, str))
    hits = [v for v in have if v in accepted]
    shown = ", ".join(hits or have) or "none"
    return CriterionCheck(criterion, accepted, bool(hits), f"user has {shown}")

"""The admin's prompt policy: who is asked to connect Office 365, when, and for what.

Policy files are YAML. The grammar, which `consent-proxy check` enforces (unknown keys
are errors, every problem is reported as ``path: problem``)::

    version: 1                      # required; the only format so far
    defaults:                       # optional; each field optional (built-in values shown)
      prompt: first_sign_in         # never | first_sign_in | every_sign_in
      authorization:                # what the user is asked to grant
        type: graph                 #   Microsoft Graph, delegated permissions:
        scopes: [Calendars.Read, Contacts.Read]
      # authorization:              #   or, hybrid Exchange older than 2016 CU3:
      #   type: ews                 #   permission fixed: EWS.AccessAsUser.All on that host
      #   ews_url: https://mail.contoso.com/EWS/Exchange.asmx
      user_consent: allowed         # allowed | admin_only
      app: sales                    # optional: an app registration named in the proxy config
    rules:                          # optional; tried in order, the first match wins
      - name: sales                 # required; shown by `explain` and in metrics
        match:                      # every criterion given must hold; each list = any of
          email_domain: [contoso.com, "*.contoso.com"]   # "*." = subdomains only
          tenant_id: [72f988bf-86f1-41af-91ab-2d7cd011db47]
          groups: [Sales]           # any of the user's `groups` attribute values
          attributes:               # attribute name -> accepted values (exact, case-sensitive)
            department: [Sales, Marketing]
        prompt: every_sign_in       # any rule field overrides the defaults; an
        authorization: ...          # authorization replaces the default one as a whole

A rule without `match` (or with an empty one) matches everyone. When no rule matches,
the defaults apply. Graph scope names are checked against `GRAPH_SCOPES` (the short name
or the full ``https://graph.microsoft.com/Name`` form, any case); ``openid``, ``profile``
and ``offline_access`` are added automatically and may not be listed.

Email domains are matched only on a strictly parsed address: ASCII, exactly one ``@``, a
non-empty dot-atom local part (no quotes, no whitespace) and a valid domain without a
trailing dot. Anything else matches no `email_domain` entry at all, so ``a@b.com@evil.com``,
``a@contoso.com.`` and look-alike Unicode cannot pass for a listed domain (the
oauth2-proxy advisory GHSA-c5c4-8r6x-56w3).

Evaluation (`evaluate`) is pure: the policy, who signed in, the state of their
integration and of their tenant, and the time go in; a `Decision` comes out, with an
action (``pass``, ``consent`` or ``admin_approval_notice``) and machine-readable reasons.
First the prompt mode says whether to ask: ``never`` never does; ``every_sign_in`` asks
until the user is connected with every scope the rule asks for; ``first_sign_in`` asks a
user who was never asked, and never again after a decline, a failure or an abandoned
consent page. Both ask again when the grant broke (``reconsent_required``) or when the
last attempt needed an admin; a connected user whose grant lacks scopes the rule now asks
for is asked again for the full set (incremental consent) by ``every_sign_in`` at each
sign-in and by ``first_sign_in`` once, unless those scopes are in `prompted_scopes`.
Then the tenant has its say: once an admin consented, the user goes to Microsoft (no
consent screen will show); while the tenant waits for an admin (`approval_required_until`
in the future) nobody is sent into a screen that would fail; with ``user_consent:
admin_only`` and no admin consent, the user is told an admin must approve.
Reason codes:

``rule_matched`` / ``no_rule_matched``  which settings apply
``prompt_never``                        the rule never prompts
``already_connected``                   connected with every scope asked for
``scopes_missing``                      connected, but the grant lacks scopes now asked for
``not_connected``                       not connected: ask
``reconsent_required``                  the grant broke (expired, revoked): ask again
``admin_approval_required_before``      the last attempt needed an admin: try again
``first_sign_in_already_prompted``      first_sign_in, and the user was asked before
``tenant_admin_consented``              an admin consented for the tenant
``tenant_waiting_for_admin``            the tenant awaits an admin's approval: do not ask yet
``admin_only_tenant_not_consented``     only an admin may consent, and none has
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple, Protocol, get_args
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)
from pydantic_core import ErrorDetails

from proxy.config import describe_errors, read_yaml_file, yaml_path
from proxy.errors import ConfigError

__all__ = [
    "DEFAULTS_RULE",
    "GRAPH_SCOPES",
    "CriterionCheck",
    "Decision",
    "Defaults",
    "EwsAuthorization",
    "GraphAuthorization",
    "IntegrationState",
    "Match",
    "Policy",
    "PolicyUser",
    "Reason",
    "Rule",
    "RuleCheck",
    "RuleSettings",
    "TenantState",
    "check_apps",
    "check_rules",
    "email_domain",
    "evaluate",
    "explain",
    "explain_json",
    "load_policy",
    "policy_from_data",
    "policy_warnings",
    "user_from_options",
]

Prompt = Literal["never", "first_sign_in", "every_sign_in"]
UserConsent = Literal["allowed", "admin_only"]
Status = Literal[
    "none", "connected", "declined", "failed", "admin_approval_required", "reconsent_required"
]
Action = Literal["pass", "consent", "admin_approval_notice"]

STATUSES: tuple[Status, ...] = get_args(Status)
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
DEFAULT_SCOPES = ("Calendars.Read", "Contacts.Read")
ADDED_BY_MSAL = ("openid", "profile", "offline_access")
EWS_PATH = "/ews/exchange.asmx"
EWS_PERMISSION = "EWS.AccessAsUser.All"
EXCHANGE_ONLINE_HOSTS = ("outlook.office365.com", "outlook.office.com")
EWS_SCOPES_PROBLEM = (
    f"with type ews the permission is fixed (full mailbox access as the user, "
    f"{EWS_PERMISSION}); remove scopes"
)
EXCHANGE_ONLINE_WARNING = (
    "EWS in Exchange Online is being switched off (phased from 2026-10-01, off on "
    "2027-04-01); use type graph"
)

_KNOWN_SCOPES = {s.lower(): s for s in GRAPH_SCOPES}
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DOMAIN = re.compile(rf"(?:{_LABEL}\.)+{_LABEL}")
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LOCAL_PART = re.compile(rf"{_ATOM}(?:\.{_ATOM})*")
_GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


# --- parsing what users and admins write ---------------------------------------------------


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


def _tenant_key(value: object) -> str | None:
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
    key = _tenant_key(value)
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


# --- the model -----------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(
        frozen=True, extra="forbid", str_strip_whitespace=True, coerce_numbers_to_str=True
    )


class GraphAuthorization(_Model):
    """Delegated Microsoft Graph permissions, chosen by the admin."""

    type: Literal["graph"]
    scopes: ScopeList

    @property
    def effective_scopes(self) -> tuple[str, ...]:
        return self.scopes


class EwsAuthorization(_Model):
    """Exchange Web Services on a hybrid on-premises Exchange: one fixed permission."""

    type: Literal["ews"]
    ews_url: EwsUrl

    @property
    def host(self) -> str:
        return urlsplit(self.ews_url).hostname or ""

    @property
    def effective_scopes(self) -> tuple[str, ...]:
        return (f"https://{self.host}/{EWS_PERMISSION}",)


Authorization = Annotated[GraphAuthorization | EwsAuthorization, Field(discriminator="type")]
DEFAULT_AUTHORIZATION = GraphAuthorization(type="graph", scopes=DEFAULT_SCOPES)


def _none_is_empty(value: Any) -> Any:
    """`rules:` or `match:` with nothing under it (say, every entry commented out)."""
    return {} if value is None else value


class Match(_Model):
    """Who a rule is for. Criteria left out do not filter; an empty Match is a catch-all."""

    email_domain: DomainList | None = None
    tenant_id: TenantList | None = None
    groups: TextList | None = None
    attributes: AttributeMap | None = None

    @property
    def is_catch_all(self) -> bool:
        return not any((self.email_domain, self.tenant_id, self.groups, self.attributes))


class Defaults(_Model):
    prompt: Prompt = "first_sign_in"
    authorization: Authorization = DEFAULT_AUTHORIZATION
    user_consent: UserConsent = "allowed"
    app: AppName | None = None


class Rule(_Model):
    name: RuleName
    match: Annotated[Match, BeforeValidator(_none_is_empty)] = Match()
    prompt: Prompt | None = None
    authorization: Authorization | None = None
    user_consent: UserConsent | None = None
    app: AppName | None = None


class Policy(_Model):
    version: Annotated[int, BeforeValidator(_version)]
    defaults: Annotated[Defaults, BeforeValidator(_none_is_empty)] = Defaults()
    rules: tuple[Rule, ...] = ()

    @field_validator("rules", mode="before")
    @classmethod
    def _no_rules(cls, value: Any) -> Any:
        return () if value is None else value

    def settings_for(self, rule: Rule | None) -> RuleSettings:
        """The defaults, with whatever the rule sets instead."""
        d = self.defaults
        if rule is None:
            return RuleSettings(d.prompt, d.authorization, d.user_consent, d.app)
        return RuleSettings(
            rule.prompt or d.prompt,
            rule.authorization or d.authorization,
            rule.user_consent or d.user_consent,
            rule.app if rule.app is not None else d.app,
        )


@dataclass(frozen=True, slots=True)
class RuleSettings:
    """What applies to a user: the defaults merged with the matching rule."""

    prompt: Prompt
    authorization: GraphAuthorization | EwsAuthorization
    user_consent: UserConsent
    app: str | None

    @property
    def scopes(self) -> tuple[str, ...]:
        return self.authorization.effective_scopes


# --- loading and checking ------------------------------------------------------------------


def load_policy(path: Path | str) -> Policy:
    """Read and validate a policy file; raise ConfigError listing every problem."""
    return policy_from_data(read_yaml_file(path), str(path))


def policy_from_data(data: Any, source: str = "policy") -> Policy:
    if data is None:
        raise ConfigError(["the policy is empty; it needs at least 'version: 1'"], source)
    if not isinstance(data, dict):
        raise ConfigError(
            ["the top level must be a mapping with version, defaults and rules"], source
        )
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe([_reword(err) for err in exc.errors()]), source) from None


def _describe(errors: list[ErrorDetails]) -> list[str]:
    """`describe_errors`, plus the attribute name for problems under `match.attributes`.

    The shared helper reads a mapping key it has no model for as a union tag and leaves
    it out; here the key is the attribute the admin wrote, so put it back.
    """
    lines: list[str] = []
    for err in errors:
        loc = err["loc"]
        cut = loc.index("attributes") + 1 if "attributes" in loc[:-1] else len(loc)
        line = describe_errors(Policy, [{**err, "loc": loc[:cut]}])[0]
        where = yaml_path(Policy, loc[:cut])
        if cut < len(loc) and line.startswith(f"{where}: "):
            rest = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc[cut:])
            line = where + rest + line[len(where) :]
        if line not in lines:
            lines.append(line)
    return lines


def _reword(err: ErrorDetails) -> ErrorDetails:
    """Say what pydantic's generic messages mean in a policy file."""
    loc, kind, given = err["loc"], err["type"], err.get("input")
    if kind == "extra_forbidden" and loc[-2:] == ("ews", "scopes"):
        return {**err, "type": "value_error", "msg": EWS_SCOPES_PROBLEM}
    if kind == "tuple_type":
        hint = f"; for one value write [{given}]" if isinstance(given, str) else ""
        return {**err, "type": "value_error", "msg": f"must be a list{hint}, got {given!r}"}
    return err


def policy_warnings(policy: Policy) -> list[str]:
    """Findings that do not stop the policy from working but probably are mistakes."""
    return [
        *_exchange_online_warnings(policy),
        *_unreachable_warnings(policy),
        *_duplicate_name_warnings(policy),
        *_same_as_defaults_warnings(policy),
    ]


def _label(index: int, rule: Rule) -> str:
    return f'rules[{index}] "{rule.name}"'


def _exchange_online_warnings(policy: Policy) -> list[str]:
    sources: list[tuple[str, Any]] = [(DEFAULTS_RULE, policy.defaults.authorization)]
    sources += [(f"rules[{i}]", r.authorization) for i, r in enumerate(policy.rules)]
    return [
        f"{where}.authorization.ews_url: {EXCHANGE_ONLINE_WARNING}"
        for where, auth in sources
        if isinstance(auth, EwsAuthorization) and auth.host in EXCHANGE_ONLINE_HOSTS
    ]


def _unreachable_warnings(policy: Policy) -> list[str]:
    warnings: list[str] = []
    for i, rule in enumerate(policy.rules):
        later = policy.rules[i + 1 :]
        if rule.match.is_catch_all and later:
            names = ", ".join(_label(i + 1 + j, r) for j, r in enumerate(later))
            return [
                *warnings,
                f"{_label(i, rule)}: matches everyone, so the rules after it can never "
                f"match ({names}); move it last",
            ]
        for j, earlier in enumerate(policy.rules[:i]):
            if earlier.match == rule.match:
                warnings.append(
                    f"{_label(i, rule)}: has the same match as {_label(j, earlier)}, "
                    "so it can never match"
                )
                break
    return warnings


def _duplicate_name_warnings(policy: Policy) -> list[str]:
    first: dict[str, int] = {}
    warnings: list[str] = []
    for i, rule in enumerate(policy.rules):
        if rule.name in first:
            warnings.append(
                f"{_label(i, rule)}: rules[{first[rule.name]}] has the same name; names "
                "identify rules in explain output and metrics, make them unique"
            )
        first.setdefault(rule.name, i)
    return warnings


def _same_as_defaults_warnings(policy: Policy) -> list[str]:
    defaults = policy.settings_for(None)
    warnings: list[str] = []
    for i, rule in enumerate(policy.rules):
        if policy.settings_for(rule) != defaults:
            continue
        effect = (
            "it has no effect, remove it"
            if i == len(policy.rules) - 1
            else "it only keeps the users it matches away from the rules after it"
        )
        warnings.append(f"{_label(i, rule)}: applies the same settings as the defaults: {effect}")
    return warnings


def check_apps(policy: Policy, known_app_names: Iterable[str]) -> list[str]:
    """Problems for every `app` that names no app registration of the proxy config."""
    known = sorted(set(known_app_names))
    listed = f"known: {', '.join(known)}" if known else "the proxy config defines none"
    places = [(DEFAULTS_RULE, policy.defaults.app)]
    places += [(f"rules[{i}]", r.app) for i, r in enumerate(policy.rules)]
    return [
        f"{where}.app: no app registration named {app!r} in the proxy config; {listed}"
        for where, app in places
        if app is not None and app not in known
    ]


def load_checked_policy(path: Path | str, known_app_names: Iterable[str]) -> Policy:
    """The policy file, valid on its own and against the configured app registrations."""
    policy = load_policy(path)
    problems = check_apps(policy, known_app_names)
    if problems:
        raise ConfigError(problems, str(path))
    return policy


# --- who, and in which state ---------------------------------------------------------------


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
class IntegrationState:
    """Where this user's Office 365 connection stands.

    `prompted_scopes` are the scopes the user has already been asked for (in any prompt):
    with ``first_sign_in``, a connected user is asked once more only for scopes not in it.
    """

    status: Status = "none"
    prompted_before: bool = False
    granted_scopes: tuple[str, ...] = ()
    prompted_scopes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}, got {self.status!r}")


@dataclass(frozen=True, slots=True)
class TenantState:
    """The user's tenant: has an admin consented, is an admin's approval awaited (until)."""

    admin_consented: bool = False
    approval_required_until: float | None = None

    def waiting(self, now: float) -> bool:
        until = self.approval_required_until
        return not self.admin_consented and until is not None and until > now


# --- matching ------------------------------------------------------------------------------


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
    key = _tenant_key(tenant_id)
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


# --- deciding ------------------------------------------------------------------------------


class Reason(NamedTuple):
    code: str
    text: str


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    rule: str  # the rule's name, or "defaults"
    rule_index: int | None
    prompt: Prompt
    authorization: GraphAuthorization | EwsAuthorization
    user_consent: UserConsent
    app: str | None
    scopes: tuple[str, ...]
    reasons: tuple[Reason, ...]

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(r.code for r in self.reasons)


def evaluate(
    policy: Policy,
    user: PolicyUser,
    integration: IntegrationState,
    tenant: TenantState,
    now: float,
) -> Decision:
    """Decide what to do with this sign-in. Pure: no I/O, no clock (`now` is given)."""
    return _decide(policy, check_rules(policy, user), integration, tenant, now)


def _decide(
    policy: Policy,
    tried: tuple[RuleCheck, ...],
    integration: IntegrationState,
    tenant: TenantState,
    now: float,
) -> Decision:
    hit = tried[-1] if tried and tried[-1].matched else None
    settings = policy.settings_for(policy.rules[hit.index] if hit else None)
    reasons = [
        Reason("rule_matched", f'rules[{hit.index}] "{hit.name}" matched')
        if hit
        else Reason("no_rule_matched", "no rule matched; the defaults apply")
    ]
    action: Action = "pass"
    if _wants_consent(settings, integration, reasons):
        action = _gate(settings, tenant, now, reasons)
    return Decision(
        action=action,
        rule=hit.name if hit else DEFAULTS_RULE,
        rule_index=hit.index if hit else None,
        prompt=settings.prompt,
        authorization=settings.authorization,
        user_consent=settings.user_consent,
        app=settings.app,
        scopes=settings.scopes,
        reasons=tuple(reasons),
    )


_STATUS_TEXT: dict[str, str] = {
    "none": "not connected yet",
    "declined": "declined the last time",
    "failed": "the last attempt failed",
}


def _wants_consent(s: RuleSettings, state: IntegrationState, reasons: list[Reason]) -> bool:
    """Would the prompt mode send this user to consent (before the tenant has its say)?"""
    if s.prompt == "never":
        reasons.append(Reason("prompt_never", "the prompt is never: the user is not asked"))
        return False
    if state.status == "connected":
        return _wants_more_scopes(s, state, reasons)
    if state.status == "reconsent_required":
        reasons.append(Reason("reconsent_required", "the grant expired or was revoked: renew it"))
        return True
    if state.status == "admin_approval_required":
        text = "the last attempt needed an admin's approval: try again"
        reasons.append(Reason("admin_approval_required_before", text))
        return True
    status = _STATUS_TEXT[state.status]
    if s.prompt == "first_sign_in" and (state.prompted_before or state.status != "none"):
        text = f"{status}, and first_sign_in asks only once: the user was asked before"
        reasons.append(Reason("first_sign_in_already_prompted", text))
        return False
    asks = "once" if s.prompt == "first_sign_in" else "until connected"
    reasons.append(Reason("not_connected", f"{status}; {s.prompt} asks {asks}"))
    return True


def _wants_more_scopes(s: RuleSettings, state: IntegrationState, reasons: list[Reason]) -> bool:
    missing = _missing(s.scopes, state.granted_scopes)
    if not missing:
        reasons.append(Reason("already_connected", "connected with every scope asked for"))
        return False
    text = f"connected, but the grant lacks {', '.join(missing)}"
    reasons.append(Reason("scopes_missing", text))
    if s.prompt == "every_sign_in":
        return True
    if not _missing(missing, state.prompted_scopes):
        text = f"first_sign_in asks only once, and the user was asked for {', '.join(missing)}"
        reasons.append(Reason("first_sign_in_already_prompted", text))
        return False
    return True


def _scope_key(scope: str) -> str:
    scope = scope.strip().lower()
    return scope.removeprefix(GRAPH_RESOURCE)


def _missing(wanted: Iterable[str], have: Iterable[object]) -> tuple[str, ...]:
    held = {_scope_key(s) for s in have if isinstance(s, str)}
    return tuple(s for s in wanted if _scope_key(s) not in held)


def _gate(s: RuleSettings, tenant: TenantState, now: float, reasons: list[Reason]) -> Action:
    """The tenant's say: never send a user into a consent screen that will fail."""
    if tenant.admin_consented:
        reasons.append(Reason("tenant_admin_consented", "an admin consented for the tenant"))
        return "consent"
    if tenant.waiting(now):
        text = "an admin's approval is awaited for this tenant: the user is not asked until then"
        reasons.append(Reason("tenant_waiting_for_admin", text))
        return "pass"
    if s.user_consent == "admin_only":
        text = "only an admin may consent, and no admin has consented for this tenant"
        reasons.append(Reason("admin_only_tenant_not_consented", text))
        return "admin_approval_notice"
    return "consent"


# --- explaining ----------------------------------------------------------------------------


def explain(
    policy: Policy,
    user: PolicyUser,
    integration: IntegrationState | None = None,
    tenant: TenantState | None = None,
    *,
    now: float | None = None,
) -> str:
    """What the policy decides for this user, and why, as lines for people."""
    return "\n".join(_explain_lines(explain_json(policy, user, integration, tenant, now=now)))


def explain_json(
    policy: Policy,
    user: PolicyUser,
    integration: IntegrationState | None = None,
    tenant: TenantState | None = None,
    *,
    now: float | None = None,
) -> dict[str, Any]:
    """The same as `explain`, as data (for ``explain --json``)."""
    integration = integration or IntegrationState()
    tenant = tenant or TenantState()
    tried = check_rules(policy, user)
    decision = _decide(policy, tried, integration, tenant, time.time() if now is None else now)
    return {
        "user": {
            "email": user.email,
            "tenant_id": user.tenant_id,
            "groups": list(user.groups),
            "attributes": {k: list(v) for k, v in user.attributes.items()},
        },
        "integration": {
            "status": integration.status,
            "prompted_before": integration.prompted_before,
            "granted_scopes": list(integration.granted_scopes),
            "prompted_scopes": list(integration.prompted_scopes),
        },
        "tenant": {
            "admin_consented": tenant.admin_consented,
            "approval_required_until": tenant.approval_required_until,
        },
        "rules_tried": [_rule_json(check) for check in tried],
        "decision": {
            "action": decision.action,
            "rule": decision.rule,
            "rule_index": decision.rule_index,
            "prompt": decision.prompt,
            "authorization": decision.authorization.model_dump(mode="json"),
            "user_consent": decision.user_consent,
            "app": decision.app,
            "scopes": list(decision.scopes),
            "reasons": [{"code": r.code, "text": r.text} for r in decision.reasons],
        },
    }


def _rule_json(check: RuleCheck) -> dict[str, Any]:
    return {
        "index": check.index,
        "name": check.name,
        "matched": check.matched,
        "criteria": [
            {
                "criterion": c.criterion,
                "accepted": list(c.accepted),
                "matched": c.matched,
                "found": c.found,
            }
            for c in check.criteria
        ],
    }


def _explain_lines(data: dict[str, Any]) -> list[str]:
    user, state, tenant = data["user"], data["integration"], data["tenant"]
    lines = [f"user: {user['email'] if user['email'] is not None else '(no email)'}"]
    lines += [f"  tenant_id: {user['tenant_id']}"] if user["tenant_id"] else []
    lines += [f"  groups: {', '.join(user['groups'])}"] if user["groups"] else []
    lines += [
        f"  attributes.{k}: {', '.join(v)}" for k, v in user["attributes"].items() if k != "groups"
    ]
    lines.append(
        f"integration: {state['status']}, "
        + ("prompted before" if state["prompted_before"] else "not prompted before")
        + f", granted: {', '.join(state['granted_scopes']) or 'nothing'}"
    )
    lines.append(f"tenant: {_tenant_text(tenant)}")
    for rule in data["rules_tried"]:
        lines.append(f'rules[{rule["index"]}] "{rule["name"]}": ' + _hit(rule["matched"]))
        lines += [
            f"  {c['criterion']} [{', '.join(c['accepted'])}]: {_hit(c['matched'])} ({c['found']})"
            for c in rule["criteria"]
        ] or ["  (no criteria: matches everyone)"]
    return [*lines, *_decision_lines(data["decision"])]


def _hit(matched: bool) -> str:
    return "match" if matched else "no match"


def _tenant_text(tenant: dict[str, Any]) -> str:
    consented = "admin consented" if tenant["admin_consented"] else "no admin consent"
    until = tenant["approval_required_until"]
    waiting = "" if until is None else f", admin approval awaited until {_utc(until)}"
    return consented + waiting


def _utc(timestamp: float) -> str:
    try:
        return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, ValueError, OSError):
        return repr(timestamp)


def _decision_lines(decision: dict[str, Any]) -> list[str]:
    auth = decision["authorization"]
    index = decision["rule_index"]
    rule = DEFAULTS_RULE if index is None else f'rules[{index}] "{decision["rule"]}"'
    kind = auth["type"] + (f" ({auth['ews_url']})" if auth["type"] == "ews" else "")
    return [
        f"decision: {decision['action']}",
        f"  rule: {rule}",
        f"  prompt: {decision['prompt']}",
        f"  authorization: {kind}",
        f"  scopes: {' '.join(decision['scopes'])}",
        f"  user_consent: {decision['user_consent']}",
        f"  app: {decision['app'] or '(the default app registration)'}",
        "reasons:",
        *(f"  {r['code']}: {r['text']}" for r in decision["reasons"]),
    ]

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

Rule names are unique. Beyond validity, `proxy.policy.findings` checks the app registrations
named against the proxy config and points out rules that are probably mistakes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import ErrorDetails

from proxy.config import describe_errors, located, read_yaml_document
from proxy.errors import ConfigError
from proxy.policy.values import (
    EWS_PERMISSION,
    AppName,
    AttributeMap,
    DomainList,
    EwsUrl,
    RuleName,
    ScopeList,
    TenantList,
    TextList,
    Version,
)

Prompt = Literal["never", "first_sign_in", "every_sign_in"]
UserConsent = Literal["allowed", "admin_only"]

DEFAULT_SCOPES = ("Calendars.Read", "Contacts.Read")
EXCHANGE_ONLINE_HOSTS = ("outlook.office365.com", "outlook.office.com")
EWS_SCOPES_PROBLEM = (
    f"with type ews the permission is fixed (full mailbox access as the user, "
    f"{EWS_PERMISSION}); remove scopes"
)
EXCHANGE_ONLINE_WARNING = (
    "EWS in Exchange Online is being switched off (phased from 2026-10-01, off on "
    "2027-04-01); use type graph"
)

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
    version: Version
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
    data, marks = read_yaml_document(path)
    try:
        return policy_from_data(data, str(path))
    except ConfigError as exc:
        raise located(exc, marks) from None


def policy_from_data(data: Any, source: str = "policy") -> Policy:
    if data is None:
        raise ConfigError(["the policy is empty; it needs at least 'version: 1'"], source)
    if not isinstance(data, dict):
        raise ConfigError(
            ["the top level must be a mapping with version, defaults and rules"], source
        )
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        errors = [_reword(err) for err in exc.errors()]
        raise ConfigError(describe_errors(Policy, errors, data), source) from None
    duplicates = _duplicate_names(policy)
    if duplicates:
        raise ConfigError(duplicates, source)
    return policy


def _duplicate_names(policy: Policy) -> list[str]:
    """Names identify rules in `explain`, decisions and metrics: two alike are an error."""
    first: dict[str, int] = {}
    problems: list[str] = []
    for i, rule in enumerate(policy.rules):
        if rule.name in first:
            problems.append(
                f"rules[{i}].name: {rule.name!r} is already the name of rules[{first[rule.name]}]; "
                "names identify rules in explain output and metrics, make them unique"
            )
        first.setdefault(rule.name, i)
    return problems


def _reword(err: ErrorDetails) -> ErrorDetails:
    """Say what pydantic's generic messages mean in a policy file."""
    loc, kind, given = err["loc"], err["type"], err.get("input")
    if kind == "extra_forbidden" and loc[-2:] == ("ews", "scopes"):
        return {**err, "type": "value_error", "msg": EWS_SCOPES_PROBLEM}
    if kind == "tuple_type":
        hint = f"; for one value write [{given}]" if isinstance(given, str) else ""
        return {**err, "type": "value_error", "msg": f"must be a list{hint}, got {given!r}"}
    return err

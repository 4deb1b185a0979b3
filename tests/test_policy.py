"""The prompt policy: grammar, matching, decisions and their explanation."""

from __future__ import annotations

import itertools
import math
import random
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from proxy import policy as policy_module
from proxy.config import parse_yaml
from proxy.errors import ConfigError
from proxy.identity.sso import SignIn
from proxy.policy import (
    EwsAuthorization,
    GraphAuthorization,
    IntegrationState,
    Policy,
    PolicyUser,
    TenantState,
    check_apps,
    email_domain,
    evaluate,
    explain,
    explain_json,
    load_policy,
    policy_from_data,
    policy_warnings,
    user_from_options,
)

POLICIES = Path(__file__).resolve().parent.parent / "policies"
EXAMPLES = sorted(POLICIES.glob("**/*.yaml"))
NOW = 1_800_000_000.0
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
OTHER_TENANT = "0b5e4c1a-3f7d-4e2b-9c8a-6d1f2e3a4b5c"
EWS_PROBLEM = (
    "with type ews the permission is fixed (full mailbox access as the user, "
    "EWS.AccessAsUser.All); remove scopes"
)
KNOWN = (
    "User.Read, Calendars.Read, Calendars.ReadBasic, Calendars.ReadWrite, Contacts.Read, "
    "Contacts.ReadWrite, People.Read, MailboxSettings.Read"
)


def policy(text: str) -> Policy:
    return policy_from_data(parse_yaml(textwrap.dedent(text), "test.yaml"), "test.yaml")


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        policy(text)
    assert caught.value.source == "test.yaml"
    return caught.value.problems


def user(email: str | None = "alice@contoso.com", **kwargs: Any) -> PolicyUser:
    return PolicyUser(email, **kwargs)


# --- the shipped files -----------------------------------------------------------------------


def test_examples_are_found() -> None:
    names = {p.relative_to(POLICIES).as_posix() for p in EXAMPLES}
    assert names == {
        "default.yaml",
        "examples/admin-only-tenant.yaml",
        "examples/every-sign-in.yaml",
        "examples/hybrid-ews.yaml",
        "examples/read-write-for-sales.yaml",
    }


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_shipped_policy_loads_cleanly(path: Path) -> None:
    loaded = load_policy(path)
    assert policy_warnings(loaded) == []
    assert check_apps(loaded, []) == []
    assert "# " in path.read_text()  # documented for the admin who copies it


def test_default_policy_is_the_built_in_defaults() -> None:
    loaded = load_policy(POLICIES / "default.yaml")
    assert loaded.rules == ()
    assert loaded.defaults == policy("version: 1").defaults
    decision = evaluate(loaded, user(), IntegrationState(), TenantState(), NOW)
    assert (decision.action, decision.rule, decision.prompt) == (
        "consent",
        "defaults",
        "first_sign_in",
    )
    assert decision.scopes == ("Calendars.Read", "Contacts.Read")
    assert decision.user_consent == "allowed"


def test_public_names_exist() -> None:
    for name in policy_module.__all__:
        assert hasattr(policy_module, name), name


# --- grammar errors, exact wording -------------------------------------------------------------

GRAMMAR_ERRORS: list[tuple[str, str, list[str]]] = [
    (
        "unknown keys",
        """
        version: 1
        defualts: {}
        rules:
          - name: a
            prompot: never
            match: {email: [contoso.com]}
        """,
        [
            "rules[0].match.email: unknown key; allowed keys here: "
            "email_domain, tenant_id, groups, attributes",
            "rules[0].prompot: unknown key; allowed keys here: "
            "name, match, prompt, authorization, user_consent, app",
            "defualts: unknown key; allowed keys here: version, defaults, rules",
        ],
    ),
    (
        "bad prompt and user_consent values",
        """
        version: 1
        defaults: {prompt: always, user_consent: yes}
        """,
        [
            "defaults.prompt: input should be 'never', 'first_sign_in' or 'every_sign_in', "
            "got 'always'",
            "defaults.user_consent: input should be 'allowed' or 'admin_only', got True",
        ],
    ),
    (
        "ews with scopes",
        """
        version: 1
        rules:
          - name: a
          - name: b
            authorization:
              type: ews
              ews_url: https://mail.contoso.com/EWS/Exchange.asmx
              scopes: [Calendars.Read]
        """,
        [f"rules[1].authorization.scopes: {EWS_PROBLEM}"],
    ),
    (
        "unknown scope, EWS scope under graph, openid, offline_access, none at all",
        """
        version: 1
        defaults:
          authorization:
            type: graph
            scopes:
              - Mail.Read
              - https://outlook.office365.com/EWS.AccessAsUser.All
              - openid
              - https://graph.microsoft.com/offline_access
        rules:
          - name: a
            authorization: {type: graph, scopes: []}
        """,
        [
            f"defaults.authorization.scopes[0]: unknown Graph scope 'Mail.Read'; known: {KNOWN}",
            "defaults.authorization.scopes[1]: unknown Graph scope "
            f"'https://outlook.office365.com/EWS.AccessAsUser.All'; known: {KNOWN}; "
            "EWS is not a Graph permission: use type ews with an ews_url",
            "defaults.authorization.scopes[2]: 'openid' is added automatically "
            "(with the other OpenID scopes); remove it",
            "defaults.authorization.scopes[3]: 'offline_access' is added automatically "
            "(with the other OpenID scopes); remove it",
            "rules[0].authorization.scopes: give at least one value "
            "(leave the criterion out to match everyone)",
        ],
    ),
    (
        "authorization type",
        """
        version: 1
        rules:
          - name: a
            authorization: {type: imap}
          - name: b
            authorization: {scopes: [User.Read]}
          - name: c
            authorization: {type: ews, ews_url: "http://mail.contoso.com/EWS/Exchange.asmx"}
          - name: d
            authorization: {type: ews, ews_url: "https://mail.contoso.com/owa"}
        """,
        [
            "rules[0].authorization.type: must be one of 'graph', 'ews', got 'imap'",
            "rules[1].authorization.type: is required: it says which kind of entry this is",
            "rules[2].authorization.ews_url: must be https://HOST/EWS/Exchange.asmx, "
            "got 'http://mail.contoso.com/EWS/Exchange.asmx'",
            "rules[3].authorization.ews_url: must be https://HOST/EWS/Exchange.asmx, "
            "got 'https://mail.contoso.com/owa'",
        ],
    ),
    (
        "bad domain entries",
        """
        version: 1
        rules:
          - name: a
            match:
              email_domain:
                - "@contoso.com"
                - alice@contoso.com
                - "*.com"
                - "*contoso.com"
                - "sub.*.contoso.com"
                - bücher.de
                - contoso.com.
                - contoso com
                - localhost
                - 10.0.0.1
          - name: b
            match: {email_domain: contoso.com}
          - name: c
            match: {email_domain: []}
        """,
        [
            "rules[0].match.email_domain[0]: write the domain only, without '@' "
            "(e.g. contoso.com), got '@contoso.com'",
            "rules[0].match.email_domain[1]: write the domain only, without '@' "
            "(e.g. contoso.com), got 'alice@contoso.com'",
            "rules[0].match.email_domain[2]: a wildcard needs a domain of two labels or more "
            "after '*.', got '*.com'",
            "rules[0].match.email_domain[3]: a wildcard is only allowed as a leading '*.' "
            "(e.g. *.contoso.com, which matches subdomains only), got '*contoso.com'",
            "rules[0].match.email_domain[4]: a wildcard is only allowed as a leading '*.' "
            "(e.g. *.contoso.com, which matches subdomains only), got 'sub.*.contoso.com'",
            "rules[0].match.email_domain[5]: must be ASCII; write an internationalised domain "
            "in its xn-- form, got 'bücher.de'",
            "rules[0].match.email_domain[6]: must be a domain such as contoso.com or "
            "*.contoso.com, got 'contoso.com.'",
            "rules[0].match.email_domain[7]: must be a domain such as contoso.com or "
            "*.contoso.com, got 'contoso com'",
            "rules[0].match.email_domain[8]: must be a domain such as contoso.com or "
            "*.contoso.com, got 'localhost'",
            "rules[0].match.email_domain[9]: must be a domain such as contoso.com or "
            "*.contoso.com, got '10.0.0.1'",
            "rules[1].match.email_domain: must be a list; for one value write [contoso.com], "
            "got 'contoso.com'",
            "rules[2].match.email_domain: give at least one value "
            "(leave the criterion out to match everyone)",
        ],
    ),
    (
        "other criteria",
        """
        version: 1
        rules:
          - name: a
            match:
              tenant_id: [contoso.onmicrosoft.com, "{72f988bf-86f1-41af-91ab-2d7cd011db47}"]
              groups: [""]
              attributes: {department: [], level: [1, ""]}
          - name: b
            match: {attributes: {}}
          - name: c
            match: {attributes: [department]}
        """,
        [
            "rules[0].match.tenant_id[0]: must be a tenant id, a GUID such as "
            "72f988bf-86f1-41af-91ab-2d7cd011db47 (not a domain), got 'contoso.onmicrosoft.com'",
            "rules[0].match.tenant_id[1]: must be a tenant id, a GUID such as "
            "72f988bf-86f1-41af-91ab-2d7cd011db47 (not a domain), "
            "got '{72f988bf-86f1-41af-91ab-2d7cd011db47}'",
            "rules[0].match.groups[0]: string should have at least 1 character, got ''",
            "rules[0].match.attributes.department: give at least one value "
            "(leave the criterion out to match everyone)",
            "rules[0].match.attributes.level[1]: string should have at least 1 character, got ''",
            "rules[1].match.attributes: give at least one value "
            "(leave the criterion out to match everyone)",
            "rules[2].match.attributes: must be a mapping of option: value, got list",
        ],
    ),
    (
        "rule names and shapes",
        """
        version: 1
        rules:
          - name: defaults
          - match: {groups: [Sales]}
          - just-a-string
          - name: ""
        """,
        [
            "rules[0].name: 'defaults' is reserved for the defaults; choose another name",
            "rules[1].name: is required",
            "rules[2]: must be a mapping of option: value, got str",
            "rules[3].name: must be 1 to 100 printable characters, got ''",
        ],
    ),
    ("wrong version", "version: 2", ["version: must be 1 (the only policy format so far), got 2"]),
    (
        "version as text",
        "version: '1'",
        ["version: must be 1 (the only policy format so far), got '1'"],
    ),
    ("no version", "rules: []", ["version: is required"]),
    (
        "rules not a list",
        "version: 1\nrules: {name: a}",
        ["rules: must be a list, got {'name': 'a'}"],
    ),
    ("empty file", "", ["the policy is empty; it needs at least 'version: 1'"]),
    ("only a comment", "# nothing yet\n", ["the policy is empty; it needs at least 'version: 1'"]),
    (
        "not a mapping",
        "- version: 1",
        ["the top level must be a mapping with version, defaults and rules"],
    ),
    (
        "a scalar",
        "version 1",
        ["the top level must be a mapping with version, defaults and rules"],
    ),
    (
        "YAML garbage",
        "version: 1\nrules: [\n",
        ["line 3, column 1: not valid YAML: expected the node content, but found '<stream end>'"],
    ),
    (
        "duplicate keys",
        "version: 1\ndefaults:\n  prompt: never\n  prompt: every_sign_in\n",
        ["line 4, column 3: not valid YAML: key 'prompt' is given twice"],
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"), [c[1:] for c in GRAMMAR_ERRORS], ids=[c[0] for c in GRAMMAR_ERRORS]
)
def test_grammar_errors_are_all_reported_exactly(text: str, expected: list[str]) -> None:
    assert problems(text) == expected


def test_load_policy_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("version: 1\nrules:\n  - name: a\n    prompt: sometimes\n")
    with pytest.raises(ConfigError) as caught:
        load_policy(path)
    assert caught.value.source == str(path)
    assert caught.value.problems == [
        "rules[0].prompt: input should be 'never', 'first_sign_in' or 'every_sign_in', "
        "got 'sometimes'"
    ]
    with pytest.raises(ConfigError) as missing:
        load_policy(tmp_path / "nope.yaml")
    assert missing.value.problems == ["cannot read the file: No such file or directory"]


def test_empty_sections_mean_nothing_given() -> None:
    loaded = policy("version: 1\ndefaults:\nrules:\n")
    assert loaded.rules == () and loaded.defaults == policy("version: 1").defaults
    assert policy("version: 1\nrules:\n  - name: all\n    match:\n").rules[0].match.is_catch_all


def test_values_are_normalised() -> None:
    loaded = policy(
        f"""
        version: 1
        rules:
          - name: a
            match:
              email_domain: [" Contoso.COM ", "*.EU.contoso.com", contoso.com]
              tenant_id: ["{TENANT.upper()}"]
              attributes: {{level: [3]}}
            authorization:
              type: graph
              scopes: [calendars.read, "https://graph.microsoft.com/Calendars.Read", USER.READ]
        """
    )
    rule = loaded.rules[0]
    assert rule.match.email_domain == ("contoso.com", "*.eu.contoso.com")
    assert rule.match.tenant_id == (TENANT,)
    assert rule.match.attributes == {"level": ("3",)}
    assert rule.authorization == GraphAuthorization(
        type="graph", scopes=("Calendars.Read", "User.Read")
    )


def test_ews_scope_is_the_on_premises_host() -> None:
    loaded = policy(
        """
        version: 1
        defaults:
          authorization: {type: ews, ews_url: "https://Mail.Contoso.com/ews/exchange.asmx"}
        """
    )
    assert isinstance(loaded.defaults.authorization, EwsAuthorization)
    assert loaded.defaults.authorization.effective_scopes == (
        "https://mail.contoso.com/EWS.AccessAsUser.All",
    )


def test_policy_is_frozen() -> None:
    loaded = policy("version: 1")
    with pytest.raises(ValueError, match="frozen"):
        loaded.rules = ()  # type: ignore[misc]


# --- warnings and app names -------------------------------------------------------------------


def test_warnings_exact() -> None:
    loaded = policy(
        """
        version: 1
        defaults:
          authorization: {type: ews, ews_url: "https://outlook.office365.com/EWS/Exchange.asmx"}
        rules:
          - name: sales
            match: {groups: [Sales]}
            prompt: every_sign_in
          - name: sales
            match: {groups: [Sales]}
            prompt: never
          - name: plain
            match: {groups: [Staff]}
            authorization: {type: ews, ews_url: "https://outlook.office365.com/EWS/Exchange.asmx"}
          - name: everyone
            authorization: {type: ews, ews_url: "https://outlook.office.com/EWS/Exchange.asmx"}
          - name: late
            match: {groups: [Late]}
        """
    )
    assert policy_warnings(loaded) == [
        "defaults.authorization.ews_url: EWS in Exchange Online is being switched off "
        "(phased from 2026-10-01, off on 2027-04-01); use type graph",
        "rules[2].authorization.ews_url: EWS in Exchange Online is being switched off "
        "(phased from 2026-10-01, off on 2027-04-01); use type graph",
        "rules[3].authorization.ews_url: EWS in Exchange Online is being switched off "
        "(phased from 2026-10-01, off on 2027-04-01); use type graph",
        'rules[1] "sales": has the same match as rules[0] "sales", so it can never match',
        'rules[3] "everyone": matches everyone, so the rules after it can never match '
        '(rules[4] "late"); move it last',
        'rules[1] "sales": rules[0] has the same name; names identify rules in explain '
        "output and metrics, make them unique",
        'rules[2] "plain": applies the same settings as the defaults: it only keeps the '
        "users it matches away from the rules after it",
        'rules[4] "late": applies the same settings as the defaults: it has no effect, remove it',
    ]


def test_catch_all_last_is_fine() -> None:
    loaded = policy(
        """
        version: 1
        rules:
          - name: sales
            match: {groups: [Sales]}
            prompt: every_sign_in
          - name: everyone-else
            prompt: never
        """
    )
    assert policy_warnings(loaded) == []


def test_check_apps() -> None:
    loaded = policy(
        """
        version: 1
        defaults: {app: main}
        rules:
          - name: a
            match: {groups: [A]}
            app: onprem
          - name: b
            match: {groups: [B]}
            app: main
        """
    )
    assert check_apps(loaded, ["main", "onprem"]) == []
    assert check_apps(loaded, ["main"]) == [
        "rules[0].app: no app registration named 'onprem' in the proxy config; known: main"
    ]
    assert check_apps(loaded, []) == [
        "defaults.app: no app registration named 'main' in the proxy config; "
        "the proxy config defines none",
        "rules[0].app: no app registration named 'onprem' in the proxy config; "
        "the proxy config defines none",
        "rules[1].app: no app registration named 'main' in the proxy config; "
        "the proxy config defines none",
    ]


# --- matching ----------------------------------------------------------------------------------

MATCHING = policy(
    f"""
    version: 1
    rules:
      - name: exact
        match: {{email_domain: [contoso.com]}}
      - name: subdomains
        match: {{email_domain: ["*.contoso.com"]}}
      - name: idn
        match: {{email_domain: [xn--bcher-kva.de]}}
      - name: tenant
        match: {{tenant_id: ["{TENANT}"]}}
      - name: groups
        match: {{groups: [Sales, Support]}}
      - name: attributes
        match: {{attributes: {{department: [Finance], level: ["3", "4"]}}}}
      - name: everything
        match:
          email_domain: [fabrikam.com]
          tenant_id: ["{OTHER_TENANT}"]
          groups: [Admins]
          attributes: {{country: [NL]}}
    """
)

EMAIL_CASES = [
    ("alice@contoso.com", "exact"),
    ("ALICE@CONTOSO.COM", "exact"),
    ("alice@Contoso.Com", "exact"),
    ("o'brien+tag@contoso.com", "exact"),
    ("alice@eu.contoso.com", "subdomains"),
    ("alice@a.b.contoso.com", "subdomains"),
    ("alice@xn--bcher-kva.de", "idn"),
    # nothing: lookalikes, ambiguities and other domains
    ("alice@evilcontoso.com", "defaults"),
    ("alice@contoso.com.evil.com", "defaults"),
    ("alice@contoso.co", "defaults"),
    ("a@b.com@contoso.com", "defaults"),
    ("alice@contoso.com@evil.com", "defaults"),
    ("alice@evil.com@contoso.com", "defaults"),
    ("alice@contoso.com.", "defaults"),
    ("alice@eu.contoso.com.", "defaults"),
    ("alice@.contoso.com", "defaults"),
    ("alice@contoso..com", "defaults"),
    ("alice@-contoso.com", "defaults"),
    ("@contoso.com", "defaults"),
    ("alice.@contoso.com", "defaults"),
    ("alice@", "defaults"),
    ("contoso.com", "defaults"),
    ("", "defaults"),
    (" alice@contoso.com", "defaults"),
    ("alice@contoso.com ", "defaults"),
    ("alice @contoso.com", "defaults"),
    ("alice@contoso.com\n", "defaults"),
    ("alice@contoso.com\t", "defaults"),
    ("alice@contoso.com\x00", "defaults"),
    ('"alice"@contoso.com', "defaults"),
    ('"a@evil.com"@contoso.com', "defaults"),
    ("a\\@evil.com@contoso.com", "defaults"),
    ("alice@[10.0.0.1]", "defaults"),
    ("alice@10.0.0.1", "defaults"),
    ("alice@contoso\u3002com", "defaults"),  # ideographic full stop
    ("alice@contoso\uff0ecom", "defaults"),  # fullwidth full stop
    ("alice\uff20contoso.com", "defaults"),  # fullwidth commercial at
    ("alice@\u0441ontoso.com", "defaults"),  # Cyrillic es
    ("alice@contoso.com\u200b", "defaults"),  # zero-width space
    ("alice@b\u00fccher.de", "defaults"),  # IDN in Unicode form
    ("(comment)alice@contoso.com", "defaults"),
    ("@evil.com:alice@contoso.com", "defaults"),
    ("a" * 65 + "@contoso.com", "defaults"),
    ("alice@" + "a" * 64 + ".contoso.com", "defaults"),
    (None, "defaults"),
]


@pytest.mark.parametrize(("email", "rule"), EMAIL_CASES)
def test_email_domain_matching(email: str | None, rule: str) -> None:
    decision = evaluate(MATCHING, user(email), IntegrationState(), TenantState(), NOW)
    assert decision.rule == rule


def test_email_domain_checks_ascii_before_lowercasing() -> None:
    kelvin = "bob@\u212aontoso.com"  # KELVIN SIGN lowercases to an ASCII "k"
    assert kelvin.lower() == "bob@kontoso.com"
    assert email_domain(kelvin) is None
    assert email_domain("bob@Kontoso.com") == "kontoso.com"
    assert email_domain(42) is None


@pytest.mark.parametrize(
    ("tenant_id", "rule"),
    [
        (TENANT, "tenant"),
        (TENANT.upper(), "tenant"),
        (OTHER_TENANT, "defaults"),
        ("{" + TENANT + "}", "defaults"),
        (TENANT.replace("-", ""), "defaults"),
        (TENANT + " ", "defaults"),
        ("contoso.onmicrosoft.com", "defaults"),
        (None, "defaults"),
    ],
)
def test_tenant_matching(tenant_id: str | None, rule: str) -> None:
    who = user("x@example.org", tenant_id=tenant_id)
    assert evaluate(MATCHING, who, IntegrationState(), TenantState(), NOW).rule == rule


@pytest.mark.parametrize(
    ("groups", "attributes", "rule"),
    [
        (("Sales",), {}, "groups"),
        (("Staff", "Support"), {}, "groups"),
        (("sales",), {}, "defaults"),  # exact, case-sensitive
        (("Sales ",), {}, "defaults"),
        ((), {"groups": ("Sales",)}, "defaults"),  # groups come from PolicyUser.groups
        ((), {"department": ("Finance",), "level": ("3",)}, "attributes"),
        ((), {"department": ("HR", "Finance"), "level": ("4",)}, "attributes"),
        ((), {"department": ("Finance",)}, "defaults"),  # every attribute must hold
        ((), {"department": ("finance",), "level": ("3",)}, "defaults"),
        ((), {"department": ("Finance",), "level": ()}, "defaults"),
    ],
)
def test_group_and_attribute_matching(
    groups: tuple[str, ...], attributes: dict[str, tuple[str, ...]], rule: str
) -> None:
    who = user("x@example.org", groups=groups, attributes=attributes)
    assert evaluate(MATCHING, who, IntegrationState(), TenantState(), NOW).rule == rule


def test_every_criterion_must_hold() -> None:
    full: dict[str, Any] = {
        "email": "ann@fabrikam.com",
        "tenant_id": OTHER_TENANT,
        "groups": ("Admins",),
        "attributes": {"country": ("NL",)},
    }
    everyone = PolicyUser(**full)
    assert evaluate(MATCHING, everyone, IntegrationState(), TenantState(), NOW).rule == "everything"
    for key, wrong in [
        ("email", "ann@fabrikam.org"),
        ("tenant_id", TENANT.replace("7", "8")),
        ("groups", ("Users",)),
        ("attributes", {"country": ("BE",)}),
    ]:
        who = PolicyUser(**{**full, key: wrong})
        assert evaluate(MATCHING, who, IntegrationState(), TenantState(), NOW).rule == "defaults"


def test_first_match_wins() -> None:
    loaded = policy(
        """
        version: 1
        rules:
          - name: sales
            match: {groups: [Sales]}
            prompt: every_sign_in
          - name: contoso
            match: {email_domain: [contoso.com]}
            prompt: never
        """
    )
    both = user(groups=("Sales",))
    decision = evaluate(loaded, both, IntegrationState(), TenantState(), NOW)
    assert (decision.rule, decision.rule_index, decision.prompt) == ("sales", 0, "every_sign_in")
    decision = evaluate(loaded, user(), IntegrationState(), TenantState(), NOW)
    assert (decision.rule, decision.rule_index, decision.prompt) == ("contoso", 1, "never")


def test_user_from_sign_in() -> None:
    sign_in = SignIn(
        subject="S-1",
        email="alice@contoso.com",
        tenant_id=TENANT,
        attributes={"groups": ("Sales",), "department": ("Finance",)},
    )
    who = PolicyUser.from_sign_in(sign_in)
    assert who == PolicyUser(
        "alice@contoso.com", TENANT, ("Sales",), {"groups": ("Sales",), "department": ("Finance",)}
    )
    assert PolicyUser.from_sign_in(SignIn(subject="bob@contoso.com")).email == "bob@contoso.com"


def test_user_from_options() -> None:
    who = user_from_options("a@contoso.com", TENANT, ["groups=Sales", "groups=HR", "level=3=x"])
    assert who == PolicyUser(
        "a@contoso.com",
        TENANT,
        ("Sales", "HR"),
        {
            "groups": ("Sales", "HR"),
            "level": ("3=x",),
        },
    )
    with pytest.raises(ConfigError) as caught:
        user_from_options("a@contoso.com", attrs=["groups"])
    assert caught.value.problems == ["--attr 'groups': write name=value, e.g. groups=Sales"]


# --- decisions: prompt mode x integration state x tenant state ---------------------------------

SCOPES = ("Calendars.Read", "Contacts.Read")
STATES = {
    "new": IntegrationState("none", False),
    "abandoned": IntegrationState("none", True),  # sent to Microsoft, never came back
    "connected": IntegrationState("connected", True, (*SCOPES, "openid", "profile")),
    "connected_urls": IntegrationState(
        "connected",
        True,
        ("https://graph.microsoft.com/calendars.read", "https://graph.microsoft.com/Contacts.Read"),
    ),
    "drift": IntegrationState("connected", True, ("Calendars.Read",)),
    "drift_asked": IntegrationState("connected", True, ("Calendars.Read",), SCOPES),
    "declined": IntegrationState("declined", True),
    "failed": IntegrationState("failed", True),
    "needs_admin": IntegrationState("admin_approval_required", True),
    "reconsent": IntegrationState("reconsent_required", True, SCOPES),
}

# (prompt, state) -> (does the prompt mode ask?, its reason codes)
ASKS: dict[tuple[str, str], tuple[bool, list[str]]] = {
    **{("never", s): (False, ["prompt_never"]) for s in STATES},
    ("first_sign_in", "new"): (True, ["not_connected"]),
    ("first_sign_in", "abandoned"): (False, ["first_sign_in_already_prompted"]),
    ("first_sign_in", "connected"): (False, ["already_connected"]),
    ("first_sign_in", "connected_urls"): (False, ["already_connected"]),
    ("first_sign_in", "drift"): (True, ["scopes_missing"]),
    ("first_sign_in", "drift_asked"): (False, ["scopes_missing", "first_sign_in_already_prompted"]),
    ("first_sign_in", "declined"): (False, ["first_sign_in_already_prompted"]),
    ("first_sign_in", "failed"): (False, ["first_sign_in_already_prompted"]),
    ("first_sign_in", "needs_admin"): (True, ["admin_approval_required_before"]),
    ("first_sign_in", "reconsent"): (True, ["reconsent_required"]),
    ("every_sign_in", "new"): (True, ["not_connected"]),
    ("every_sign_in", "abandoned"): (True, ["not_connected"]),
    ("every_sign_in", "connected"): (False, ["already_connected"]),
    ("every_sign_in", "connected_urls"): (False, ["already_connected"]),
    ("every_sign_in", "drift"): (True, ["scopes_missing"]),
    ("every_sign_in", "drift_asked"): (True, ["scopes_missing"]),
    ("every_sign_in", "declined"): (True, ["not_connected"]),
    ("every_sign_in", "failed"): (True, ["not_connected"]),
    ("every_sign_in", "needs_admin"): (True, ["admin_approval_required_before"]),
    ("every_sign_in", "reconsent"): (True, ["reconsent_required"]),
}

TENANTS = {
    "plain": TenantState(),
    "waiting": TenantState(False, NOW + 3600),
    "wait_over": TenantState(False, NOW - 1),
    "wait_ends_now": TenantState(False, NOW),
    "consented": TenantState(True),
    "consented_while_waiting": TenantState(True, NOW + 3600),
}

# (tenant, user_consent) -> what happens to a user the prompt mode would ask
GATE: dict[tuple[str, str], tuple[str, list[str]]] = {
    ("plain", "allowed"): ("consent", []),
    ("plain", "admin_only"): ("admin_approval_notice", ["admin_only_tenant_not_consented"]),
    ("waiting", "allowed"): ("pass", ["tenant_waiting_for_admin"]),
    ("waiting", "admin_only"): ("pass", ["tenant_waiting_for_admin"]),
    ("wait_over", "allowed"): ("consent", []),
    ("wait_over", "admin_only"): ("admin_approval_notice", ["admin_only_tenant_not_consented"]),
    ("wait_ends_now", "allowed"): ("consent", []),
    ("wait_ends_now", "admin_only"): (
        "admin_approval_notice",
        ["admin_only_tenant_not_consented"],
    ),
    ("consented", "allowed"): ("consent", ["tenant_admin_consented"]),
    ("consented", "admin_only"): ("consent", ["tenant_admin_consented"]),
    ("consented_while_waiting", "allowed"): ("consent", ["tenant_admin_consented"]),
    ("consented_while_waiting", "admin_only"): ("consent", ["tenant_admin_consented"]),
}

DECISION_CASES = list(
    itertools.product(
        ["never", "first_sign_in", "every_sign_in"], STATES, TENANTS, ["allowed", "admin_only"]
    )
)


def settings_policy(prompt: str, user_consent: str) -> Policy:
    return policy_from_data(
        {
            "version": 1,
            "defaults": {"prompt": "never"},
            "rules": [
                {
                    "name": "under-test",
                    "match": {"email_domain": ["contoso.com"]},
                    "prompt": prompt,
                    "user_consent": user_consent,
                    "authorization": {"type": "graph", "scopes": list(SCOPES)},
                }
            ],
        }
    )


@pytest.mark.parametrize(("prompt", "state", "tenant", "user_consent"), DECISION_CASES)
def test_decision_table(prompt: str, state: str, tenant: str, user_consent: str) -> None:
    asks, codes = ASKS[prompt, state]
    action, gate_codes = GATE[tenant, user_consent] if asks else ("pass", [])
    loaded = settings_policy(prompt, user_consent)
    decision = evaluate(loaded, user(), STATES[state], TENANTS[tenant], NOW)
    assert decision.action == action
    assert list(decision.codes) == ["rule_matched", *codes, *gate_codes]
    assert (decision.rule, decision.rule_index) == ("under-test", 0)
    assert (decision.prompt, decision.user_consent) == (prompt, user_consent)
    assert decision.scopes == SCOPES


@pytest.mark.parametrize(
    ("state", "tenant", "action", "codes"),
    [
        (STATES["new"], TenantState(), "consent", ["no_rule_matched", "not_connected"]),
        (
            STATES["new"],
            TenantState(False, NOW + 60),
            "pass",
            ["no_rule_matched", "not_connected", "tenant_waiting_for_admin"],
        ),
        (
            STATES["declined"],
            TenantState(),
            "pass",
            ["no_rule_matched", "first_sign_in_already_prompted"],
        ),
        (
            STATES["needs_admin"],
            TenantState(True, NOW + 60),
            "consent",
            ["no_rule_matched", "admin_approval_required_before", "tenant_admin_consented"],
        ),
        (
            STATES["new"],
            TenantState(False, math.nan),
            "consent",
            ["no_rule_matched", "not_connected"],
        ),
    ],
)
def test_decisions_spelled_out(
    state: IntegrationState, tenant: TenantState, action: str, codes: list[str]
) -> None:
    decision = evaluate(policy("version: 1"), user(), state, tenant, NOW)
    assert decision.action == action
    assert list(decision.codes) == codes


def test_integration_state_rejects_unknown_status() -> None:
    with pytest.raises(ValueError, match="status must be one of none, connected"):
        IntegrationState("linked")  # type: ignore[arg-type]


# --- scope drift ---------------------------------------------------------------------------------

DRIFT = policy(
    """
    version: 1
    defaults:
      authorization: {type: graph, scopes: [Calendars.ReadWrite, Contacts.Read]}
    rules:
      - name: hybrid
        match: {groups: [OnPrem]}
        authorization: {type: ews, ews_url: "https://mail.contoso.com/EWS/Exchange.asmx"}
    """
)


def test_scope_drift_asks_for_the_full_set_and_names_what_is_missing() -> None:
    read_only = IntegrationState("connected", True, ("Calendars.Read", "Contacts.Read"))
    decision = evaluate(DRIFT, user(), read_only, TenantState(), NOW)
    assert decision.action == "consent"
    assert decision.scopes == ("Calendars.ReadWrite", "Contacts.Read")
    assert decision.reasons[1] == (
        "scopes_missing",
        "connected, but the grant lacks Calendars.ReadWrite",
    )
    # ReadWrite is a permission of its own: it does not stand in for Read, nor Read for it
    asked = IntegrationState("connected", True, read_only.granted_scopes, ("Calendars.ReadWrite",))
    assert evaluate(DRIFT, user(), asked, TenantState(), NOW).action == "pass"


def test_switching_to_ews_is_drift_too() -> None:
    graph_user = IntegrationState("connected", True, ("Calendars.ReadWrite", "Contacts.Read"))
    on_prem = user(groups=("OnPrem",))
    decision = evaluate(DRIFT, on_prem, graph_user, TenantState(), NOW)
    assert (decision.action, decision.rule) == ("consent", "hybrid")
    assert decision.scopes == ("https://mail.contoso.com/EWS.AccessAsUser.All",)
    ews_user = IntegrationState(
        "connected", True, ("https://MAIL.contoso.com/EWS.AccessAsUser.All",)
    )
    assert evaluate(DRIFT, on_prem, ews_user, TenantState(), NOW).codes == (
        "rule_matched",
        "already_connected",
    )


# --- explain -----------------------------------------------------------------------------------

EXPLAINED = policy(
    f"""
    version: 1
    rules:
      - name: hybrid
        match:
          email_domain: [onprem.contoso.com]
          tenant_id: ["{TENANT}"]
        authorization: {{type: ews, ews_url: "https://mail.contoso.com/EWS/Exchange.asmx"}}
      - name: sales
        match:
          email_domain: [contoso.com, "*.contoso.com"]
          groups: [Sales]
        prompt: every_sign_in
        authorization: {{type: graph, scopes: [Calendars.ReadWrite, Contacts.ReadWrite]}}
        app: sales
    """
)


def test_explain_lines() -> None:
    who = user_from_options("Alice@Contoso.com", TENANT, ["groups=Sales", "department=Finance"])
    state = IntegrationState("connected", True, ("Calendars.Read", "Contacts.Read"))
    tenant = TenantState(False, 1_900_000_000.0)
    assert explain(EXPLAINED, who, state, tenant, now=NOW).splitlines() == [
        "user: Alice@Contoso.com",
        f"  tenant_id: {TENANT}",
        "  groups: Sales",
        "  attributes.department: Finance",
        "integration: connected, prompted before, granted: Calendars.Read, Contacts.Read",
        "tenant: no admin consent, admin approval awaited until 2030-03-17 17:46:40 UTC",
        'rules[0] "hybrid": no match',
        "  email_domain [onprem.contoso.com]: no match (domain contoso.com)",
        f"  tenant_id [{TENANT}]: match (tenant {TENANT})",
        'rules[1] "sales": match',
        "  email_domain [contoso.com, *.contoso.com]: match (domain contoso.com)",
        "  groups [Sales]: match (user has Sales)",
        "decision: pass",
        '  rule: rules[1] "sales"',
        "  prompt: every_sign_in",
        "  authorization: graph",
        "  scopes: Calendars.ReadWrite Contacts.ReadWrite",
        "  user_consent: allowed",
        "  app: sales",
        "reasons:",
        '  rule_matched: rules[1] "sales" matched',
        "  scopes_missing: connected, but the grant lacks Calendars.ReadWrite, Contacts.ReadWrite",
        "  tenant_waiting_for_admin: an admin's approval is awaited for this tenant: "
        "the user is not asked until then",
    ]


def test_explain_defaults_for_a_bad_address() -> None:
    text = explain(EXPLAINED, user("a@onprem.contoso.com@evil.com"))
    assert "  email_domain [onprem.contoso.com]: no match " in text
    assert "'a@onprem.contoso.com@evil.com' is not a plain email address" in text
    assert "  rule: defaults\n" in text
    assert text.endswith(
        "reasons:\n"
        "  no_rule_matched: no rule matched; the defaults apply\n"
        "  not_connected: not connected yet; first_sign_in asks once"
    )


def test_explain_catch_all_and_ews() -> None:
    loaded = policy(
        """
        version: 1
        rules:
          - name: everyone
            authorization: {type: ews, ews_url: "https://mail.contoso.com/EWS/Exchange.asmx"}
        """
    )
    lines = explain(loaded, PolicyUser(None)).splitlines()
    assert lines[:5] == [
        "user: (no email)",
        "integration: none, not prompted before, granted: nothing",
        "tenant: no admin consent",
        'rules[0] "everyone": match',
        "  (no criteria: matches everyone)",
    ]
    assert "  authorization: ews (https://mail.contoso.com/EWS/Exchange.asmx)" in lines
    assert "  scopes: https://mail.contoso.com/EWS.AccessAsUser.All" in lines
    assert "  app: (the default app registration)" in lines


def test_explain_json() -> None:
    who = user("bob@eu.contoso.com", groups=("Sales",))
    data = explain_json(EXPLAINED, who, now=NOW)
    assert yaml.safe_load(yaml.safe_dump(data)) == data  # plain data, ready for --json
    assert [r["name"] for r in data["rules_tried"]] == ["hybrid", "sales"]
    assert data["rules_tried"][1]["criteria"][0] == {
        "criterion": "email_domain",
        "accepted": ["contoso.com", "*.contoso.com"],
        "matched": True,
        "found": "domain eu.contoso.com",
    }
    assert data["decision"] == {
        "action": "consent",
        "rule": "sales",
        "rule_index": 1,
        "prompt": "every_sign_in",
        "authorization": {"type": "graph", "scopes": ["Calendars.ReadWrite", "Contacts.ReadWrite"]},
        "user_consent": "allowed",
        "app": "sales",
        "scopes": ["Calendars.ReadWrite", "Contacts.ReadWrite"],
        "reasons": [
            {"code": "rule_matched", "text": 'rules[1] "sales" matched'},
            {
                "code": "not_connected",
                "text": "not connected yet; every_sign_in asks until connected",
            },
        ],
    }


# --- evaluation never raises --------------------------------------------------------------------

ALPHABET = "aA@.-_+'\"\\ \t\n\x00\u212a\u0441\uff0e\u3002\u200bé*[]:,()0123456789contoso"
FUZZ_POLICY = load_policy(POLICIES / "examples" / "read-write-for-sales.yaml")


def random_text(rng: random.Random, *pieces: str) -> str:
    parts = [rng.choice(pieces) if rng.random() < 0.5 else rng.choice(ALPHABET)]
    parts += [rng.choice(ALPHABET) for _ in range(rng.randrange(30))]
    if rng.random() < 0.5:
        parts.append(rng.choice(pieces))
    return "".join(parts)


def random_case(rng: random.Random) -> tuple[PolicyUser, IntegrationState, TenantState, float]:
    email = random_text(rng, "alice", "@contoso.com", "@eu.contoso.com", "@", ".")
    who = PolicyUser(
        email if rng.random() < 0.95 else None,
        rng.choice([None, TENANT, TENANT.upper(), random_text(rng, TENANT)]),
        tuple(rng.choice(["Sales", "sales", "", random_text(rng, "x")]) for _ in range(3)),
        {rng.choice(["groups", "department", ""]): (random_text(rng, "Sales"),)},
    )
    scopes = ("Calendars.Read", "calendars.readwrite", "Contacts.ReadWrite", "", "openid")
    state = IntegrationState(
        rng.choice(policy_module.STATUSES),
        rng.random() < 0.5,
        tuple(rng.sample(scopes, rng.randrange(len(scopes)))),
        tuple(rng.sample(scopes, rng.randrange(len(scopes)))),
    )
    until = rng.choice([None, NOW - 1, NOW + 1, math.inf, -math.inf, math.nan, 1e300])
    return who, state, TenantState(rng.random() < 0.3, until), NOW


def test_evaluate_and_explain_never_raise() -> None:
    rng = random.Random(20260401)
    for _ in range(3000):
        who, state, tenant, now = random_case(rng)
        decision = evaluate(FUZZ_POLICY, who, state, tenant, now)
        assert decision.action in ("pass", "consent", "admin_approval_notice")
        assert decision.reasons and decision.reasons[0].code in ("rule_matched", "no_rule_matched")
        assert explain(FUZZ_POLICY, who, state, tenant, now=now)


def test_a_parsed_domain_is_what_follows_the_only_at() -> None:
    rng = random.Random(7)
    for _ in range(5000):
        email = random_text(rng, "alice", "@contoso.com", "@", ".", "a.b")
        domain = email_domain(email)
        if domain is not None:
            assert email.isascii() and email.count("@") == 1
            assert email.lower().endswith("@" + domain)
            assert not any(c.isspace() or c in '"\\\x00' for c in email)

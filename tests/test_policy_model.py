"""The policy file's grammar: every error reported exactly, loading, warnings, app names."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.errors import ConfigError
from proxy.policy import check_apps, load_policy, policy_warnings

from .policy_cases import policy

EWS_PROBLEM = (
    "with type ews the permission is fixed (full mailbox access as the user, "
    "EWS.AccessAsUser.All); remove scopes"
)
KNOWN = (
    "User.Read, Calendars.Read, Calendars.ReadBasic, Calendars.ReadWrite, Contacts.Read, "
    "Contacts.ReadWrite, People.Read, MailboxSettings.Read"
)


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        policy(text)
    assert caught.value.source == "test.yaml"
    return caught.value.problems


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
            "rules[0].prompot: unknown key (did you mean 'prompt'?); allowed keys here: "
            "name, match, prompt, authorization, user_consent, app",
            "defualts: unknown key (did you mean 'defaults'?); "
            "allowed keys here: version, defaults, rules",
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
          - name: sales-again
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
        'rules[1] "sales-again": has the same match as rules[0] "sales", so it can never match',
        'rules[3] "everyone": matches everyone, so the rules after it can never match '
        '(rules[4] "late"); move it last',
        'rules[2] "plain": applies the same settings as the defaults: it only keeps the '
        "users it matches away from the rules after it",
        'rules[4] "late": applies the same settings as the defaults: it has no effect, remove it',
    ]


def test_duplicate_rule_names_are_an_error() -> None:
    text = """
        version: 1
        rules:
          - name: sales
            match: {groups: [Sales]}
          - name: other
            match: {groups: [Other]}
          - name: sales
            match: {groups: [Marketing]}
        """
    assert problems(text) == [
        "rules[2].name: 'sales' is already the name of rules[0]; names identify rules in "
        "explain output and metrics, make them unique"
    ]


def test_a_rule_whose_users_an_earlier_rule_takes_is_reported() -> None:
    loaded = policy(
        """
        version: 1
        rules:
          - name: sales
            match: {groups: [Sales, Marketing]}
            prompt: every_sign_in
          - name: sales-eu
            match: {groups: [Sales], attributes: {region: [EU]}}
            prompt: never
          - name: contoso
            match:
              email_domain: ["*.contoso.com"]
              tenant_id: [72f988bf-86f1-41af-91ab-2d7cd011db47]
            prompt: never
          - name: eu-contoso
            match:
              email_domain: [eu.contoso.com, "*.fr.contoso.com"]
              tenant_id: [72f988bf-86f1-41af-91ab-2d7cd011db47]
            prompt: every_sign_in
          - name: any-contoso
            match: {email_domain: [eu.contoso.com, fabrikam.com]}
            prompt: every_sign_in
          - name: staff
            match: {groups: [Staff, Sales]}
            prompt: never
        """
    )
    assert policy_warnings(loaded) == [
        'rules[1] "sales-eu": every user it matches is matched first by rules[0] "sales", '
        'so it can never match; move it above, or narrow rules[0] "sales"',
        'rules[3] "eu-contoso": every user it matches is matched first by rules[2] "contoso", '
        'so it can never match; move it above, or narrow rules[2] "contoso"',
    ]


@pytest.mark.parametrize(
    "value",
    [
        "Sales.*",
        "^Sales",
        "Sales$",
        "Sales|Marketing",
        "(Sales|Marketing)",
        "[SM]ales",
        "Sales*",
        "*Sales",
        r"Sales\d",
    ],
)
def test_a_value_that_looks_like_a_pattern_is_a_warning(value: str) -> None:
    loaded = policy(
        f"""
        version: 1
        rules:
          - name: sales
            match:
              groups: [Staff, '{value}']
              attributes: {{department: ['{value}']}}
            prompt: never
        """
    )
    how = (
        "looks like a pattern, but values are compared exactly and case-sensitively (no "
        "regular expressions, no wildcards): list each accepted value instead"
    )
    assert policy_warnings(loaded) == [
        f"rules[0].match.groups: {value!r} {how}",
        f"rules[0].match.attributes.department: {value!r} {how}",
    ]


@pytest.mark.parametrize("value", ["Sales", "Sales & Marketing", "R&D", "sales.eu", "C++ team"])
def test_plain_values_are_not_patterns(value: str) -> None:
    loaded = policy(
        f"""
        version: 1
        rules:
          - name: sales
            match: {{groups: ['{value}']}}
            prompt: never
        """
    )
    assert policy_warnings(loaded) == []


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

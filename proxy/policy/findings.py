"""What `consent-proxy check` says about a valid policy: problems against the proxy
config (an `app` that names no app registration) and warnings about rules that are
probably mistakes — Exchange Online over EWS, rules that can never match (after a
catch-all, or whose every user an earlier rule already takes), rules that change nothing,
and values that look like patterns although matching is exact.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from proxy.errors import ConfigError
from proxy.policy.model import (
    EXCHANGE_ONLINE_HOSTS,
    EXCHANGE_ONLINE_WARNING,
    EwsAuthorization,
    Match,
    Policy,
    Rule,
    load_policy,
)
from proxy.policy.values import DEFAULTS_RULE


def policy_warnings(policy: Policy) -> list[str]:
    """Findings that do not stop the policy from working but probably are mistakes."""
    return [
        *_exchange_online_warnings(policy),
        *_unreachable_warnings(policy),
        *_same_as_defaults_warnings(policy),
        *_pattern_warnings(policy),
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
            if _covers(earlier.match, rule.match):
                warnings.append(
                    f"{_label(i, rule)}: every user it matches is matched first by "
                    f"{_label(j, earlier)}, so it can never match; move it above, or narrow "
                    f"{_label(j, earlier)}"
                )
                break
    return warnings


def _covers(earlier: Match, later: Match) -> bool:
    """Whether every user `later` matches is matched by `earlier` too: each criterion of
    `earlier` is also in `later`, accepting no value `earlier` does not."""
    if earlier.email_domain is not None and not all(
        later.email_domain is not None and any(_domain_covers(p, d) for p in earlier.email_domain)
        for d in later.email_domain or ("",)
    ):
        return False
    pairs = [(earlier.tenant_id, later.tenant_id), (earlier.groups, later.groups)]
    later_attributes = later.attributes or {}
    pairs += [(v, later_attributes.get(k)) for k, v in (earlier.attributes or {}).items()]
    return all(
        mine is None or (theirs is not None and set(theirs) <= set(mine)) for mine, theirs in pairs
    )


def _domain_covers(pattern: str, other: str) -> bool:
    """`pattern` matches every address `other` (a domain or a *. pattern) matches."""
    if not pattern.startswith("*."):
        return other == pattern
    return other.removeprefix("*.").endswith(pattern[1:])


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


# A value with these is probably meant as a pattern: regular expression syntax or a glob.
_PATTERN_LIKE = re.compile(r"\S\|\S|\.\*|\.\+|^\^|\$$|\\[dswDSW.]|\[[^\]]*\]|\(.*\|.*\)|^\*|\*$")


def _pattern_warnings(policy: Policy) -> list[str]:
    warnings: list[str] = []
    for i, rule in enumerate(policy.rules):
        where = f"rules[{i}].match"
        values = [(f"{where}.groups", v) for v in rule.match.groups or ()]
        for name, accepted in (rule.match.attributes or {}).items():
            values += [(f"{where}.attributes.{name}", v) for v in accepted]
        warnings += [
            f"{path}: {value!r} looks like a pattern, but values are compared exactly and "
            "case-sensitively (no regular expressions, no wildcards): list each accepted "
            "value instead"
            for path, value in values
            if _PATTERN_LIKE.search(value)
        ]
    return warnings

"""The prompt policy, pure: who is asked to connect Office 365, when, and for what.

`values` parses strictly what admins and users write; `model` is the policy file's
grammar (a pydantic model) and its loading; `findings` the checks beyond validity; `matching` finds
the rule for a user; `evaluate` turns that rule and the state of the user's integration
and tenant into a decision with machine-readable reasons; `explain` shows that decision,
as text and JSON; `file` keeps the policy in force, reloaded when its file changes. The
only I/O is reading the policy file, and the only project imports are `proxy.config`
(the YAML loader) and `proxy.errors`: the caller says how a reload is counted.
"""

from proxy.policy.evaluate import STATUSES as STATUSES
from proxy.policy.evaluate import Decision, IntegrationState, Reason, TenantState, evaluate
from proxy.policy.explain import explain, explain_json
from proxy.policy.findings import check_apps, load_checked_policy, policy_warnings
from proxy.policy.matching import (
    CriterionCheck,
    PolicyUser,
    RuleCheck,
    check_rules,
    user_from_options,
)
from proxy.policy.model import (
    Defaults,
    EwsAuthorization,
    GraphAuthorization,
    Match,
    Policy,
    Rule,
    RuleSettings,
    load_policy,
    policy_from_data,
)
from proxy.policy.values import DEFAULTS_RULE, GRAPH_SCOPES, email_domain

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
    "load_checked_policy",
    "load_policy",
    "policy_from_data",
    "policy_warnings",
    "user_from_options",
]

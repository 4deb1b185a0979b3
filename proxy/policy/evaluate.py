"""What to do with a sign-in, and why.

`evaluate` is pure: the policy, who signed in, the state of their integration and of
their tenant, and the time go in; a `Decision` comes out, with an
action (``pass``, ``consent`` or ``admin_approval_notice``) and machine-readable reasons.
First the prompt mode says whether to ask: ``never`` never does; ``every_sign_in`` asks
until the user is connected with every scope the rule asks for; ``first_sign_in`` asks a
user who was never asked, and never again after a decline or a failure (a consent page
left unanswered is no answer: the user is still "not yet asked"). Both ask again when
the grant broke (``reconsent_required``) or when the last attempt needed an admin; a
connected user whose grant lacks scopes the rule now asks for is asked again for the
full set (incremental consent) by ``every_sign_in`` at each sign-in and by
``first_sign_in`` once, unless those scopes are in `prompted_scopes`.
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

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, NamedTuple, get_args

from proxy.policy.matching import PolicyUser, RuleCheck, check_rules
from proxy.policy.model import (
    EwsAuthorization,
    GraphAuthorization,
    Policy,
    Prompt,
    RuleSettings,
    UserConsent,
)
from proxy.policy.values import DEFAULTS_RULE, GRAPH_RESOURCE

Status = Literal[
    "none", "connected", "declined", "failed", "admin_approval_required", "reconsent_required"
]
Action = Literal["pass", "consent", "admin_approval_notice"]

STATUSES: tuple[Status, ...] = get_args(Status)


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
    return decide(policy, check_rules(policy, user), integration, tenant, now)


def decide(
    policy: Policy,
    tried: tuple[RuleCheck, ...],
    integration: IntegrationState,
    tenant: TenantState,
    now: float,
) -> Decision:
    """`evaluate`, given the rules already tried for the user (`explain` shows them too)."""
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

"""What an Entra ID error means for the proxy, and who can fix it.

Microsoft's advice, followed here: branch on `error` and on the AADSTS number, never on the
wording of `error_description`, which changes. At the redirect URI there is no
`error_codes`, so the number is read from the start of the description
("AADSTS65004: User declined..."); at the token endpoint `error_codes` is authoritative.

An `ErrorClass` is safe to log: it keeps the kind, the number, a sanitised `error` and
the trace/correlation ids Microsoft support asks for, and nothing else (no description,
which may echo user input, and never a token). `MicrosoftError` is the exception that
carries one, in the project's one hierarchy.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from proxy.errors import ConsentProxyError

__all__ = [
    "ErrorClass",
    "ErrorKind",
    "MicrosoftError",
    "aadsts_number",
    "classify",
    "from_response",
]


class ErrorKind(StrEnum):
    """What the proxy does next; each member says who can fix it."""

    DECLINED = "declined"  # the user said no: do not ask again right away
    ADMIN_APPROVAL_REQUIRED = "admin_approval_required"  # an admin must consent for the tenant
    CONSENT_REQUIRED = "consent_required"  # prompt=none found no consent: show the consent page
    RECONSENT_REQUIRED = "reconsent_required"  # the stored grant is dead: connect again
    USER_ACTION = "user_action"  # MFA and the like: the user must sign in interactively
    BLOCKED = "blocked"  # a tenant policy keeps this user out (Conditional Access, assignment)
    CONFIG = "config"  # the app registration or the proxy's config is wrong: ops must fix it
    REPLAY = "replay"  # a code redeemed twice: nobody can fix it, nothing to do
    BAD_CALLBACK = "bad_callback"  # the callback does not answer this flow (state, nonce)
    TRANSIENT = "transient"  # Microsoft or the network failed: retry later
    UNKNOWN = "unknown"


_BY_CODE: Mapping[int, ErrorKind] = {
    65004: ErrorKind.DECLINED,
    90094: ErrorKind.ADMIN_APPROVAL_REQUIRED,
    90095: ErrorKind.ADMIN_APPROVAL_REQUIRED,
    900941: ErrorKind.ADMIN_APPROVAL_REQUIRED,
    900981: ErrorKind.ADMIN_APPROVAL_REQUIRED,
    # Per user, not per tenant: an admin must assign this user, other users are fine.
    50105: ErrorKind.BLOCKED,
    53003: ErrorKind.BLOCKED,
    50076: ErrorKind.USER_ACTION,
    50079: ErrorKind.USER_ACTION,
    700016: ErrorKind.CONFIG,
    70011: ErrorKind.CONFIG,
    50011: ErrorKind.CONFIG,
    7000215: ErrorKind.CONFIG,
    7000222: ErrorKind.CONFIG,
    90023: ErrorKind.CONFIG,  # an invalid prompt value
    28000: ErrorKind.CONFIG,  # one token request named scopes of two resources
    70008: ErrorKind.RECONSENT_REQUIRED,
    700082: ErrorKind.RECONSENT_REQUIRED,
    50173: ErrorKind.RECONSENT_REQUIRED,
    700084: ErrorKind.RECONSENT_REQUIRED,
    70043: ErrorKind.RECONSENT_REQUIRED,
    54005: ErrorKind.REPLAY,
    # Not in the table: the PKCE verifier does not fit the code, i.e. a code injected
    # into another flow.
    50148: ErrorKind.BAD_CALLBACK,
    501481: ErrorKind.BAD_CALLBACK,
}

# 65001 ("no consent yet") means different things depending on where it arrives.
_NO_CONSENT = 65001
_NO_CONSENT_BY_ERROR: Mapping[str, ErrorKind] = {
    "access_denied": ErrorKind.ADMIN_APPROVAL_REQUIRED,  # backed out of "Need admin approval"
    "invalid_grant": ErrorKind.RECONSENT_REQUIRED,  # consent revoked since the grant
}

# When the AADSTS number is missing or unknown, the OAuth error code still says something.
_BY_ERROR: Mapping[str, ErrorKind] = {
    "access_denied": ErrorKind.DECLINED,
    "consent_required": ErrorKind.CONSENT_REQUIRED,
    "interaction_required": ErrorKind.USER_ACTION,
    "login_required": ErrorKind.USER_ACTION,
    "invalid_grant": ErrorKind.RECONSENT_REQUIRED,
    "invalid_client": ErrorKind.CONFIG,
    "unauthorized_client": ErrorKind.CONFIG,
    "invalid_scope": ErrorKind.CONFIG,
    "invalid_request": ErrorKind.CONFIG,
    "unsupported_response_type": ErrorKind.CONFIG,
    "unsupported_grant_type": ErrorKind.CONFIG,
    "temporarily_unavailable": ErrorKind.TRANSIENT,
    "server_error": ErrorKind.TRANSIENT,
}

_AADSTS = re.compile(r"\s*AADSTS(\d{1,9})(?!\w)")
_ERROR_TOKEN = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_TRACE_ID = re.compile(r"[0-9A-Fa-f-]{8,64}")


@dataclass(frozen=True, slots=True)
class ErrorClass:
    """A classified Entra ID (or network) error, safe to log and to show."""

    kind: ErrorKind
    code: int | None = None
    error: str | None = None
    trace_id: str | None = None
    correlation_id: str | None = None

    @property
    def reference(self) -> str:
        """What a page may show and support can search for: "AADSTS65004", else the error."""
        return f"AADSTS{self.code}" if self.code is not None else (self.error or self.kind)

    def describe(self) -> str:
        """One log line: kind, error, number, correlation id."""
        parts = [p for p in (self.error, f"AADSTS{self.code}" if self.code else None) if p]
        if self.correlation_id:
            parts.append(f"correlation_id={self.correlation_id}")
        return f"{self.kind}" + (f" ({', '.join(parts)})" if parts else "")

    def __str__(self) -> str:
        return self.describe()


class MicrosoftError(ConsentProxyError):
    """Microsoft (or the way to it) did not give what was asked; `error` says why."""

    code = "microsoft_error"
    status = 502
    title = "Microsoft could not complete the request"

    def __init__(self, error: ErrorClass) -> None:
        super().__init__(error.describe())
        self.error = error

    @classmethod
    def of(cls, kind: ErrorKind, error: str) -> MicrosoftError:
        return cls(ErrorClass(kind, error=error))


def aadsts_number(description: object) -> int | None:
    """The AADSTS number a description starts with ("AADSTS65004: ..."), or None."""
    if not isinstance(description, str):
        return None
    match = _AADSTS.match(description)
    return int(match.group(1)) if match else None


def classify(
    error: str | None,
    description: str | None,
    error_codes: list[int] | None,
    *,
    trace_id: str | None = None,
    correlation_id: str | None = None,
) -> ErrorClass:
    """Classify an error from the redirect URI (no `error_codes`: the number is read from
    the description) or from the token endpoint (`error_codes` preferred)."""
    codes = [c for c in error_codes or () if isinstance(c, int) and not isinstance(c, bool)]
    if not codes:
        number = aadsts_number(description)
        codes = [number] if number is not None else []
    error = _clean(error, _ERROR_TOKEN)
    # On the redirect URI Microsoft sends the ids only inside the description
    # ("...\r\nTrace ID: ...\r\nCorrelation ID: ...\r\nTimestamp: ..."): support needs them.
    trace_id = trace_id or _labelled(description, "Trace ID")
    correlation_id = correlation_id or _labelled(description, "Correlation ID")
    code = next((c for c in codes if c in _BY_CODE or c == _NO_CONSENT), None)
    return ErrorClass(
        kind=_kind(error, code),
        code=code if code is not None else (codes[0] if codes else None),
        error=error,
        trace_id=_clean(trace_id, _TRACE_ID),
        correlation_id=_clean(correlation_id, _TRACE_ID),
    )


def from_response(payload: Mapping[str, object]) -> ErrorClass:
    """Classify an error answer as msal returns it (the token endpoint's JSON, or the
    redirect's `error`/`error_description`), whatever the types of its members."""
    codes = payload.get("error_codes")
    return classify(
        _text(payload.get("error")),
        _text(payload.get("error_description")),
        [c for c in codes if isinstance(c, int)] if isinstance(codes, list) else None,
        trace_id=_text(payload.get("trace_id")),
        correlation_id=_text(payload.get("correlation_id")),
    )


def _kind(error: str | None, code: int | None) -> ErrorKind:
    if code == _NO_CONSENT:
        return _NO_CONSENT_BY_ERROR.get(error or "", ErrorKind.CONSENT_REQUIRED)
    if code is not None:
        return _BY_CODE[code]
    return _BY_ERROR.get(error or "", ErrorKind.UNKNOWN)


def _labelled(description: str | None, label: str) -> str | None:
    if not description:
        return None
    found = re.search(rf"{label}:\s*([0-9A-Fa-f-]{{8,64}})", description[:2000])
    return found.group(1) if found else None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _clean(value: str | None, allowed: re.Pattern[str]) -> str | None:
    """The value when it has the expected shape; None for anything a caller could have
    stuffed into a query string (it will be logged)."""
    return value if value is not None and allowed.fullmatch(value) else None

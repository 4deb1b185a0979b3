"""The troubleshooting table: for an AADSTS number (or, without one, the error's class),
what the admin does. The README's table says the same for people; a test keeps them
together. `status` and the ops overview show these next to each failure."""

from __future__ import annotations

from collections.abc import Mapping

from proxy.microsoft.errors import ErrorKind

_ADMIN_CONSENT = (
    "consent for the organization (the button on the proxy's page, or Entra > Enterprise "
    "applications > Permissions > Grant admin consent), or allow user consent"
)
_NOTHING_RECONSENT = "nothing: the user is reconsent_required and is asked per the policy"

ACTION_BY_CODE: Mapping[int, str] = {
    **dict.fromkeys((65001, 90094, 90095, 900941, 900981), _ADMIN_CONSENT),
    65004: "nothing: they can connect later on the connection page",
    50011: "register <public_url>/.consent-proxy/callback exactly, type Web",
    700016: "check client_id and tenant; a single-tenant app cannot serve other tenants",
    70011: "fix the policy's scopes (consent-proxy check), or the EWS resource registration",
    **dict.fromkeys(
        (7000215, 7000222),
        "rotate the secret (or use a certificate) and update microsoft_apps",
    ),
    50105: 'assign the user or group in Entra, or turn off "assignment required"',
    53003: "review the Conditional Access policy that blocks the app",
    **dict.fromkeys((50076, 50079), "nothing: the user completes MFA on Microsoft's page"),
    **dict.fromkeys((70008, 700082, 50173, 700084, 70043), _NOTHING_RECONSENT),
    54005: "nothing: a replayed callback, refused",
}

ACTION_BY_KIND: Mapping[str, str] = {
    ErrorKind.DECLINED: ACTION_BY_CODE[65004],
    ErrorKind.ADMIN_APPROVAL_REQUIRED: _ADMIN_CONSENT,
    ErrorKind.CONSENT_REQUIRED: "nothing: the user is shown Microsoft's consent page",
    ErrorKind.RECONSENT_REQUIRED: _NOTHING_RECONSENT,
    ErrorKind.USER_ACTION: ACTION_BY_CODE[50076],
    ErrorKind.BLOCKED: "check the user's assignment and Conditional Access in Entra",
    ErrorKind.CONFIG: "fix the app registration or microsoft_apps (the ERROR log line has "
    "Microsoft's correlation id)",
    ErrorKind.REPLAY: ACTION_BY_CODE[54005],
    ErrorKind.BAD_CALLBACK: "nothing: a callback that belongs to no flow, refused",
    ErrorKind.TRANSIENT: "nothing: Microsoft or the network failed; it is retried",
    ErrorKind.UNKNOWN: "look up the code in Microsoft's AADSTS list; report it if it repeats",
}


def what_to_do(code: int | None, kind: str | None) -> str:
    """The admin's action for a failure: by its AADSTS number, else by its class."""
    if code is not None and code in ACTION_BY_CODE:
        return ACTION_BY_CODE[code]
    return ACTION_BY_KIND.get(kind or "", ACTION_BY_KIND[ErrorKind.UNKNOWN])

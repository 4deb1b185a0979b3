"""Microsoft's refusals: the AADSTS table, and a refusal as Entra answers one: JSON from
the token endpoint, or `error` fields on the redirect URI (its error page is in pages)."""

from __future__ import annotations

import collections
import datetime as dt
import time
import uuid

from starlette.requests import Request
from starlette.responses import JSONResponse

# Token answers are never cached, as Entra's are not.
NO_STORE = {"cache-control": "no-store", "pragma": "no-cache"}

# AADSTS number -> (OAuth error, message). `{name}` fields are filled from the request;
# the wording is Microsoft's (as far as it is stable), for realism only.
REFUSALS: dict[int, tuple[str, str]] = {
    28000: (
        "invalid_request",
        "Provided value for the input parameter scope is not valid because it contains more "
        "than one resource.",
    ),
    50011: (
        "invalid_request",
        "The redirect URI '{redirect_uri}' specified in the request does not match the "
        "redirect URIs configured for the application '{client_id}'.",
    ),
    50020: (
        "invalid_request",
        "User account '{user}' from identity provider does not exist in tenant '{tenant}' "
        "and cannot access the application.",
    ),
    50058: (
        "login_required",
        "A silent sign-in request was sent but no user is signed in.",
    ),
    50076: (
        "invalid_grant",
        "Due to a configuration change made by your administrator, or because you moved to a "
        "new location, you must use multi-factor authentication to access the resource.",
    ),
    50148: (
        "invalid_grant",
        "The code_verifier does not match the code_challenge supplied in the authorization "
        "request for PKCE.",
    ),
    50173: (
        "invalid_grant",
        "The provided grant has expired due to it being revoked, a fresh auth token is "
        "needed. The user might have changed or reset their password.",
    ),
    53003: (
        "invalid_grant",
        "Access has been blocked by Conditional Access policies. The access policy does not "
        "allow token issuance.",
    ),
    54005: (
        "invalid_grant",
        "OAuth2 Authorization code was already redeemed, please retry with a new valid code "
        "or use an existing refresh token.",
    ),
    65001: (
        "invalid_grant",
        "The user or administrator has not consented to use the application with ID "
        "'{client_id}' named '{app}'. Send an interactive authorization request for this "
        "user and resource.",
    ),
    65004: ("access_denied", "User declined to consent to access the app."),
    70003: ("unsupported_grant_type", "The app requested an unsupported grant type."),
    70005: ("unsupported_response_type", "The response_type is not enabled for the app."),
    70008: (
        "invalid_grant",
        "The provided authorization code or refresh token has expired due to inactivity. "
        "Send a new interactive authorization request for this user and resource.",
    ),
    70011: (
        "invalid_scope",
        "The provided value for the input parameter 'scope' is not valid. The scope {scope} "
        "is not valid.",
    ),
    90002: ("invalid_tenant", "Tenant '{tenant}' not found."),
    90023: ("invalid_request", "Invalid prompt value: '{prompt}'."),
    90033: ("temporarily_unavailable", "A transient error has occurred. Please try again."),
    90094: (
        "access_denied",
        "An administrator of {tenant} has set a policy that prevents you from granting {app} "
        "the permissions it is requesting. Contact an administrator of {tenant}, who can "
        "grant permissions to this app on your behalf.",
    ),
    90100: ("invalid_request", "The request is malformed or too large."),
    700016: (
        "unauthorized_client",
        "Application with identifier '{client_id}' was not found in the directory '{tenant}'.",
    ),
    700021: (
        "invalid_client",
        "Client assertion application identifier or audience doesn't match the request.",
    ),
    700024: ("invalid_client", "Client assertion is not within its valid time range."),
    700027: ("invalid_client", "Client assertion failed signature validation."),
    900144: ("invalid_request", "The request body must contain the following parameter: 'scope'."),
    7000215: (
        "invalid_client",
        "Invalid client secret provided. Ensure the secret being sent in the request is the "
        "client secret value, not the client secret ID, for a secret added to app "
        "'{client_id}'.",
    ),
    7000218: (
        "invalid_client",
        "The request body must contain the following parameter: 'client_assertion' or "
        "'client_secret'.",
    ),
    7000222: (
        "invalid_client",
        "The provided client secret keys for app '{client_id}' are expired.",
    ),
    9002313: ("invalid_grant", "Invalid request. Request is malformed or invalid."),
    9002325: (
        "invalid_request",
        "Proof Key for Code Exchange is required: send code_challenge with "
        "code_challenge_method=S256.",
    ),
}


class Refusal(Exception):
    """A refusal in Microsoft's shape: `error` (the table's, or `error=`) and the message."""

    def __init__(
        self, code: int, status: int = 400, error: str | None = None, **facts: str
    ) -> None:
        default_error, template = REFUSALS[code]
        super().__init__(template)
        self.code, self.status = code, status
        self.error = error or default_error
        self.message = template.format_map(collections.defaultdict(str, facts))

    def fields(self) -> dict[str, str]:
        """The redirect URI's `error` and `error_description`."""
        return {"error": self.error, "error_description": description(self.code, self.message)}

    def json(self, request: Request, now: float, base: str) -> JSONResponse:
        """The token endpoint's (and discovery's) answer; `base`: where `error_uri` points."""
        correlation = correlation_id(request)
        trace = str(uuid.uuid4())
        stamp = timestamp(now)
        body = {
            "error": self.error,
            "error_description": description(self.code, self.message, trace, correlation, stamp),
            "error_codes": [self.code],
            "timestamp": stamp,
            "trace_id": trace,
            "correlation_id": correlation,
            "error_uri": f"{base}/error?code={self.code}",
        }
        return JSONResponse(body, status_code=self.status, headers=NO_STORE)


def declined() -> dict[str, str]:
    """What the redirect URI gets when the user presses Cancel."""
    return {**Refusal(65004).fields(), "error_subcode": "cancel"}


def timestamp(moment: float) -> str:
    return dt.datetime.fromtimestamp(moment, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def description(
    code: int,
    message: str,
    trace: str | None = None,
    correlation: str | None = None,
    stamp: str | None = None,
) -> str:
    """Entra's error_description: the AADSTS number first, then the ids and the time."""
    return (
        f"AADSTS{code}: {message}\r\nTrace ID: {trace or uuid.uuid4()}\r\n"
        f"Correlation ID: {correlation or uuid.uuid4()}\r\n"
        f"Timestamp: {stamp or timestamp(time.time())}"
    )


def correlation_id(request: Request) -> str:
    """Entra echoes the client's `client-request-id` (msal sends one) as correlation id."""
    try:
        return str(uuid.UUID(request.headers.get("client-request-id", "")))
    except ValueError:
        return str(uuid.uuid4())

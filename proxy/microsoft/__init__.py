"""Everything Entra ID: authorize and admin-consent URLs, code redemption, refresh (msal),
and what AADSTS errors mean.

The app registration itself is configured by `proxy.config.MicrosoftApp`.
"""

from proxy.microsoft.client import (
    DEFAULT_THREADS,
    DEFAULT_TIMEOUT,
    AdminConsent,
    MicrosoftClient,
    TokenResult,
    admin_consent_outcome,
)
from proxy.microsoft.errors import (
    ErrorClass,
    ErrorKind,
    MicrosoftError,
    aadsts_number,
    classify,
    from_response,
)

__all__ = [
    "DEFAULT_THREADS",
    "DEFAULT_TIMEOUT",
    "AdminConsent",
    "ErrorClass",
    "ErrorKind",
    "MicrosoftClient",
    "MicrosoftError",
    "TokenResult",
    "aadsts_number",
    "admin_consent_outcome",
    "classify",
    "from_response",
]

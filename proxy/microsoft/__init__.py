"""Everything Entra ID: authorize and admin-consent URLs, code redemption, refresh (msal),
and what AADSTS errors mean.

`client` runs msal in threads (refreshes in one pool, code redemptions in a bounded lane of
their own, `lanes`), `msal_http` is the HTTP session and shared cache msal is given,
`results` what the operations return, `errors` what AADSTS codes mean. The app registration
itself is configured by `proxy.config.MicrosoftApp`; the package imports nothing else of the
project but `proxy.errors`.
"""

from proxy.microsoft.client import DEFAULT_THREADS, DEFAULT_TIMEOUT, MicrosoftClient
from proxy.microsoft.errors import (
    ErrorClass,
    ErrorKind,
    MicrosoftError,
    aadsts_number,
    classify,
    from_response,
)
from proxy.microsoft.results import AdminConsent, TokenResult, admin_consent_outcome

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

"""A Microsoft identity platform stand-in: what msal and a browser see of
login.microsoftonline.com (and a tiny Graph), in one Starlette app with in-memory tenants,
accounts, app registrations and consent grants, for `consent-proxy demo` and the tests.
`standin` holds the facade, `state` its memory and knobs, `directory` the demo tenants,
accounts (the demo users of `proxy.demo.users`) and app; one module per endpoint family
(`discovery`, `authorize` and `admin_consent` on their shared `interaction`, `token` with
`clients`, `graph`), with `scopes`, `refusals` (AADSTS errors) and `pages`. Like all of
`proxy.demo`, it may import anything; nothing outside `proxy.demo` and the tests imports it.
"""

from proxy.demo.microsoft.directory import (
    CONTOSO,
    DEMO_APP_ID,
    DEMO_APP_SECRET,
    DEMO_TENANTS,
    DEMO_USERS,
    FABRIKAM,
    HYBRID,
    AppRegistration,
    MicrosoftUser,
    Tenant,
    demo_app,
)
from proxy.demo.microsoft.scopes import EXCHANGE_ONLINE, GRAPH
from proxy.demo.microsoft.standin import MicrosoftStandIn

__all__ = [
    "CONTOSO",
    "DEMO_APP_ID",
    "DEMO_APP_SECRET",
    "DEMO_TENANTS",
    "DEMO_USERS",
    "EXCHANGE_ONLINE",
    "FABRIKAM",
    "GRAPH",
    "HYBRID",
    "AppRegistration",
    "MicrosoftStandIn",
    "MicrosoftUser",
    "Tenant",
    "demo_app",
]
